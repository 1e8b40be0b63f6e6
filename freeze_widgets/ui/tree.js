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
//   ft 1 when "freeze up to here" is offered (the row has parameters; not the root)
// Delta row: [index, trainable, total, type, state].

const fmt = new Intl.NumberFormat("en-US");
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
  return [node.d === 0 ? node.t : node.n, node.d === 0 ? "model" : node.t];
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
  head.append(el_("span"), el_("span"), el_("span", "fw-label", "module (type)"));
  head.append(el_("span", "fw-row-counts", "trainable / total"), el_("span"));
  return head;
}

function render({ model, el }) {
  const store = createStore(model);
  el.classList.add("fw-tree");
  const crumb = el_("div", "fw-breadcrumb");
  const box = el_("div", "fw-tree-box");
  box.tabIndex = 0;
  box.setAttribute("role", "tree");
  box.setAttribute("aria-label", "Model modules: tick to freeze, U freezes up to the focused row");
  const head = makeHead();
  const top = el_("div", "fw-spacer");
  const bottom = el_("div", "fw-spacer");
  const note = el_("div", "fw-tree-note");
  el.append(crumb, box, note);

  let rows = new Map(); // node index -> row element (only rows in the DOM)
  let order = []; // node indices in display order (all of them, rendered or not)
  let position = new Map(); // node index -> position in `order`
  let focusIndex = 0;
  let win = [-1, -1];

  const filterSet = () => {
    const v = model.get("visible");
    return Array.isArray(v) ? new Set(v) : null;
  };

  // Rows in display order: depth-first, children only if expanded (or matched by the filter).
  const computeOrder = () => {
    const out = [];
    const filter = filterSet();
    const stack = store.nodes.length ? [0] : [];
    while (stack.length) {
      const i = stack.pop();
      const node = store.nodes[i];
      if (!node || (filter && !filter.has(i))) continue;
      out.push(i);
      if (filter || store.expanded.has(i)) {
        for (let k = node.c.length - 1; k >= 0; k--) stack.push(node.c[k]);
      }
    }
    order = out;
    position = new Map(out.map((i, pos) => [i, pos]));
  };

  const updateRow = (row, node) => {
    const state = node.st;
    const disabled = model.get("disabled");
    row.dataset.state = state;
    const check = row.querySelector(".fw-check");
    check.checked = state === "frozen";
    check.indeterminate = state === "partial";
    check.disabled = state === "empty" || disabled;
    check.setAttribute("aria-checked", state === "partial" ? "mixed" : String(state === "frozen"));
    const [, type] = label(node);
    row.querySelector(".fw-type").textContent = `(${type})`;
    row.querySelector(".fw-row-counts").textContent = node.tot
      ? `${fmt.format(node.tr)} / ${fmt.format(node.tot)}`
      : "\u2013";
    const upTo = row.querySelector(".fw-freeze-to");
    if (upTo) upTo.disabled = disabled;
  };

  const makeCaret = (i, node) => {
    const caret = el_("span", "fw-caret");
    if (!node.c.length) return caret;
    const open = store.expanded.has(i) || filterSet() !== null;
    caret.textContent = open ? "\u25be" : "\u25b8";
    caret.addEventListener("click", (e) => {
      e.stopPropagation();
      toggleExpand(i);
    });
    return caret;
  };

  const makeLabel = (node) => {
    const [text] = label(node);
    const labelBox = el_("span", "fw-label");
    labelBox.title = node.p ? `${node.p} (${label(node)[1]})` : `${node.t} (the whole model)`;
    labelBox.append(el_("span", "fw-name", text), " ", el_("span", "fw-type"));
    if (node.sh && node.sh.length) {
      const tied = el_("span", "fw-tied", "tied");
      tied.title = `Shares parameters with: ${node.sh.join(", ")} (counted once)`;
      labelBox.append(" ", tied);
    }
    return labelBox;
  };

  const makeFreezeTo = (node) => {
    if (!node.ft) return el_("span");
    const upTo = el_("button", "fw-freeze-to", "freeze up to here");
    upTo.type = "button";
    upTo.title = FREEZE_TO_TITLE;
    upTo.tabIndex = -1;
    upTo.addEventListener("click", (e) => {
      e.stopPropagation();
      freezeTo(node.i);
    });
    return upTo;
  };

  const makeRow = (i) => {
    const node = store.nodes[i];
    const row = el_("div", "fw-row");
    row.dataset.path = node.p;
    row.dataset.index = String(i);
    row.dataset.kind = node.k === "p" ? "parameter" : "module";
    row.setAttribute("role", "treeitem");
    row.setAttribute("aria-level", String(node.d + 1));
    if (node.c.length) {
      row.setAttribute("aria-expanded", String(store.expanded.has(i) || filterSet() !== null));
    }
    row.style.setProperty("--fw-depth", String(node.d));
    const check = el_("input", "fw-check");
    check.type = "checkbox";
    check.title = "Ticked = frozen";
    check.addEventListener("click", (e) => {
      e.stopPropagation();
      tick(i);
    });
    row.append(makeCaret(i, node), check, makeLabel(node), el_("span", "fw-row-counts"));
    row.append(makeFreezeTo(node));
    row.addEventListener("click", () => setFocus(i, false));
    updateRow(row, node);
    return row;
  };

  // Put the rows of the visible window (plus margins) in the DOM; reuse rows already there.
  const renderWindow = (force) => {
    const viewH = Math.max(box.clientHeight, MIN_VIEW_H);
    const scroll = Math.max(0, box.scrollTop - ROW_H); // the sticky column header is one row
    const first = Math.max(0, Math.floor(scroll / ROW_H) - MARGIN);
    const last = Math.min(order.length, Math.ceil((scroll + viewH) / ROW_H) + MARGIN);
    if (!force && first === win[0] && last === win[1]) return;
    win = [first, last];
    const next = new Map();
    const frag = document.createDocumentFragment();
    for (let pos = first; pos < last; pos++) {
      const i = order[pos];
      const row = (!force && rows.get(i)) || makeRow(i);
      next.set(i, row);
      frag.appendChild(row);
    }
    rows = next;
    top.style.height = `${first * ROW_H}px`;
    bottom.style.height = `${(order.length - last) * ROW_H}px`;
    box.replaceChildren(head, top, frag, bottom);
    markFocus();
    el.dataset.rendered = String(rows.size);
  };

  const draw = () => {
    computeOrder();
    if (!position.has(focusIndex)) focusIndex = 0;
    el.dataset.rows = String(order.length);
    renderWindow(true);
    showNote();
    showCrumb();
  };

  const markFocus = () => {
    for (const [i, row] of rows) row.classList.toggle("fw-focus", i === focusIndex);
  };

  const showCrumb = () => {
    const node = store.nodes[focusIndex];
    if (!node) {
      crumb.textContent = "";
      return;
    }
    const chain = [];
    for (let n = node; n; n = n.pa === null || n.pa === undefined ? null : store.nodes[n.pa]) {
      chain.unshift(n.d === 0 ? n.t : n.n);
    }
    crumb.textContent = `${chain.join(" \u203a ")} (${label(node)[1]})`;
    crumb.title = node.p || "the whole model";
    crumb.dataset.path = node.p;
  };

  const showNote = () => {
    note.textContent = model.get("note") || "";
    note.hidden = !note.textContent;
  };

  // Scroll so the row at `pos` is on screen (the column header covers the top row slot).
  const scrollToPos = (pos) => {
    const viewH = box.clientHeight || MIN_VIEW_H;
    const rowTop = (pos + 1) * ROW_H;
    if (rowTop - ROW_H < box.scrollTop) box.scrollTop = rowTop - ROW_H;
    else if (rowTop + ROW_H > box.scrollTop + viewH) box.scrollTop = rowTop + ROW_H - viewH;
  };

  const setFocus = (i, reveal = true) => {
    focusIndex = i;
    if (reveal && position.has(i)) scrollToPos(position.get(i));
    renderWindow(false);
    markFocus();
    showCrumb();
  };

  const toggleExpand = (i, open) => {
    const want = open === undefined ? !store.expanded.has(i) : open;
    if (want) store.expanded.add(i);
    else store.expanded.delete(i);
    draw();
  };

  const tick = (i) => {
    const node = store.nodes[i];
    if (!node || node.st === "empty" || model.get("disabled")) {
      const row = rows.get(i);
      if (row && node) updateRow(row, node); // undo the browser's own checkbox toggle
      return;
    }
    // Ticking a partial or trainable node freezes it; ticking a frozen one unfreezes it.
    model.send({ type: "tick", path: node.p, frozen: node.st !== "frozen" });
  };

  const freezeTo = (i) => {
    const node = store.nodes[i];
    if (node && node.ft && !model.get("disabled")) model.send({ type: "freeze_to", path: node.p });
  };

  // Expand the ancestors of `path`, focus it and scroll it into view; false if unknown/filtered.
  el.fwReveal = (path) => {
    const i = store.byPath.get(path);
    if (i === undefined) return false;
    for (let n = store.nodes[i]; n && n.pa !== null && n.pa !== undefined; ) {
      store.expanded.add(n.pa);
      n = store.nodes[n.pa];
    }
    draw();
    if (!position.has(i)) return false;
    setFocus(i, true);
    return true;
  };

  box.addEventListener("keydown", (e) => {
    const pos = position.get(focusIndex) ?? 0;
    const node = store.nodes[focusIndex];
    if (!node) return;
    if (e.key === "ArrowDown" && pos < order.length - 1) setFocus(order[pos + 1]);
    else if (e.key === "ArrowUp" && pos > 0) setFocus(order[pos - 1]);
    else if (e.key === "ArrowRight" && node.c.length) {
      if (!store.expanded.has(node.i)) toggleExpand(node.i, true);
      else setFocus(node.c[0]);
    } else if (e.key === "ArrowLeft") {
      if (node.c.length && store.expanded.has(node.i)) toggleExpand(node.i, false);
      else if (node.pa !== null && node.pa !== undefined) setFocus(node.pa);
    } else if (e.key === " " || e.key === "Enter") tick(node.i);
    else if (e.key === "u" || e.key === "U") freezeTo(node.i);
    else if (e.key === "Home") setFocus(order[0]);
    else if (e.key === "End") setFocus(order[order.length - 1]);
    else return;
    e.preventDefault();
  });

  let pending = false;
  const onScroll = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      renderWindow(false);
    });
  };
  box.addEventListener("scroll", onScroll, { passive: true });

  const listener = (event) => {
    if (event.kind === "full") {
      draw();
      return;
    }
    for (const i of event.changed) {
      const row = rows.get(i);
      if (row) updateRow(row, store.nodes[i]);
    }
    if (event.seq !== undefined) el.dataset.seq = String(event.seq);
  };
  store.listeners.add(listener);
  const redraw = () => draw();
  model.on("change:visible", redraw);
  model.on("change:disabled", redraw);
  model.on("change:note", showNote);
  draw();
  // The `tree` trait may be older than the deltas sent since (a page reload): ask for the data.
  model.send({ type: "sync" });

  return () => {
    store.dispose();
    store.listeners.delete(listener);
    box.removeEventListener("scroll", onScroll);
    model.off("change:visible", redraw);
    model.off("change:disabled", redraw);
    model.off("change:note", showNote);
    delete el.fwReveal;
  };
}

export default { render };
