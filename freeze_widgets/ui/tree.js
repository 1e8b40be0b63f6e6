// freeze_widgets module tree: ONE anywidget model holding the whole tree as data.
//
// Python owns the truth, row states included: this file only renders them. The full tree arrives
// once (the `tree` trait, or a "full" message after a page reload); after a tick Python sends a
// "delta" with only the nodes whose counts, state or type changed, and this view patches those
// rows in place.
//
// Rows are virtualised: every row has the same height (ROW_H), and only the rows on screen plus
// MARGIN above and below are in the DOM; two spacers stand for the rest. Expand-all on a model of
// 10,000 modules therefore builds about 60 elements, not 10,000. `el.fwReveal(path)` expands a
// row's ancestors and scrolls it into view (tests and scripts use it to reach a row by
// `.fw-row[data-path=...]`); `el.dataset.rows` is the number of rows in the list (rendered or not).
//
// Node record (compact keys keep the payload small):
//   i index, p path, n name, t type, k kind ("m" module | "p" parameter), d depth, pa parent,
//   c child indices, tot total, tr trainable, st state ("trainable" | "frozen" | "partial" |
//   "empty", decided by Python's Node.state), sh tied-with paths, s shape (parameters),
//   ft 1 when "freeze up to here" is offered (the row has parameters; not the root),
//   ad an adapter layer's label ("LoRA r=4 α=8 on Conv1D"), hd 1 for a folded row (an adapter's
//   empty bookkeeping child: never listed), os the module's output shape for an example batch
// Delta row: [index, trainable, total, type, state].

const fmt = new Intl.NumberFormat("en-US");
// The state said in a word, so nobody has to read "0 / 147,968" as "frozen".
const STATE_WORD = { trainable: "trains", frozen: "frozen", partial: "partly", empty: "" };
const UNITS = ["", "K", "M", "B", "T"];

// Same rule as Python's base.wording.format_count: 3 significant digits from 1,000 up.
function formatCount(n) {
  let value = n;
  let unit = 0;
  while (unit < UNITS.length - 1 && Math.abs(value) >= 999.5) {
    value /= 1000;
    unit += 1;
  }
  if (unit === 0) return String(n);
  const digits = Math.abs(value) >= 99.95 ? 0 : Math.abs(value) >= 9.995 ? 1 : 2;
  return `${value.toFixed(digits)}${UNITS[unit]}`;
}

// Exact below 100,000 (what fits the column), abbreviated above; the title keeps exact figures.
function countsText(node) {
  if (!node.tot) return "\u2013";
  const f = node.tot >= 100000 ? formatCount : (n) => fmt.format(n);
  return `${f(node.tr)} / ${f(node.tot)}`;
}
const ROW_H = 22; // px; must match .fw-row's height in tree.css
const MARGIN = 20; // rows kept in the DOM above and below the visible ones
// The box's max-height: the box may still be shorter (sized by the rows it held before).
const MIN_VIEW_H = 460;
const FREEZE_TO_TITLE =
  "Freeze everything before this row in module order, plus this row; the rest trains. " +
  "Keyboard: U on the focused row.";

function label(node) {
  if (node.k === "p") {
    const shape = node.s && node.s.length ? ` ${node.s.join("\u00d7")}` : "";
    return [node.n, `Parameter${shape}`];
  }
  return [node.d === 0 ? node.t : node.n, node.d === 0 ? "model" : node.ad || node.t];
}

// Each view keeps its own copy of the data, so several views of one model (the same explorer
// displayed twice) stay independent and a re-rendered view can ask for the current data.
function createStore(model) {
  const store = { nodes: [], byPath: new Map(), expanded: new Set([0]), listeners: new Set() };
  const emit = (event) => {
    for (const l of store.listeners) l(event);
  };
  const load = (nodes) => {
    store.nodes = nodes || [];
    store.byPath = new Map(store.nodes.map((n) => [n.p, n.i]));
    emit({ kind: "full" });
  };
  load(model.get("tree"));
  const onTree = () => load(model.get("tree"));
  const onMsg = (msg) => {
    if (msg.type === "full") {
      load(msg.nodes);
    } else if (msg.type === "delta") {
      const changed = [];
      for (const [i, tr, tot, t, st] of msg.u) {
        const node = store.nodes[i];
        if (!node) continue;
        Object.assign(node, { tr, tot, st });
        if (t) node.t = t;
        changed.push(i);
      }
      emit({ kind: "delta", changed, seq: msg.seq });
    } else if (msg.type === "expand") {
      store.expanded = msg.all
        ? new Set(store.nodes.filter((n) => n.c.length).map((n) => n.i))
        : new Set([0]);
      emit({ kind: "full" });
    }
  };
  model.on("change:tree", onTree);
  model.on("msg:custom", onMsg);
  store.dispose = () => {
    model.off("change:tree", onTree);
    model.off("msg:custom", onMsg);
  };
  return store;
}

function el_(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function makeHead() {
  const head = el_("div", "fw-tree-head");
  head.setAttribute("aria-hidden", "true");
  head.style.setProperty("--fw-depth", "0");
  const name = el_("span", "fw-label", "module (type)");
  name.title = "\u2192 the output shape of one sample, from a forward on the meta device";
  head.append(el_("span"), el_("span"), name);
  head.append(el_("span", "fw-row-counts", "trainable / total"), el_("span", "fw-state", "state"));
  head.append(el_("span"));
  return head;
}

function makeLabel(node) {
  const [text] = label(node);
  const labelBox = el_("span", "fw-label");
  labelBox.title = node.p ? `${node.p} (${label(node)[1]})` : `${node.t} (the whole model)`;
  labelBox.append(el_("span", "fw-name", text), " ", el_("span", "fw-type"));
  if (node.ad) labelBox.classList.add("fw-adapter");
  if (node.sh && node.sh.length) {
    const tied = el_("span", "fw-tied", "tied");
    tied.title = `Shares parameters with: ${node.sh.join(", ")} (counted once)`;
    labelBox.append(" ", tied);
  }
  return labelBox;
}

// One view of the tree: DOM building, the virtualised window, focus and keyboard.
class TreeView {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.store = createStore(model);
    this.rows = new Map(); // node index -> row element (only rows in the DOM)
    this.order = []; // node indices in display order (all of them, rendered or not)
    this.position = new Map(); // node index -> position in `order`
    this.focusIndex = 0;
    this.win = [-1, -1];
    this.pending = false;
    this.build();
  }

  build() {
    const el = this.el;
    el.classList.add("fw-tree");
    this.crumb = el_("div", "fw-breadcrumb");
    this.box = el_("div", "fw-tree-box");
    this.box.tabIndex = 0;
    this.box.setAttribute("role", "tree");
    this.box.setAttribute("aria-label", "Model modules: tick to freeze; U freezes up to a row");
    this.head = makeHead();
    this.top = el_("div", "fw-spacer");
    this.bottom = el_("div", "fw-spacer");
    this.note = el_("div", "fw-tree-note");
    el.append(this.crumb, this.box, this.note);
    this.onKey = (e) => this.key(e);
    this.onScroll = () => this.scrolled();
    this.onStore = (event) => this.storeChanged(event);
    this.redraw = () => this.draw();
    this.showNote = () => this.drawNote();
    this.box.addEventListener("keydown", this.onKey);
    this.box.addEventListener("scroll", this.onScroll, { passive: true });
    this.store.listeners.add(this.onStore);
    this.model.on("change:visible", this.redraw);
    this.model.on("change:disabled", this.redraw);
    this.model.on("change:highlight", this.redraw);
    this.model.on("change:note", this.showNote);
    // Expand the ancestors of `path`, focus it and scroll it into view; false if unknown/filtered.
    el.fwReveal = (path) => this.reveal(path);
  }

  dispose() {
    this.store.dispose();
    this.store.listeners.delete(this.onStore);
    this.box.removeEventListener("keydown", this.onKey);
    this.box.removeEventListener("scroll", this.onScroll);
    this.model.off("change:visible", this.redraw);
    this.model.off("change:disabled", this.redraw);
    this.model.off("change:highlight", this.redraw);
    this.model.off("change:note", this.showNote);
    delete this.el.fwReveal;
  }

  filterSet() {
    const v = this.model.get("visible");
    return Array.isArray(v) ? new Set(v) : null;
  }

  // Rows in display order: depth-first, children only if expanded (or matched by the filter).
  computeOrder() {
    const { nodes, expanded } = this.store;
    const out = [];
    const filter = this.filterSet();
    const stack = nodes.length ? [0] : [];
    while (stack.length) {
      const i = stack.pop();
      const node = nodes[i];
      if (!node || node.hd || (filter && !filter.has(i))) continue;
      out.push(i);
      if (filter || expanded.has(i)) {
        for (let k = node.c.length - 1; k >= 0; k--) stack.push(node.c[k]);
      }
    }
    this.order = out;
    this.position = new Map(out.map((i, pos) => [i, pos]));
  }

  updateRow(row, node) {
    const state = node.st;
    const disabled = this.model.get("disabled");
    row.dataset.state = state;
    row.classList.toggle("fw-preview", (this.model.get("highlight") || []).includes(node.i));
    const check = row.querySelector(".fw-check");
    check.checked = state === "frozen";
    check.indeterminate = state === "partial";
    check.disabled = state === "empty" || disabled;
    check.setAttribute("aria-checked", state === "partial" ? "mixed" : String(state === "frozen"));
    // The output shape (a meta-device forward of an example batch), as torchinfo shows it.
    // Per sample: the example batch's size (2) is made up, so it is left out.
    const shape = node.os && node.os.length > 1 ? ` \u2192 ${node.os.slice(1).join("\u00d7")}` : "";
    row.querySelector(".fw-type").textContent = `(${label(node)[1]})${shape}`;
    const counts = row.querySelector(".fw-row-counts");
    counts.textContent = countsText(node);
    counts.title = node.tot ? `${fmt.format(node.tr)} of ${fmt.format(node.tot)} trainable` : "";
    row.querySelector(".fw-state").textContent = STATE_WORD[state] ?? "";
    const upTo = row.querySelector(".fw-freeze-to");
    if (upTo) upTo.disabled = disabled;
  }

  isOpen(i) {
    return this.store.expanded.has(i) || this.filterSet() !== null;
  }

  makeCaret(i, node) {
    const caret = el_("span", "fw-caret");
    if (!node.c.length) return caret;
    caret.textContent = this.isOpen(i) ? "\u25be" : "\u25b8";
    caret.addEventListener("click", (e) => {
      e.stopPropagation();
      this.toggleExpand(i);
    });
    return caret;
  }

  makeFreezeTo(node) {
    if (!node.ft) return el_("span");
    const upTo = el_("button", "fw-freeze-to", "freeze to here");
    upTo.type = "button";
    upTo.title = FREEZE_TO_TITLE;
    upTo.tabIndex = -1;
    upTo.addEventListener("click", (e) => {
      e.stopPropagation();
      this.freezeTo(node.i);
    });
    return upTo;
  }

  makeRow(i) {
    const node = this.store.nodes[i];
    const row = el_("div", "fw-row");
    row.dataset.path = node.p;
    row.dataset.index = String(i);
    row.dataset.kind = node.k === "p" ? "parameter" : "module";
    row.setAttribute("role", "treeitem");
    row.setAttribute("aria-level", String(node.d + 1));
    if (node.c.length) row.setAttribute("aria-expanded", String(this.isOpen(i)));
    row.style.setProperty("--fw-depth", String(node.d));
    const check = el_("input", "fw-check");
    check.type = "checkbox";
    check.title = "Ticked = frozen";
    check.addEventListener("click", (e) => {
      e.stopPropagation();
      this.tick(i);
    });
    row.append(this.makeCaret(i, node), check, makeLabel(node), el_("span", "fw-row-counts"));
    row.append(el_("span", "fw-state"));
    row.append(this.makeFreezeTo(node));
    row.addEventListener("click", () => this.setFocus(i, false));
    this.updateRow(row, node);
    return row;
  }

  // Put the rows of the visible window (plus margins) in the DOM; reuse rows already there.
  renderWindow(force) {
    const box = this.box;
    const viewH = Math.max(box.clientHeight, MIN_VIEW_H);
    const scroll = Math.max(0, box.scrollTop - ROW_H); // the sticky column header is one row
    const first = Math.max(0, Math.floor(scroll / ROW_H) - MARGIN);
    const last = Math.min(this.order.length, Math.ceil((scroll + viewH) / ROW_H) + MARGIN);
    if (!force && first === this.win[0] && last === this.win[1]) return;
    this.win = [first, last];
    const next = new Map();
    const frag = document.createDocumentFragment();
    for (let pos = first; pos < last; pos++) {
      const i = this.order[pos];
      const row = (!force && this.rows.get(i)) || this.makeRow(i);
      next.set(i, row);
      frag.appendChild(row);
    }
    this.rows = next;
    this.top.style.height = `${first * ROW_H}px`;
    this.bottom.style.height = `${(this.order.length - last) * ROW_H}px`;
    box.replaceChildren(this.head, this.top, frag, this.bottom);
    this.markFocus();
    this.el.dataset.rendered = String(next.size);
  }

  draw() {
    this.computeOrder();
    if (!this.position.has(this.focusIndex)) this.focusIndex = 0;
    this.el.dataset.rows = String(this.order.length);
    this.renderWindow(true);
    this.drawNote();
    this.drawCrumb();
  }

  markFocus() {
    for (const [i, row] of this.rows) row.classList.toggle("fw-focus", i === this.focusIndex);
  }

  drawCrumb() {
    const { nodes } = this.store;
    const node = nodes[this.focusIndex];
    if (!node) {
      this.crumb.textContent = "";
      return;
    }
    const chain = [];
    for (let n = node; n; n = n.pa === null || n.pa === undefined ? null : nodes[n.pa]) {
      chain.unshift(n.d === 0 ? n.t : n.n);
    }
    this.crumb.textContent = `${chain.join(" \u203a ")} (${label(node)[1]})`;
    this.crumb.title = node.p || "the whole model";
    this.crumb.dataset.path = node.p;
  }

  drawNote() {
    this.note.textContent = this.model.get("note") || "";
    this.note.hidden = !this.note.textContent;
  }

  // Scroll so the row at `pos` is on screen (the column header covers the top row slot).
  scrollToPos(pos) {
    const box = this.box;
    const viewH = box.clientHeight || MIN_VIEW_H;
    const rowTop = (pos + 1) * ROW_H;
    if (rowTop - ROW_H < box.scrollTop) box.scrollTop = rowTop - ROW_H;
    else if (rowTop + ROW_H > box.scrollTop + viewH) box.scrollTop = rowTop + ROW_H - viewH;
  }

  setFocus(i, reveal = true) {
    this.focusIndex = i;
    if (reveal && this.position.has(i)) this.scrollToPos(this.position.get(i));
    this.renderWindow(false);
    this.markFocus();
    this.drawCrumb();
  }

  toggleExpand(i, open) {
    const { expanded } = this.store;
    const want = open === undefined ? !expanded.has(i) : open;
    if (want) expanded.add(i);
    else expanded.delete(i);
    this.draw();
  }

  tick(i) {
    const node = this.store.nodes[i];
    if (!node || node.st === "empty" || this.model.get("disabled")) {
      const row = this.rows.get(i);
      if (row && node) this.updateRow(row, node); // undo the browser's own checkbox toggle
      return;
    }
    // Ticking a partial or trainable node freezes it; ticking a frozen one unfreezes it.
    this.model.send({ type: "tick", path: node.p, frozen: node.st !== "frozen" });
  }

  freezeTo(i) {
    const node = this.store.nodes[i];
    if (node && node.ft && !this.model.get("disabled")) {
      this.model.send({ type: "freeze_to", path: node.p });
    }
  }

  reveal(path) {
    const { nodes, byPath, expanded } = this.store;
    const i = byPath.get(path);
    if (i === undefined) return false;
    for (let n = nodes[i]; n && n.pa !== null && n.pa !== undefined; n = nodes[n.pa]) {
      expanded.add(n.pa);
    }
    this.draw();
    if (!this.position.has(i)) return false;
    this.setFocus(i, true);
    return true;
  }

  key(e) {
    const { order } = this;
    const pos = this.position.get(this.focusIndex) ?? 0;
    const node = this.store.nodes[this.focusIndex];
    if (!node) return;
    const hasParent = node.pa !== null && node.pa !== undefined;
    if (e.key === "ArrowDown" && pos < order.length - 1) this.setFocus(order[pos + 1]);
    else if (e.key === "ArrowUp" && pos > 0) this.setFocus(order[pos - 1]);
    else if (e.key === "ArrowRight" && node.c.length) {
      if (!this.store.expanded.has(node.i)) this.toggleExpand(node.i, true);
      else this.setFocus(node.c[0]);
    } else if (e.key === "ArrowLeft") {
      if (node.c.length && this.store.expanded.has(node.i)) this.toggleExpand(node.i, false);
      else if (hasParent) this.setFocus(node.pa);
    } else if (e.key === " " || e.key === "Enter") this.tick(node.i);
    else if (e.key === "u" || e.key === "U") this.freezeTo(node.i);
    else if (e.key === "Home") this.setFocus(order[0]);
    else if (e.key === "End") this.setFocus(order[order.length - 1]);
    else return;
    e.preventDefault();
  }

  scrolled() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.renderWindow(false);
    });
  }

  storeChanged(event) {
    if (event.kind === "full") {
      this.draw();
      return;
    }
    for (const i of event.changed) {
      const row = this.rows.get(i);
      if (row) this.updateRow(row, this.store.nodes[i]);
    }
    if (event.seq !== undefined) this.el.dataset.seq = String(event.seq);
  }
}

function render({ model, el }) {
  const view = new TreeView(model, el);
  view.draw();
  // The `tree` trait may be older than the deltas sent since (a page reload): ask for the data.
  model.send({ type: "sync" });
  return () => view.dispose();
}

export default { render };
