// freeze_widgets module tree: ONE anywidget model holding the whole tree as data.
//
// Python owns the truth, row states included: this file only renders them. The full tree arrives
// once (the `tree` trait, or a "full" message after a page reload); after a tick Python sends a
// "delta" with only the nodes whose counts, state or type changed, and this view patches those
// rows in place. Collapsed rows are not in the DOM.
//
// Node record (compact keys keep the payload small):
//   i index, p path, n name, t type, k kind ("m" module | "p" parameter), d depth, pa parent,
//   c child indices, tot total, tr trainable, st state ("trainable" | "frozen" | "partial" |
//   "empty", decided by Python's Node.state), sh tied-with paths, s shape (parameters)
// Delta row: [index, trainable, total, type, state].

const fmt = new Intl.NumberFormat("en-US");

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
  const store = {
    nodes: [],
    expanded: new Set([0]),
    listeners: new Set(),
  };
  const emit = (event) => {
    for (const l of store.listeners) l(event);
  };
  const load = (nodes) => {
    store.nodes = nodes || [];
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
        node.tr = tr;
        node.tot = tot;
        node.st = st;
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

function render({ model, el }) {
  const store = createStore(model);
  el.classList.add("fw-tree");
  const box = document.createElement("div");
  box.className = "fw-tree-box";
  box.tabIndex = 0;
  box.setAttribute("role", "tree");
  box.setAttribute("aria-label", "Model modules: tick to freeze");
  el.appendChild(box);

  const rows = new Map(); // node index -> row element (only rows in the DOM)
  let focusIndex = 0;

  const visibleFilter = () => {
    const v = model.get("visible");
    return Array.isArray(v) ? new Set(v) : null;
  };

  // Rows in display order: depth-first, children only if expanded (or matched by the filter).
  const visibleRows = () => {
    const out = [];
    const filter = visibleFilter();
    const walk = (i) => {
      const node = store.nodes[i];
      if (!node) return;
      if (filter && !filter.has(i)) return;
      out.push(i);
      if (filter || store.expanded.has(i)) for (const c of node.c) walk(c);
    };
    if (store.nodes.length) walk(0);
    return out;
  };

  const updateRow = (row, node) => {
    const state = node.st;
    row.dataset.state = state;
    const check = row.querySelector(".fw-check");
    check.checked = state === "frozen";
    check.indeterminate = state === "partial";
    check.disabled = state === "empty" || model.get("disabled");
    check.setAttribute("aria-checked", state === "partial" ? "mixed" : String(state === "frozen"));
    const [, type] = label(node);
    row.querySelector(".fw-type").textContent = `(${type})`;
    row.querySelector(".fw-row-counts").textContent =
      node.tot ? `${fmt.format(node.tr)} / ${fmt.format(node.tot)}` : "\u2013";
  };

  const makeRow = (i) => {
    const node = store.nodes[i];
    const row = document.createElement("div");
    row.className = "fw-row";
    row.dataset.path = node.p;
    row.dataset.index = String(i);
    row.dataset.kind = node.k === "p" ? "parameter" : "module";
    row.setAttribute("role", "treeitem");
    row.style.setProperty("--fw-depth", String(node.d));

    const caret = document.createElement("span");
    caret.className = "fw-caret";
    if (node.c.length) {
      const open = store.expanded.has(i) || visibleFilter() !== null;
      caret.textContent = open ? "\u25be" : "\u25b8";
      row.setAttribute("aria-expanded", String(open));
      caret.addEventListener("click", (e) => {
        e.stopPropagation();
        toggleExpand(i);
      });
    }
    const check = document.createElement("input");
    check.type = "checkbox";
    check.className = "fw-check";
    check.title = "Ticked = frozen";
    check.addEventListener("click", (e) => {
      e.stopPropagation();
      tick(i);
    });
    const name = document.createElement("span");
    name.className = "fw-name";
    const [text] = label(node);
    name.textContent = text;
    const type = document.createElement("span");
    type.className = "fw-type";
    const labelBox = document.createElement("span");
    labelBox.className = "fw-label";
    labelBox.append(name, " ", type);
    if (node.sh && node.sh.length) {
      const tied = document.createElement("span");
      tied.className = "fw-tied";
      tied.textContent = "tied";
      tied.title = `Shares parameters with: ${node.sh.join(", ")} (counted once)`;
      labelBox.append(" ", tied);
    }
    const counts = document.createElement("span");
    counts.className = "fw-row-counts";
    const upTo = document.createElement("button");
    upTo.className = "fw-freeze-to";
    upTo.type = "button";
    upTo.textContent = "freeze up to here";
    upTo.title = "Freeze everything up to and including this row (in module order); train the rest";
    upTo.tabIndex = -1;
    upTo.addEventListener("click", (e) => {
      e.stopPropagation();
      model.send({ type: "freeze_to", path: node.p });
    });
    if (node.d === 0) upTo.hidden = true;
    row.append(caret, check, labelBox, counts, upTo);
    row.addEventListener("click", () => setFocus(i));
    updateRow(row, node);
    return row;
  };

  const draw = () => {
    rows.clear();
    const frag = document.createDocumentFragment();
    for (const i of visibleRows()) {
      const row = makeRow(i);
      rows.set(i, row);
      frag.appendChild(row);
    }
    box.replaceChildren(frag);
    if (!rows.has(focusIndex)) focusIndex = 0;
    markFocus();
    el.dataset.rows = String(rows.size);
  };

  const markFocus = () => {
    for (const [i, row] of rows) row.classList.toggle("fw-focus", i === focusIndex);
  };

  const setFocus = (i) => {
    focusIndex = i;
    markFocus();
    const row = rows.get(i);
    if (row && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
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
      draw();
      return;
    }
    // Ticking a partial or trainable node freezes it; ticking a frozen one unfreezes it.
    const frozen = node.st !== "frozen";
    model.send({ type: "tick", path: node.p, frozen });
  };

  box.addEventListener("keydown", (e) => {
    const order = [...rows.keys()];
    const pos = order.indexOf(focusIndex);
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
    else if (e.key === "Home") setFocus(order[0]);
    else if (e.key === "End") setFocus(order[order.length - 1]);
    else return;
    e.preventDefault();
  });

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
  draw();
  // The `tree` trait may be older than the deltas sent since (a page reload): ask for the data.
  model.send({ type: "sync" });

  return () => {
    store.dispose();
    store.listeners.delete(listener);
    model.off("change:visible", redraw);
    model.off("change:disabled", redraw);
  };
}

export default { render };
