// The graph view: netron's viewer inside an <iframe srcdoc>, fed over the widget's comm.
//
// No server, no port: netron's page, ES modules and operator metadata come from the kernel's
// installed netron package over this widget's comm (once per page; cached in `CACHE`), the model
// bytes too. Each module becomes a blob: URL with its './x.js' imports rewritten to the blob URLs
// of its dependencies (netron's static imports have no cycles), so nothing is fetched from
// anywhere. The host object below implements what netron's view.View asks of its host: serial
// mode when no worker can start (else netron's layout worker from a blob: URL), require() from
// the module map, asset() for operator metadata; there is no
// age check, no consent prompt and no telemetry (netron's browser.js is never loaded).

const CACHE = (globalThis.__fwNetronCache = globalThis.__fwNetronCache || new Map());

function cacheFor(version) {
  if (!CACHE.has(version)) {
    CACHE.set(version, { page: null, sources: new Map(), assets: new Map(), urls: new Map() });
  }
  return CACHE.get(version);
}

// One request/answer channel over the comm: answers carry the kind and key they answer.
function channel(model) {
  const waiting = new Map();
  const handler = (msg, buffers) => {
    const key = `${msg.type}:${msg.key || ""}`;
    const entry = waiting.get(key);
    if (entry) {
      waiting.delete(key);
      entry.resolve({ msg, buffers });
    }
  };
  model.on("msg:custom", handler);
  const ask = (type, key, extra = {}) => {
    const id = `${type}:${key || ""}`;
    if (!waiting.has(id)) {
      let resolve;
      const promise = new Promise((r) => (resolve = r));
      waiting.set(id, { promise, resolve });
      model.send({ type: `need-${type}`, key, ...extra });
    }
    return waiting.get(id).promise;
  };
  return { ask, close: () => model.off("msg:custom", handler) };
}

const STATIC_IMPORT = /(from\s+)'\.\/([\w-]+)\.js'/g;
const DYNAMIC_IMPORT = /\bimport\('\.\/([\w-]+)\.js'\)/g;

class Loader {
  constructor(cache, comm, frameWindow) {
    this.cache = cache;
    this.comm = comm;
    this.win = frameWindow;
    this.win.__fwImport = (id) => this.load(id);
  }

  async source(id) {
    if (!this.cache.sources.has(id)) {
      const { msg } = await this.comm.ask("module", id);
      if (msg.error) throw new Error(msg.error);
      this.cache.sources.set(id, msg.text);
    }
    return this.cache.sources.get(id);
  }

  // The blob: URL of module `id`, after those of its static dependencies.
  async url(id) {
    if (!this.cache.urls.has(id)) {
      const promise = (async () => {
        const text = await this.source(id);
        const deps = [...new Set([...text.matchAll(STATIC_IMPORT)].map((m) => m[2]))];
        const urls = new Map();
        for (const dep of deps) urls.set(dep, await this.url(dep));
        const code = text
          .replace(STATIC_IMPORT, (_, from, dep) => `${from}'${urls.get(dep)}'`)
          .replace(DYNAMIC_IMPORT, (_, dep) => `globalThis.__fwImport('${dep}')`);
        return URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
      })();
      this.cache.urls.set(id, promise);
      promise.catch(() => this.cache.urls.delete(id));
    }
    return this.cache.urls.get(id);
  }

  // Import in the frame's realm: each frame gets its own instances (netron keeps state in
  // module globals and document-level listeners: one viewer per document).
  // netron's layout worker (worker.js) as a module worker: its dagre import points at dagre's
  // blob URL (a worker has no __fwImport), so big graphs are laid out off the page's thread.
  async workerUrl() {
    if (!this.cache.worker) {
      this.cache.worker = (async () => {
        const dagre = await this.url("dagre");
        const code = (await this.source("worker")).replace(DYNAMIC_IMPORT, (_, dep) => {
          if (dep !== "dagre") throw new Error(`netron's worker imports '${dep}'`);
          return `import('${dagre}')`;
        });
        return URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
      })();
    }
    return this.cache.worker;
  }

  async load(id) {
    return this.win.__fwLoad(await this.url(id.replace(/^\.\//, "")));
  }

  async asset(name) {
    if (!this.cache.assets.has(name)) {
      const promise = this.comm.ask("asset", name).then(({ msg }) => {
        if (msg.error) throw new Error(msg.error);
        return msg.text;
      });
      this.cache.assets.set(name, promise);
      promise.catch(() => this.cache.assets.delete(name));
    }
    return this.cache.assets.get(name);
  }
}

// What netron's view.View calls on its host (compare netron's source/browser.js).
class Host {
  constructor(frame, loader, version, open, workerUrl) {
    this._workerUrl = workerUrl;
    this._window = frame.contentWindow;
    this._document = frame.contentDocument;
    this._loader = loader;
    this._version = version;
    this._open = open;
    this._environment = {
      name: "Netron", type: "Widget", version, date: new Date(), packaged: false,
      platform: /(Mac|iPhone|iPod|iPad)/i.test(navigator.platform) ? "darwin" : undefined,
      agent: "", repository: "https://github.com/lutzroeder/netron", menu: false,
      serial: !workerUrl,
    };
  }
  get window() { return this._window; }
  get document() { return this._document; }
  get version() { return this._version; }
  get type() { return "Widget"; }
  environment(name) { return this._environment[name]; }
  async view(view) { this._view = view; } // no age check, no consent, no telemetry
  async start() { await this._open(this._view); }
  async require(id) { return this._loader.load(id); }
  async asset(file) { return this._loader.asset(file); }
  worker() { return new this._window.Worker(this._workerUrl, { type: "module" }); }
  get() { return undefined; }
  set() {}
  delete() {}
  event() {}
  exception() {}
  update() {}
  async execute() {}
  async save(name, extension, defaultPath) { return `${defaultPath}.${extension}`; }
  async export(file, blob) {
    const a = this._document.createElement("a");
    a.download = file;
    a.href = URL.createObjectURL(blob);
    this._document.body.appendChild(a);
    a.click();
    a.remove();
    URL.revokeObjectURL(a.href);
  }
  openURL(url) { window.open(url, "_blank", "noopener"); }
  async message(text, alert, action) {
    const doc = this._document;
    const type = doc.body.getAttribute("class");
    doc.getElementById("message-text").innerText = text || "";
    const button = doc.getElementById("message-button");
    return new Promise((resolve) => {
      if (action) {
        button.style.removeProperty("display");
        button.innerText = action;
        button.onclick = () => { button.onclick = null; doc.body.setAttribute("class", type); resolve(0); };
      } else {
        button.style.display = "none";
        button.onclick = null;
      }
      if (alert) doc.body.setAttribute("class", "alert");
      else { doc.body.classList.add("notification"); doc.body.classList.remove("default"); }
    });
  }
}

// A model's bytes as netron's readers expect them: a context with a stream.
function modelContext(base, host, name, bytes) {
  return {
    identifier: name,
    name,
    stream: new base.BinaryStream(bytes),
    asset: (file) => host.asset(file),
    require: (id) => host.require(id),
    error: () => {},
    fetch: async (file) => {
      throw new Error(`'${file}' was not sent: this view shows the graph without its weights ` +
                      "(show_netron(path, weights=True) sends them)");
    },
  };
}

// ------------------------------------------------------------------ theme and frozen overlay

function jupyterDark(el) {
  const flag = document.body.dataset.jpThemeLight;
  if (flag === "true" || flag === "false") return flag === "false";
  const bg = getComputedStyle(el).getPropertyValue("--jp-layout-color0").trim();
  const m = bg.match(/^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})/i);
  if (!m) return false;
  const [r, g, b] = m.slice(1).map((h) => parseInt(h, 16));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b < 128;
}

// netron's own dark rules sit under (prefers-color-scheme: dark): switch them with JupyterLab's
// theme instead of the operating system's.
function applyTheme(frame, dark) {
  const doc = frame.contentDocument;
  if (!doc) return;
  doc.documentElement.classList.toggle("fw-dark", dark);
  for (const sheet of doc.styleSheets) {
    for (const rule of sheet.cssRules) {
      if (rule instanceof frame.contentWindow.CSSMediaRule) {
        if (rule.__fwDark === undefined) rule.__fwDark = /prefers-color-scheme:\s*dark/.test(rule.conditionText);
        if (rule.__fwDark) rule.media.mediaText = dark ? "all" : "not all";
      }
    }
  }
}

// Frozen: grey header (not trained) and a thick teal outline; netron's colours stay for the rest.
const FRAME_CSS = `
#menu-button { display: none !important; }
.fw-state-frozen .node-item-type path { fill: #4d4d4d !important; }
.fw-state-frozen .node-item-type text { fill: #ffffff !important; }
.fw-state-frozen .node-border { stroke: #00838f !important; stroke-width: 4px !important; }
.fw-state-partial .node-border { stroke: #00838f !important; stroke-width: 3px !important; stroke-dasharray: 6 3; }
html.fw-dark .fw-state-frozen .node-item-type path { fill: #c4c4c4 !important; }
html.fw-dark .fw-state-frozen .node-item-type text { fill: #111111 !important; }
html.fw-dark .fw-state-frozen .node-border, html.fw-dark .fw-state-partial .node-border { stroke: #4dd0e1 !important; }
`;

function markNodes(doc, overlay) {
  let marked = 0;
  for (const [name, info] of Object.entries(overlay.nodes || {})) {
    const el = doc.getElementById(`node-name-${name}`);
    if (!el) continue;
    el.dataset.fwModule = info.m;
    if (info.s) {
      el.classList.add(`fw-state-${info.s}`);
      marked += info.s === "frozen" ? 1 : 0;
    }
  }
  return marked;
}

function legend(el, overlay) {
  const c = overlay.counts || {};
  const w = overlay.weights || {};
  const fmt = (n) => Number(n || 0).toLocaleString("en-US");
  el.replaceChildren();
  if (!overlay.marked) {
    el.textContent = "No freeze recorded in this file (export it with freeze_widgets to see frozen weights).";
    return;
  }
  const item = (cls, text) => {
    const span = document.createElement("span");
    span.className = `fw-graph-key ${cls}`;
    const swatch = document.createElement("i");
    span.append(swatch, document.createTextNode(text));
    el.append(span);
  };
  item("fw-key-frozen", `frozen weights: ${fmt(c.frozen)} nodes, ${fmt(w.frozen)} weights`);
  item("fw-key-trainable", `trainable weights: ${fmt(c.trainable)} nodes, ${fmt(w.trainable)} weights`);
  if (c.partial) item("fw-key-partial", `mixed: ${fmt(c.partial)} nodes`);
  const approx = Object.values(overlay.nodes || {}).some((n) => n.a);
  if (approx) {
    const note = document.createElement("span");
    note.className = "fw-graph-note";
    note.textContent = "Conv nodes fused with a BatchNorm carry the BatchNorm's module name (approximate).";
    el.append(note);
  }
}

function describe(name, info) {
  if (!info) return `${name}: no module recorded for this node`;
  const where = info.m ? `${info.m}${info.t ? ` (${info.t})` : ""}` : "(model root)";
  const state = info.s ? `weights ${info.s}` : "no weights";
  const params = info.p && info.p.length ? `: ${info.p.join(", ")}` : "";
  const approx = info.a ? "; fused Conv+BatchNorm, module name approximate" : "";
  return `${name} \u2192 ${where}, ${state}${params}${approx}`;
}

// Inside an explorer (its export panel), focus the node's module in the explorer's tree: the
// deepest row the tree has (tree.js `el.fwReveal`). The module path is the exported model's,
// which is the explorer's model once export wrappers are stripped (graph/overlay.py).
function revealInTree(root, path) {
  const explorer = root.closest(".fw-explorer");
  const tree = explorer && explorer.querySelector(".fw-tree");
  if (!tree || typeof tree.fwReveal !== "function") return false;
  for (let p = path; p; p = p.includes(".") ? p.slice(0, p.lastIndexOf(".")) : "") {
    if (tree.fwReveal(p)) return true;
  }
  return false;
}

// ------------------------------------------------------------------------------- the view

function say(parts, text, kind = "error") {
  parts.message.textContent = text;
  parts.message.dataset.kind = kind;
  parts.message.hidden = !text;
}

function build(el, model) {
  const root = document.createElement("div");
  root.className = "fw-graph";
  const head = document.createElement("div");
  head.className = "fw-graph-legend";
  const message = document.createElement("div");
  message.className = "fw-graph-message";
  message.hidden = true;
  const frame = document.createElement("iframe");
  frame.className = "fw-graph-frame";
  frame.title = `Netron: ${model.get("name")}`;
  frame.style.height = `${model.get("height")}px`;
  const info = document.createElement("div");
  info.className = "fw-graph-info";
  const sent = document.createElement("div");
  sent.className = "fw-graph-sent";
  sent.textContent = model.get("summary");
  root.append(head, message, frame, info, sent);
  el.replaceChildren(root);
  return { root, head, message, frame, info, sent };
}

// The boot bundle: gzip'd JSON (netron's files are 7.5 MiB as text, about 1 MiB gzip'd).
async function unpack(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

async function boot(model, parts, comm, t0) {
  const version = model.get("version");
  const cache = cacheFor(version);
  const have = [...cache.sources.keys()];
  const { msg: answer, buffers: packed } = await comm.ask("boot", "", { have, page: cache.page !== null });
  if (answer.error) throw new Error(answer.error);
  const msg = await unpack(packed[0]);
  if (msg.page) cache.page = msg.page;
  for (const [id, text] of Object.entries(msg.modules || {})) cache.sources.set(id, text);
  for (const [name, text] of Object.entries(msg.assets || {})) {
    if (!cache.assets.has(name)) cache.assets.set(name, Promise.resolve(text));
  }
  const modelAnswer = comm.ask("model", "");
  const frame = parts.frame;
  await new Promise((resolve) => {
    frame.addEventListener("load", resolve, { once: true });
    frame.srcdoc = cache.page;
  });
  const style = frame.contentDocument.createElement("style");
  style.textContent = FRAME_CSS;
  frame.contentDocument.head.append(style);
  applyTheme(frame, jupyterDark(parts.root));
  const loader = new Loader(cache, comm, frame.contentWindow);
  const [viewModule, base] = await Promise.all([loader.load("view"), loader.load("base")]);
  // Without a worker (it failed to start), netron lays out in the page: slower, same graph.
  let workerUrl = await loader.workerUrl().catch(() => null);
  try {
    if (workerUrl) new frame.contentWindow.Worker(workerUrl, { type: "module" }).terminate();
  } catch {
    workerUrl = null; // e.g. a Content-Security-Policy without worker-src blob:
  }
  const { msg: meta, buffers } = await modelAnswer;
  if (meta.error) throw new Error(meta.error);
  // A Uint8Array of the frame's realm: netron's readers test `instanceof Uint8Array`.
  const Bytes = frame.contentWindow.Uint8Array;
  const bytes = new Bytes(buffers[0].buffer, buffers[0].byteOffset, buffers[0].byteLength);
  const result = { drawn: 0, error: null };
  const open = async (view) => {
    view.show("welcome spinner");
    try {
      if (!view.accept(meta.name, bytes.length)) {
        const ext = meta.name.includes(".") ? meta.name.slice(meta.name.lastIndexOf(".")) : meta.name;
        throw new Error(`netron does not read ${ext} files; show an exported model (.onnx, .pt2, ...)`);
      }
      const shown = await view.open(modelContext(base, host, meta.name, bytes));
      if (!shown) throw new Error("netron found no graph in this file");
      view.show(null);
    } catch (error) {
      result.error = `Netron cannot show ${meta.name}: ${error.message}`;
      view.show("welcome");
    }
  };
  const host = new Host(frame, loader, version, open, workerUrl);
  const view = new viewModule.View(host);
  await view.start();
  if (result.error) throw new Error(result.error);
  result.drawn = frame.contentDocument.querySelectorAll("#canvas g.node").length;
  result.ms = performance.now() - t0;
  return result;
}

function watch(model, parts) {
  const frame = parts.frame;
  const overlay = model.get("overlay") || {};
  legend(parts.head, overlay);
  const doc = frame.contentDocument;
  const remark = () => markNodes(doc, overlay);
  remark();
  // netron redraws on navigation and option changes: mark the new nodes too.
  const canvas = doc.getElementById("target");
  const observer = new MutationObserver(() => remark());
  if (canvas) observer.observe(canvas, { childList: true, subtree: false });
  doc.addEventListener("click", (event) => {
    const node = event.target.closest && event.target.closest("g.node[id^='node-name-']");
    if (!node) return;
    const name = node.id.slice("node-name-".length);
    const info = (overlay.nodes || {})[name];
    parts.info.textContent = describe(name, info);
    model.send({ type: "select", node: name, module: info ? info.m : "" });
    if (info && info.m) revealInTree(parts.root, info.m);
  }, true);
  const theme = () => {
    const dark = jupyterDark(parts.root);
    parts.root.classList.toggle("fw-dark", dark);
    applyTheme(frame, dark);
  };
  theme();
  const themeObserver = new MutationObserver(theme);
  themeObserver.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });
  return () => { observer.disconnect(); themeObserver.disconnect(); };
}

async function render({ model, el }) {
  const t0 = performance.now();
  const parts = build(el, model);
  parts.root.classList.toggle("fw-dark", jupyterDark(el));
  const problem = model.get("message");
  if (problem) {
    parts.frame.remove();
    say(parts, problem);
    return undefined;
  }
  const comm = channel(model);
  let stop = () => {};
  try {
    const result = await boot(model, parts, comm, t0);
    stop = watch(model, parts);
    parts.root.dataset.drawn = String(result.drawn);
    model.send({ type: "status", drawn: result.drawn, ms: result.ms });
  } catch (error) {
    say(parts, error.message || String(error));
    parts.frame.style.display = "none";
    parts.root.dataset.error = "1";
    model.send({ type: "status", drawn: 0, error: error.message || String(error) });
  }
  return () => { stop(); comm.close(); };
}

export default { render };
