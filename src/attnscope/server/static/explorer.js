/* attnscope explorer: plain JavaScript, canvas rendering, no dependencies, no network beyond its own server.
 *
 * Data sources: ServerSource (the attnscope server's /v1 API, maps fetched lazily per head) and
 * EmbeddedSource (a notebook / standalone page with the arrays inlined). Every string that comes from
 * the user or a tokenizer is put into the page with textContent or drawn on a canvas; never as HTML.
 */
(function (global) {
  "use strict";

  // The interpretation caveat, worded as attnscope.caveat.ATTENTION_CAVEAT (a test keeps the two equal).
  const CAVEAT = "Attention weights show where each head looked, not why the model predicted what it did: they are not by themselves an explanation of a prediction (Jain & Wallace 2019; Wiegreffe & Pinter 2019). Do not draw causal or fairness conclusions from attention alone, and do not use it for high-stakes decisions without other evidence (ablation, attribution with a completeness check, held-out behaviour).";

  // ------------------------------------------------------------------ binary container (see payload.py)
  let F16 = null;
  function f16table() {
    if (F16) return F16;
    F16 = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      F16[h] = e === 0 ? s * f * 5.960464477539063e-8 : e === 31 ? (f ? NaN : s * Infinity) : s * Math.pow(2, e - 15) * (1 + f / 1024);
    }
    return F16;
  }
  function toFloat32(arr) {
    if (arr instanceof Float32Array) return arr;
    if (arr instanceof Uint16Array) { const t = f16table(), out = new Float32Array(arr.length); for (let i = 0; i < arr.length; i++) out[i] = t[arr[i]]; return out; }
    if (arr instanceof Uint8Array) { const out = new Float32Array(arr.length); for (let i = 0; i < arr.length; i++) out[i] = arr[i] / 255; return out; }
    return Float32Array.from(arr);
  }
  function decodeContainer(buf) {
    const bytes = new Uint8Array(buf);
    if (bytes[0] !== 65 || bytes[1] !== 84 || bytes[2] !== 83 || bytes[3] !== 67) throw new Error("not an attnscope payload");
    const n = new DataView(buf).getUint32(4, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const base = 8 + n, arrays = {};
    for (const [name, m] of Object.entries(header.arrays)) {
      const off = base + m.offset, count = m.shape.reduce((a, b) => a * b, 1);
      const T = { uint8: Uint8Array, float16: Uint16Array, float32: Float32Array, int32: Int32Array }[m.dtype];
      arrays[name] = { data: new T(buf, off, count), shape: m.shape, dtype: m.dtype };
    }
    delete header.arrays;
    return { header, arrays };
  }
  function b64ToBuffer(s) {
    const bin = atob(s), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  // ------------------------------------------------------------------ data sources
  class ApiError extends Error {}
  class ServerSource {
    constructor(base) { this.base = base || ""; this.id = null; this.bytes = 0; this.live = true; }
    async _fetch(path, body, signal) {
      const init = body === undefined ? { signal } : {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal };
      return fetch(this.base + path, init);
    }
    async _json(path, body, signal) {
      const r = await this._fetch(path, body, signal);
      const j = await r.json().catch(() => ({ error: { message: r.statusText } }));
      if (!r.ok) throw new ApiError((j.error && j.error.message) || ("HTTP " + r.status));
      return j;
    }
    async _bin(path, body, signal) {
      const r = await this._fetch(path, body, signal);
      if (!r.ok) { const j = await r.json().catch(() => ({})); throw new ApiError((j.error && j.error.message) || ("HTTP " + r.status)); }
      const buf = await r.arrayBuffer();
      this.bytes += buf.byteLength;
      return decodeContainer(buf);
    }
    models() { return this._json("/v1/models"); }
    analyses() { return this._json("/v1/analyses"); }
    /** The methods a request schema accepts: the REST API's own list (its OpenAPI document), never a copy in this file. */
    async methodsOf(schema) {
      this._spec = this._spec || this._json("/openapi.json").catch((e) => { this._spec = null; throw e; });  // fetched once
      const spec = await this._spec;
      const p = (((spec.components || {}).schemas || {})[schema] || {}).properties || {};
      let items = (p.methods || {}).items || {};
      if (items.$ref) items = spec.components.schemas[items.$ref.split("/").pop()] || {};
      return items.enum || (p.methods && p.methods.default) || [];
    }
    explainMethods() { return this.methodsOf("ExplainRequest"); }
    generationMethods() { return this.methodsOf("GenerationAttributionRequest"); }
    /** The summary of a new trace; with `withOverview`, the model view's thumbnails come in the same binary answer
     * (computed in the same pass as the statistics), so the first view needs one request. */
    async trace(req, signal, withOverview = true) {
      if (!withOverview) { const s = await this._json("/v1/traces", req, signal); this.id = s.id; this.thumbs = {}; return s; }
      const r = await fetch(this.base + "/v1/traces", { method: "POST", signal, body: JSON.stringify({ ...req, overview: true }),
        headers: { "Content-Type": "application/json", Accept: "application/vnd.attnscope.arrays, application/json" } });
      if (!r.ok) { const j = await r.json().catch(() => ({})); throw new ApiError((j.error && j.error.message) || ("HTTP " + r.status)); }
      if (!(r.headers.get("content-type") || "").includes("vnd.attnscope.arrays")) { const s = await r.json(); this.id = s.id; this.thumbs = {}; return s; }
      const buf = await r.arrayBuffer();
      this.bytes += buf.byteLength;
      const { header, arrays } = decodeContainer(buf), thumbs = {};
      for (const [name, a] of Object.entries(arrays)) {
        const s = name.slice("overview/".length), st = header.streams[s];
        if (name.startsWith("overview/") && st) thumbs[s] = { layers: st.layers, heads: st.heads, thumbs: a.data, shape: a.shape };
      }
      this.id = header.id; this.thumbs = thumbs;
      return header;
    }
    async traceOnly(req, signal) { return this._json("/v1/traces", req, signal); }
    async generate(req) { const s = await this._json("/v1/generate", req); this.id = s.id; this.thumbs = {}; return s; }
    _q(o) { return Object.entries(o).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&"); }
    async overview(stream) {
      if (this.thumbs && this.thumbs[stream]) return this.thumbs[stream];  // came with the trace
      const { header, arrays } = await this._bin(`/v1/traces/${this.id}/overview?` + this._q({ stream }));
      return { layers: header.layers, heads: header.heads, thumbs: arrays.thumbs.data, shape: arrays.thumbs.shape };
    }
    async map(stream, layer, head) {
      const { arrays } = await this._bin(`/v1/traces/${this.id}/map?` + this._q({ stream, layer, head }));
      return { data: toFloat32(arrays.map.data), shape: arrays.map.shape };
    }
    async rollout(stream) {
      const { arrays } = await this._bin(`/v1/traces/${this.id}/rollout?` + this._q({ stream }));
      return { data: toFloat32(arrays.map.data), shape: arrays.map.shape };
    }
    async headRoles(stream) {
      const r = await this._json("/v1/analyses/head_roles", { trace_id: this.id, params: { stream } });
      return r.meta && r.meta.labels ? r : null;
    }
    traceFileUrl() { return this.id ? `${this.base}/v1/traces/${this.id}/safetensors` : null; }
    neuron(req) { return this._json("/v1/neuron", req); }
    async pooled(req, signal) {
      const { header, arrays } = await this._bin("/v1/pooled", req, signal);
      return { ...header, max: toFloat32(arrays.max.data), mean: toFloat32(arrays.mean.data), shape: arrays.max.shape };
    }
    explain(req) { return this._json("/v1/explain", req); }
    attributeGeneration(req) { return this._json("/v1/attribute-generation", req); }
    compare(req) { return this._json("/v1/compare", req); }
    async uploadTrace(file) {  // a saved .safetensors trace: the server reads it as a trace only (never unpickled)
      const r = await fetch(this.base + "/v1/traces/upload", { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file });
      const j = await r.json().catch(() => ({ error: { message: r.statusText } }));
      const msg = (j.error && j.error.message) || ("HTTP " + r.status);
      if (r.status === 413) throw new ApiError(`${file.name}: ${msg}; save a smaller trace (fewer layers or heads with AttentionTrace.sel, or a shorter text)`);
      if (!r.ok) throw new ApiError(`${file.name}: ${msg}`);
      return j;
    }
    ablate(req) { return this._json("/v1/ablate", req); }
    analysis(name, req) { return this._json("/v1/analyses/" + encodeURIComponent(name), req); }
  }

  class EmbeddedSource {
    /* data = {summary, blobs: {name: base64 container}} written by attnscope.render.notebook */
    constructor(data) { this.data = data; this.cache = {}; this.live = false; }
    _blob(name) {
      if (!(name in this.cache)) this.cache[name] = this.data.blobs[name] ? decodeContainer(b64ToBuffer(this.data.blobs[name])) : null;
      return this.cache[name];
    }
    async trace() { return this.data.summary; }
    async overview(stream) {
      const b = this._blob("overview/" + stream);
      return { layers: b.header.layers, heads: b.header.heads, thumbs: b.arrays.thumbs.data, shape: b.arrays.thumbs.shape };
    }
    async map(stream, layer, head) {
      const b = this._blob("maps/" + stream);
      if (!b) throw new ApiError("this page embeds only thumbnails (the trace is large); save a smaller trace or use `attnscope serve`");
      const s = this.data.summary.streams[stream], li = s.layers.indexOf(layer);
      const [L, H, nq, nk] = b.arrays.maps.shape, size = nq * nk;
      const conv = (hi) => toFloat32(b.arrays.maps.data.subarray((li * H + hi) * size, (li * H + hi + 1) * size));
      if (head === "mean") {
        const out = new Float32Array(size);
        for (let hi = 0; hi < H; hi++) { const m = conv(hi); for (let i = 0; i < size; i++) out[i] += m[i] / H; }
        return { data: out, shape: [nq, nk] };
      }
      return { data: conv(s.heads.indexOf(head)), shape: [nq, nk] };
    }
    async rollout(stream) {
      const b = this._blob("rollout/" + stream);
      if (!b) throw new ApiError("rollout is not available for this stream");
      return { data: toFloat32(b.arrays.map.data), shape: b.arrays.map.shape };
    }
    async headRoles(stream) { return (this.data.summary.head_roles || {})[stream] || null; }
    traceFileUrl() { return null; }
  }

  // ------------------------------------------------------------------ colour scales and drawing helpers
  // matplotlib's "Blues" (ColorBrewer), the sequential map of every static figure: white at 0, one hue rising.
  function ramp(stops) {
    const out = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const t = i / 255 * (stops.length - 1), k = Math.min(stops.length - 2, Math.floor(t)), f = t - k;
      for (let c = 0; c < 3; c++) out[i * 3 + c] = stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f;
    }
    return out;
  }
  const hex = (s) => [1, 3, 5].map((i) => parseInt(s.slice(i, i + 2), 16));
  const LUT = ramp(["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"].map(hex));
  const DIV = ramp(["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"].map(hex));  // RdBu_r
  const MASKED = [207, 207, 207];  // #cfcfcf, attnscope.render.figures.MASKED_COLOUR: cells a query cannot see
  const LONG_INPUT = 64;  // attnscope.render.figures.LONG_INPUT: above this many keys "auto" uses a square-root scale
  const HEAD_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939"];
  const STRIDES = [1, 2, 3, 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000];  // render.style.TokenLocator
  const SCALES = {
    linear: { name: "absolute weight, linear scale", f: (v) => v },
    sqrt: { name: "absolute weight, square-root scale", f: (v) => Math.sqrt(v) },
    row: { name: "weight ÷ its row's max, square-root scale", f: (v) => Math.sqrt(v) },
  };
  function scaleOf(choice, nk) { return choice === "auto" ? (nk > LONG_INPUT ? "sqrt" : "linear") : choice; }
  function isMasked(mask, layer, i, j) {  // mask = summary stream .mask (causal streams) or null
    if (!mask) return false;
    const d = i + mask.diagonal;
    if (j > d) return true;
    const w = mask.windows && mask.windows[String(layer)];
    return !!w && j <= d - w;
  }
  /** Colour values (rows x cols, in [0, 1] through `scale`, masked cells grey) into the RGBA pixels `px` of an
   * image `width` pixels wide, top-left at (x0, y0). */
  function paintInto(px, width, x0, y0, values, rows, cols, isByte, scale, maskFn) {
    const f = SCALES[scale || "sqrt"].f;
    for (let i = 0, n = rows * cols; i < n; i++) {
      const r = Math.floor(i / cols), c = i % cols, o = ((y0 + r) * width + x0 + c) * 4;
      if (maskFn && maskFn(r, c)) { px[o] = MASKED[0]; px[o + 1] = MASKED[1]; px[o + 2] = MASKED[2]; px[o + 3] = 255; continue; }
      const v = isByte ? values[i] / 255 : values[i];
      const g = Math.max(0, Math.min(255, Math.round(f(Math.max(0, Math.min(1, v))) * 255))) * 3;
      px[o] = LUT[g]; px[o + 1] = LUT[g + 1]; px[o + 2] = LUT[g + 2]; px[o + 3] = 255;
    }
  }
  /** An offscreen canvas rows x cols: values in [0, 1] through `scale`, masked cells grey. */
  function paint(values, rows, cols, isByte, scale, maskFn) {
    const c = document.createElement("canvas");
    c.width = cols; c.height = rows;
    const ctx = c.getContext("2d"), img = ctx.createImageData(cols, rows);
    paintInto(img.data, cols, 0, 0, values, rows, cols, isByte, scale, maskFn);
    ctx.putImageData(img, 0, 0);
    return c;
  }
  function divColour(v, lim) {  // RdBu_r around 0
    const g = Math.max(0, Math.min(255, Math.round((v / (lim || 1) * 0.5 + 0.5) * 255))) * 3;
    return `rgb(${DIV[g]},${DIV[g + 1]},${DIV[g + 2]})`;
  }
  function stride(n, lengthPx, pitchPx) {
    const fit = Math.max(1, Math.floor(lengthPx / pitchPx));
    return STRIDES.find((k) => Math.ceil(n / k) <= fit) || STRIDES[STRIDES.length - 1];
  }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === "class") e.className = v;
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const ch of children) if (ch != null) e.append(ch);
    return e;
  }
  const fmt = (x, d = 3) => (x === undefined || x === null || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);
  // a head's role label: its attention pattern (head_roles), then its linguistic role where the model has a
  // measured record (best head of a dependency relation or for coreference; meta.linguistic of head_roles)
  const roleText = (role, li, hi) => {
    const ling = role.meta.linguistic && role.meta.linguistic.labels && (role.meta.linguistic.labels[li] || [])[hi];
    return [role.meta.labels[li][hi], ling].filter((x) => x).join(" · ");
  };
  const fmtSig = (x) => (x === undefined || x === null || Number.isNaN(x)) ? "–" : x !== 0 && Math.abs(x) < 0.01 ? Number(x).toExponential(1) : Number(x).toFixed(2);
  const DPR = () => Math.min(2, global.devicePixelRatio || 1);
  const clipLabel = (t, n) => t.length > n ? t.slice(0, n - 1) + "…" : t;
  function download(blob, name) {
    const a = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  function canvasBlob(c) { return new Promise((res) => c.toBlob(res, "image/png")); }
  /** Draw a colour bar (and the masked swatch) at x, y into ctx; returns nothing. */
  function colourBar(ctx, x, y, h, scale, masked) {
    const f = SCALES[scale].f, w = 12;
    for (let p = 0; p < h; p++) {  // top = 1, bottom = 0
      const g = Math.round((1 - p / (h - 1)) * 255) * 3;
      ctx.fillStyle = `rgb(${LUT[g]},${LUT[g + 1]},${LUT[g + 2]})`; ctx.fillRect(x, y + p, w, 1);
    }
    ctx.strokeStyle = "#8a93a0"; ctx.lineWidth = 1; ctx.strokeRect(x + 0.5, y + 0.5, w - 1, h - 1);
    ctx.fillStyle = "#1b2330"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    const ticks = scale === "linear" ? [0, 0.25, 0.5, 0.75, 1] : [0, 0.01, 0.05, 0.1, 0.25, 0.5, 1];
    for (const t of ticks) { const yy = y + (1 - f(t)) * (h - 1); ctx.fillRect(x + w, yy, 3, 1); ctx.fillText(String(t), x + w + 5, yy); }
    ctx.save(); ctx.translate(x + w + 38, y + h / 2); ctx.rotate(Math.PI / 2); ctx.textAlign = "center";
    ctx.fillText(scale === "row" ? "weight ÷ row max (√)" : scale === "sqrt" ? "attention weight (√ scale)" : "attention weight", 0, 0);
    ctx.restore();
    if (masked) {
      ctx.fillStyle = `rgb(${MASKED.join(",")})`; ctx.fillRect(x, y + h + 10, w, w);
      ctx.fillStyle = "#1b2330"; ctx.fillText("masked", x + w + 5, y + h + 16);
    }
  }

  // ------------------------------------------------------------------ the explorer
  const VIEWS = [["model", "Model view"], ["head", "Head view"], ["heatmap", "Heatmap"], ["rollout", "Rollout"],
    ["neuron", "Neuron view"], ["explain", "Explain"], ["ablate", "Ablate"], ["analyses", "Analyses & compare"], ["long", "Long input"]];
  const SERVER_VIEWS = new Set(["neuron", "explain", "ablate", "analyses", "long"]);
  const LONG_CHARS = 6000;  // longer texts open the pooled overview (no full maps) unless the box is unticked
  const LIVE_DEBOUNCE_MS = 80;

  class Explorer {
    constructor(root, source, options) {
      this.root = root; this.src = source; this.opt = Object.assign({ form: true }, options || {});
      this.s = null; this.stream = null; this.layer = 0; this.heads = [0]; this.view = "model";
      this.focus = null; this.focusKey = null; this.roles = {}; this.overviews = {}; this.maps = new Map(); this.models = [];
      this.seq = 0; this.req = null; this.pairFilter = "all"; this.isolated = null; this.timeline = []; this.track = null;
      this.pooledState = null; this.liveCtl = null; this.liveTimer = null;
      this.build();
    }

    // ---------------------------------------------------------------- DOM
    build() {
      const r = this.root;
      r.classList.add("atsc");
      r.textContent = "";
      this.tip = el("div", { class: "tooltip", role: "tooltip", id: "tooltip" });
      this.status = el("div", { class: "status", role: "status", "aria-live": "polite", id: "status" });
      if (this.opt.form) {
        this.modelSel = el("select", { id: "model", "aria-label": "model", on: { change: () => this.onModelChange() } });
        this.text = el("textarea", { id: "text", placeholder: "Type a sentence…", "aria-label": "text", on: { input: () => this.onType() } });
        this.text.value = "The quick brown fox jumps over the lazy dog.";
        this.pair = el("input", { id: "text-pair", type: "text", placeholder: "optional second sentence", "aria-label": "second sentence" });
        this.target = el("input", { id: "target", type: "text", placeholder: "target text (teacher forcing)", "aria-label": "target" });
        this.analyzeBtn = el("button", { id: "analyze", type: "submit", text: "Analyze" });
        this.maxNew = el("input", { id: "max-new", type: "number", min: 1, max: 256, value: 12, "aria-label": "new tokens" });
        this.genBtn = el("button", { id: "generate", type: "button", class: "secondary", text: "Generate", on: { click: () => this.run(true) } });
        this.truncate = el("input", { id: "truncate", type: "checkbox" });
        this.live = el("input", { id: "live", type: "checkbox", on: { change: () => { this.renderStats(); if (this.live.checked) this.onType(); } } });
        this.longBox = el("input", { id: "long", type: "checkbox" });
        this.pairLabel = el("label", {}, "second sentence", this.pair);
        this.targetLabel = el("label", { hidden: true }, "target", this.target);
        this.genLabel = el("label", { hidden: true }, "new tokens", el("span", { class: "gen" }, this.maxNew, this.genBtn));
        const checks = el("div", { class: "checks" },
          el("label", { class: "check", title: "keep the model's first max-length tokens of a longer text" }, this.truncate, "truncate"),
          el("label", { class: "check", title: "update the views as you type" }, this.live, "live"),
          el("label", { class: "check", title: `pooled overview without full maps (automatic above ${LONG_CHARS} characters)` }, this.longBox, "long input"));
        const form = el("form", { class: "form", "aria-label": "input", on: { submit: (e) => { e.preventDefault(); this.run(false); } } },
          el("header", {}, el("h1", { text: "attnscope" }), el("label", {}, "model", this.modelSel),
            el("label", {}, "text", this.text), this.pairLabel, this.targetLabel, checks, this.analyzeBtn, this.genLabel));
        r.append(form);
      }
      this.streamSel = el("select", { id: "stream", "aria-label": "stream", on: { change: () => { this.stream = this.streamSel.value; this.onStream(); } } });
      this.layerSel = el("select", { id: "layer", "aria-label": "layer", on: { change: () => { this.layer = +this.layerSel.value; this.changed(); } } });
      this.headBox = el("div", { class: "heads", id: "heads", role: "group", "aria-label": "heads" });
      this.tabs = el("div", { class: "tabs", role: "toolbar", "aria-label": "view" });
      for (const [v, label] of VIEWS) {
        if (SERVER_VIEWS.has(v) && !this.opt.form) continue;
        this.tabs.append(el("button", { type: "button", "data-view": v, "aria-pressed": String(v === this.view), text: label, on: { click: () => this.setView(v) } }));
      }
      this.scaleSel = el("select", { id: "scale", "aria-label": "colour scale", on: { change: () => { this.scale = this.scaleSel.value; this.changed(); } } },
        el("option", { value: "auto" }, `auto (linear; √ above ${LONG_INPUT} tokens)`), el("option", { value: "linear" }, "absolute, linear"),
        el("option", { value: "sqrt" }, "absolute, square root"), el("option", { value: "row" }, "÷ row max"));
      this.scale = "auto";
      this.pairSel = el("select", { id: "pair-filter", "aria-label": "sentence-pair filter", on: { change: () => { this.pairFilter = this.pairSel.value; this.changed(); } } },
        ...[["all", "all"], ["AB", "A → B"], ["BA", "B → A"], ["AA", "A → A"], ["BB", "B → B"]].map(([v, t]) => el("option", { value: v }, t)));
      this.pairFilterLabel = el("label", { hidden: true, title: "head view: only lines from sentence A/B to A/B" }, "sentences", this.pairSel);
      this.stepBox = el("span", { class: "gen", hidden: true });
      this.step = el("input", { id: "step", type: "range", min: 0, max: 0, value: 0, "aria-label": "generated token", on: { input: () => this.onStep() } });
      this.stepOut = el("output", { id: "step-token" });
      this.stepBox.append(el("span", { class: "hint", text: "step" }), this.step, this.stepOut);
      this.exportBox = el("span", { class: "export", role: "group", "aria-label": "export" },
        el("button", { type: "button", class: "secondary", id: "export-png", text: "PNG", title: "the current view as PNG", on: { click: () => this.exportImage("png") } }),
        el("button", { type: "button", class: "secondary", id: "export-svg", text: "SVG", title: "the current view as SVG", on: { click: () => this.exportImage("svg") } }),
        this.traceLink = el("a", { id: "export-trace", class: "button-link", href: "#", download: "attnscope-trace.safetensors", text: "trace", title: "the trace (.safetensors; attnscope.AttentionTrace.load reads it)" }),
        this.permalink = el("a", { id: "permalink", class: "button-link", href: "#", text: "link", title: "a link that reproduces this view (text, model, layer, head)" }));
      this.bar = el("div", { class: "bar", hidden: true },
        el("label", {}, "stream", this.streamSel), el("label", {}, "layer", this.layerSel),
        el("label", {}, "heads (several = side by side)", this.headBox), this.tabs,
        el("label", { title: "colours of heatmaps; hover always shows the exact weight" }, "colour scale", this.scaleSel),
        this.pairFilterLabel, this.stepBox, this.exportBox);
      this.viewEl = el("div", { class: "view", id: "view", tabindex: "0", role: "region",
        "aria-label": "attention view; arrow keys: up/down layer, left/right head" });
      this.side = el("aside", { class: "side", id: "stats", "aria-label": "statistics" });
      this.mainEl = el("div", { class: "main", hidden: true }, this.viewEl, this.side);
      this.caveat = el("p", { class: "caveat", id: "caveat", role: "note", text: CAVEAT });
      r.append(this.status, this.bar, this.mainEl, this.caveat, this.tip);
      r.addEventListener("keydown", (e) => this.onKey(e));
    }

    setStatus(msg, error) { this.status.textContent = msg || ""; this.status.classList.toggle("error", !!error); }
    showTip(e, text) {
      this.tip.textContent = text; this.tip.style.display = "block";
      const x = Math.min(e.clientX + 14, global.innerWidth - this.tip.offsetWidth - 4);
      this.tip.style.left = x + "px"; this.tip.style.top = (e.clientY + 14) + "px";
    }
    hideTip() { this.tip.style.display = "none"; }

    async init() {
      if (this.opt.form) {
        try {
          this.models = await this.src.models();
          for (const m of this.models) {
            const ready = !m.status || m.status === "ready" || m.loaded;
            const o = el("option", { value: m.name, disabled: !ready && !m.default }, m.name + (m.kind ? ` (${m.kind})` : "") + (ready ? "" : " — " + m.status));
            this.modelSel.append(o);
            if (m.default) this.modelSel.value = m.name;
          }
          this.onModelChange();
          this.setStatus("Type a sentence and press Analyze.");
        } catch (e) { this.setStatus("Could not reach the server: " + e.message, true); }
        try { this.analysisList = await this.src.analyses(); } catch (e) { this.analysisList = []; }
        this.analysisNames = this.analysisList.map((a) => a.name);
        await this.restoreFromUrl();
      } else {
        this.analysisNames = [];
        const summary = await this.src.trace();
        const texts = Object.entries(summary.texts || {}).map(([k, v]) => `${k}: ${v}`).join("  ·  ");
        this.root.insertBefore(el("header", {}, el("h1", { text: "attnscope" }), el("span", { class: "hint", text: `${summary.model || "trace"} — ${texts}` })), this.status);
        await this.load(summary);
      }
      return this;
    }

    // ---------------------------------------------------------------- the link that reproduces the view
    viewParams() {
      const p = new URLSearchParams();
      if (!this.req) return p;
      p.set("text", this.req.text);
      if (this.req.text_pair) p.set("pair", this.req.text_pair);
      if (this.req.target) p.set("target", this.req.target);
      if (this.req.model) p.set("model", this.req.model);
      if (this.req.truncate) p.set("truncate", "1");
      if (this.req.long) p.set("long", "1");
      p.set("layer", String(this.layer)); p.set("head", this.heads.join(",")); p.set("view", this.view);
      if (this.stream && this.stream !== "self") p.set("stream", this.stream);
      if (this.scale !== "auto") p.set("scale", this.scale);
      return p;
    }
    syncUrl() {
      if (!this.opt.form || !this.req) return;
      const q = "?" + this.viewParams().toString();
      this.permalink.href = location.pathname + q;
      try { history.replaceState(null, "", q); } catch (e) { /* file: pages */ }
      const t = this.src.traceFileUrl && this.src.traceFileUrl();
      this.traceLink.hidden = !t || !!this.req.long;
      if (t) this.traceLink.href = t;
    }
    async restoreFromUrl() {
      const p = new URLSearchParams(location.search);
      if (!p.get("text")) return;
      this.text.value = p.get("text");
      if (p.get("model") && [...this.modelSel.options].some((o) => o.value === p.get("model"))) { this.modelSel.value = p.get("model"); this.onModelChange(); }
      if (p.get("pair")) this.pair.value = p.get("pair");
      if (p.get("target")) this.target.value = p.get("target");
      this.truncate.checked = p.get("truncate") === "1";
      this.longBox.checked = p.get("long") === "1";
      if (p.get("scale") && SCALES[p.get("scale")] || p.get("scale") === "auto") { this.scale = p.get("scale"); this.scaleSel.value = this.scale; }
      const layer = +p.get("layer"), heads = (p.get("head") || "").split(",").filter(Boolean).map((h) => h === "mean" ? "mean" : +h);
      const view = VIEWS.some(([v]) => v === p.get("view")) ? p.get("view") : null;
      await this.run(false, { layer, heads, view, stream: p.get("stream") });
    }

    onModelChange() {
      const m = this.models.find((x) => x.name === this.modelSel.value) || {};
      const seq = m.kind === "seq2seq", speech = m.kind === "speech-seq2seq", causal = m.kind === "causal";
      this.targetLabel.hidden = !seq;
      this.pairLabel.hidden = seq || causal || speech;
      this.genLabel.hidden = !(causal || seq);
      this.analyzeBtn.disabled = speech;
      if (speech) this.setStatus("Speech models take audio: use the Python API (capture(audio=…)) or attnscope.show().");
    }

    request() {
      const text = this.text.value;
      return { text, model: this.modelSel.value || undefined,
        text_pair: (!this.pairLabel.hidden && this.pair.value.trim()) ? this.pair.value : undefined,
        target: (!this.targetLabel.hidden && this.target.value.trim()) ? this.target.value : undefined,
        truncate: this.truncate.checked || undefined };
    }

    async run(generate, restore) {
      const text = this.text.value;
      if (!text.trim()) { this.setStatus("Type a sentence first.", true); return; }
      if (this.liveCtl) { this.liveCtl.abort(); this.liveCtl = null; }
      const req = this.request();
      if (!generate && (this.longBox.checked || text.length > LONG_CHARS)) { this.longBox.checked = true; return this.runLong(req); }
      this.analyzeBtn.disabled = this.genBtn.disabled = true;
      this.setStatus(generate ? "Generating…" : "Running the model…");
      this.root.dataset.state = "loading";
      const t0 = performance.now();
      try {
        const summary = generate ? await this.src.generate({ prompt: text, model: req.model, max_new_tokens: +this.maxNew.value || 12 })
          : await this.src.trace(req);
        this.req = generate ? { text, model: req.model } : req;
        this.timeline = [];
        await this.load(summary, restore);
        const tr = summary.truncated ? ` · truncated from ${summary.truncated.original_tokens} to ${summary.truncated.kept_tokens} tokens` : "";
        this.setStatus(`${summary.model}: ${this.nTokens()} tokens · ready in ${((performance.now() - t0) / 1000).toFixed(2)} s${tr}`);
      } catch (e) {
        this.setStatus(e.message, true);
        this.root.dataset.state = "error";
      } finally { this.analyzeBtn.disabled = this.genBtn.disabled = false; this.onModelChange(); }
    }

    // ---------------------------------------------------------------- live tracking as the text grows
    onType() {
      if (!this.opt.form || !this.live.checked) return;
      clearTimeout(this.liveTimer);
      this.liveTimer = setTimeout(() => this.liveUpdate(), LIVE_DEBOUNCE_MS);
    }
    async liveUpdate() {
      const req = this.request();
      if (!req.text.trim() || req.text.length > LONG_CHARS) return;
      if (this.liveCtl) this.liveCtl.abort();  // a stale request: its answer would be overwritten anyway
      const ctl = this.liveCtl = new AbortController();
      this.root.dataset.live = "pending";
      try {
        const summary = await this.src.trace(req, ctl.signal, this.view === "model");
        if (ctl !== this.liveCtl) return;
        this.req = req;
        await this.load(summary, { layer: this.layer, heads: this.heads, view: this.view, stream: this.stream, keepFocus: true });
        if (ctl !== this.liveCtl) return;
        await this.recordTimeline();
        this.setStatus(`live: ${this.nTokens()} tokens`);
        this.root.dataset.live = "done";
        this.root.dataset.liveText = req.text.length;
        this.liveCtl = null;
        setTimeout(() => { if (!this.liveCtl && this.s === summary) this.loadRoles(); }, 600);  // roles once typing pauses
      } catch (e) {
        if (e.name === "AbortError") return;
        if (ctl === this.liveCtl) { this.setStatus(e.message, true); this.root.dataset.live = "error"; }
      }
    }
    trackedIndex() {  // the tracked token: chosen by clicking a query (head view), else the last token
      const st = this.s.streams[this.stream], toks = st.query_tokens;
      if (this.track) {  // the same word occurrence as the text grows: same label, same occurrence count
        let seen = 0;
        for (let i = 0; i < toks.length; i++) if (toks[i] === this.track.label && seen++ === this.track.occ) return i;
      }
      let i = toks.length - 1;
      while (i > 0 && st.query_special && st.query_special[i]) i--;
      return i;
    }
    async recordTimeline() {
      const st = this.s.streams[this.stream], h = this.heads[0], li = st.layers.indexOf(this.layer);
      const i = this.trackedIndex(), m = await this.getMap(this.layer, h), nk = st.key_tokens.length;
      let bj = 0; for (let j = 1; j < nk; j++) if (m.data[i * nk + j] > m.data[i * nk + bj]) bj = j;
      let ent = 0; for (let j = 0; j < nk; j++) { const p = m.data[i * nk + j]; if (p > 0) ent -= p * Math.log(p); }
      const hi = st.heads.indexOf(h), stats = st.stats || {};
      this.timeline.push({ n: st.query_tokens.length, token: st.query_tokens[i], top: st.key_tokens[bj], w: m.data[i * nk + bj], ent,
        headEnt: hi >= 0 && stats.entropy ? stats.entropy[li][hi] : null, head: h, layer: this.layer });
      if (this.timeline.length > 60) this.timeline.shift();
      this.renderStats();
    }
    renderTimeline() {
      if (!this.opt.form || !this.live.checked) return;
      const box = el("section", { id: "timeline", "aria-label": "timeline" });
      box.append(el("h2", { text: "timeline (live)" }));
      const tl = this.timeline;
      if (!tl.length) { box.append(el("p", { class: "hint", text: "Type: each pause adds a row. Click a query token in the head view to track it." })); this.side.append(box); return; }
      const last = tl[tl.length - 1];
      box.append(el("p", { class: "hint", text: `token “${last.token}”, layer ${last.layer} · ${last.head === "mean" ? "mean of heads" : "head " + last.head}: its strongest key and row entropy as words were added; head entropy = the head's mean over all rows.` }));
      const W = 340, Hh = 60, dpr = DPR(), c = el("canvas", { class: "lines", id: "timeline-chart", width: W * dpr, height: Hh * dpr, role: "img", "aria-label": "row entropy of the tracked token per update" });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d"); ctx.scale(dpr, dpr);
      const mx = Math.max(1e-6, ...tl.map((r) => Math.max(r.ent, r.headEnt || 0)));
      const line = (key, colour) => { ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.beginPath();
        tl.forEach((r, i) => { const x = 6 + i * (W - 12) / Math.max(1, tl.length - 1), y = Hh - 6 - (r[key] || 0) / mx * (Hh - 14); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); }); ctx.stroke(); };
      line("ent", "#1f5fbf"); line("headEnt", "#d62728");
      ctx.font = "10px system-ui, sans-serif"; ctx.fillStyle = "#1f5fbf"; ctx.fillText("row entropy", 6, 10); ctx.fillStyle = "#d62728"; ctx.fillText("head entropy", 90, 10);
      box.append(c);
      const tb = el("tbody");
      tl.slice().reverse().slice(0, 12).forEach((r) => tb.append(el("tr", {}, el("td", { text: String(r.n) }), el("td", { class: "role", text: r.token }),
        el("td", { class: "role", text: r.top }), el("td", { text: fmt(r.w) }), el("td", { text: fmt(r.ent) }), el("td", { text: fmt(r.headEnt) }))));
      box.append(el("table", { id: "timeline-table" }, el("caption", { class: "sr", text: "timeline of the tracked token" }),
        el("thead", {}, el("tr", {}, ...["tokens", "token", "strongest key", "weight", "row ent.", "head ent."].map((t, i) => el("th", { scope: "col", class: i === 1 || i === 2 ? "role" : "", text: t })))), tb));
      this.side.append(box);
    }

    nTokens() { const st = this.s.streams[this.stream]; return st.query_tokens.length; }

    async load(summary, restore) {
      this.seq++;
      this.s = summary; this.overviews = {}; this.maps = new Map(); this.roles = {};
      if (!(restore && restore.keepFocus)) { this.focus = null; this.focusKey = null; }
      this.pooledState = null;
      const streams = Object.keys(summary.streams);
      this.streamSel.textContent = "";
      for (const s of streams) this.streamSel.append(el("option", { value: s }, s));
      this.stream = restore && restore.stream && streams.includes(restore.stream) ? restore.stream : streams.includes("self") ? "self" : streams[0];
      this.streamSel.value = this.stream;
      this.streamSel.parentElement.hidden = streams.length < 2;
      const g = summary.generation;
      this.stepBox.hidden = !g;
      if (g) { this.step.max = Math.max(0, g.token_ids.length - 1); this.step.value = 0; }
      const st = summary.streams[this.stream];
      if (restore) {
        if (st.layers.includes(restore.layer)) this.layer = restore.layer;
        if (restore.heads && restore.heads.length) this.heads = restore.heads.slice();
        if (restore.view && (restore.view !== "long")) this.view = restore.view;
      } else if (this.view === "long") this.view = "model";
      for (const b of this.tabs.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.view === this.view));
      this.bar.hidden = false; this.mainEl.hidden = false;
      this.pairFilterLabel.hidden = !(st.segments && st.segments.includes(1));
      if (this.pairFilterLabel.hidden) this.pairFilter = "all";
      await this.onStream();
      if (g) this.onStep();
    }

    async onStream() {
      const st = this.s.streams[this.stream];
      this.layerSel.textContent = "";
      for (const l of st.layers) this.layerSel.append(el("option", { value: l }, "layer " + l));
      if (!st.layers.includes(this.layer)) this.layer = st.layers[0];
      this.layerSel.value = this.layer;
      this.heads = this.heads.filter((h) => h === "mean" || st.heads.includes(h));
      if (!this.heads.length) this.heads = [st.heads[0]];
      this.buildHeadBox();
      this.maps = new Map();
      await this.render();
      this.renderStats();
      // not while typing (the role analysis would compete with the next update), and only after this view is on
      // screen: on a small machine the server's role analysis would otherwise compete with the page's first paint
      if (!this.liveCtl) requestAnimationFrame(() => setTimeout(() => { if (!this.liveCtl) this.loadRoles(); }, 0));
    }

    changed() { this.buildHeadBox(); this.render(); this.renderStats(); }

    buildHeadBox() {
      if (!this.s || !this.s.streams) return;
      const st = this.s.streams[this.stream];
      this.headBox.textContent = "";
      for (const h of [...st.heads, "mean"]) {
        const cb = el("input", { type: "checkbox", value: h, "data-head": h, "aria-label": h === "mean" ? "mean over heads" : "head " + h });
        cb.checked = this.heads.includes(h);
        const lab = el("label", { class: cb.checked ? "on" : "", title: h === "mean" ? "mean over the layer's heads" : "head " + h }, cb, h === "mean" ? "mean" : String(h));
        cb.addEventListener("change", () => {
          const v = h;
          if (cb.checked) { if (!this.heads.includes(v)) this.heads.push(v); } else this.heads = this.heads.filter((x) => x !== v);
          if (!this.heads.length) { this.heads = [v]; cb.checked = true; }
          this.isolated = null;
          lab.classList.toggle("on", cb.checked);
          if (this.view === "model" || this.view === "rollout") this.setView("heatmap"); else this.render();
          this.renderStats();
        });
        this.headBox.append(lab);
      }
    }

    selectHead(layer, head, additive) {
      this.layer = layer; this.layerSel.value = layer;
      if (additive) { if (!this.heads.includes(head)) this.heads.push(head); } else this.heads = [head];
      this.isolated = null;
      this.buildHeadBox();
    }

    setView(v) {
      this.view = v;
      for (const b of this.tabs.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.view === v));
      this.render();
    }

    onKey(e) {
      const t = e.target, tag = t && t.tagName;
      if (!this.s || !this.s.streams || tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
      const st = this.s.streams[this.stream];
      if (e.key === "ArrowUp" || e.key === "ArrowDown") {
        const li = st.layers.indexOf(this.layer) + (e.key === "ArrowDown" ? 1 : -1);
        if (li < 0 || li >= st.layers.length) return;
        this.layer = st.layers[li]; this.layerSel.value = this.layer;
      } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        const all = [...st.heads, "mean"], cur = all.indexOf(this.heads[0]);
        const hi = Math.max(0, Math.min(all.length - 1, cur + (e.key === "ArrowRight" ? 1 : -1)));
        this.heads = [all[hi]];
      } else return;
      e.preventDefault();
      this.isolated = null;
      this.setStatus(`layer ${this.layer} · ${this.heads[0] === "mean" ? "mean over heads" : "head " + this.heads[0]}`);
      if (this.view === "rollout") this.view = "heatmap";
      this.changed();
    }

    async getMap(layer, head) {
      const key = `${this.stream}/${layer}/${head}`;
      if (!this.maps.has(key)) this.maps.set(key, this.src.map(this.stream, layer, head));
      try { return await this.maps.get(key); } catch (e) { this.maps.delete(key); throw e; }
    }

    async render() {
      if (!this.s) return;
      const seq = ++this.seq;
      this.root.dataset.state = "rendering";
      try {
        let node;
        const v = this.view;
        if (this.s.pooled && v !== "long") { this.view = "long"; return this.render(); }
        if (v === "model") node = await this.renderModel();
        else if (v === "heatmap") node = await this.renderHeatmaps();
        else if (v === "head") node = await this.renderLines();
        else if (v === "rollout") node = await this.renderRollout();
        else if (v === "neuron") node = await this.renderNeuron();
        else if (v === "explain") node = this.renderExplain();
        else if (v === "ablate") node = this.renderAblate();
        else if (v === "analyses") node = this.renderAnalyses();
        else node = await this.renderLong();
        if (seq !== this.seq) return;  // a newer render started meanwhile
        this.hideTip();
        this.viewEl.textContent = "";
        this.viewEl.append(node);
        this.root.dataset.state = "ready";
        this.root.dataset.view = this.view;
        this.syncUrl();
        if (v === "heatmap" || v === "head") this.prefetch(seq);
      } catch (e) {
        if (seq !== this.seq) return;
        this.viewEl.textContent = "";
        this.viewEl.append(el("p", { class: "hint error", text: e.message }));
        this.root.dataset.state = "ready";
        this.root.dataset.view = this.view;
      }
    }

    /** Fetch the maps a selection is likely to open next (this layer's heads, the same head one layer up and
     * down), one at a time after the view is drawn, so arrow keys and clicks only paint. */
    async prefetch(seq) {
      const st = this.s.streams[this.stream], h = this.heads[0], li = st.layers.indexOf(this.layer), stream = this.stream;
      const want = [...st.heads.map((x) => [this.layer, x]), [this.layer, "mean"]];
      for (const d of [1, -1]) if (st.layers[li + d] !== undefined) want.push([st.layers[li + d], h]);
      await new Promise((r) => setTimeout(r, 30));
      for (const [l, x] of want) {
        if (seq !== this.seq || stream !== this.stream || this.liveCtl) return;  // the view moved on: stop
        try { await this.getMap(l, x); } catch (e) { return; }
      }
    }

    // ---------------------------------------------------------------- export
    async exportImage(kind) {
      const canvases = [...this.viewEl.querySelectorAll("canvas")].filter((c) => c.width > 0 && c.offsetParent !== null);
      if (!canvases.length) { this.setStatus("This view has no picture to export; its numbers are in the tables.", true); return; }
      const dpr = DPR(), gap = 12 * dpr, title = `attnscope · ${this.s.model || ""} · ${this.view} · layer ${this.layer} · heads ${this.heads.join(",")}`;
      const W = canvases.reduce((a, c) => a + c.width + gap, 0), Hh = Math.max(...canvases.map((c) => c.height)) + 22 * dpr;
      const out = document.createElement("canvas"); out.width = W; out.height = Hh;
      const ctx = out.getContext("2d");
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, Hh);
      ctx.fillStyle = "#1b2330"; ctx.font = `${12 * dpr}px system-ui, sans-serif`; ctx.textBaseline = "top"; ctx.fillText(title, 4 * dpr, 4 * dpr);
      let x = 0; for (const c of canvases) { ctx.drawImage(c, x, 22 * dpr); x += c.width + gap; }
      const name = `attnscope-${this.view}-L${this.layer}-H${this.heads.join("_")}`;
      if (kind === "png") { download(await canvasBlob(out), name + ".png"); return; }
      // SVG: the title and caption as SVG text, each picture as an embedded PNG at its pixel size
      const ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
      const w = W / dpr, h = Hh / dpr;
      svg.setAttribute("xmlns", ns); svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
      const t = document.createElementNS(ns, "text"); t.setAttribute("x", 4); t.setAttribute("y", 15); t.setAttribute("font-family", "system-ui, sans-serif"); t.setAttribute("font-size", 12); t.textContent = title; svg.append(t);
      let xx = 0;
      for (const c of canvases) {
        const im = document.createElementNS(ns, "image");
        im.setAttribute("x", xx); im.setAttribute("y", 22); im.setAttribute("width", c.width / dpr); im.setAttribute("height", c.height / dpr);
        im.setAttribute("href", c.toDataURL("image/png")); svg.append(im); xx += (c.width + gap) / dpr;
      }
      download(new Blob([new XMLSerializer().serializeToString(svg)], { type: "image/svg+xml" }), name + ".svg");
    }

    // ---------------------------------------------------------------- model view: layers x heads thumbnails
    async renderModel() {
      if (!this.overviews[this.stream]) this.overviews[this.stream] = this.src.overview(this.stream);
      const ov = await this.overviews[this.stream];
      const [L, H, sq, sk] = ov.shape, st = this.s.streams[this.stream];
      const nk = st.key_tokens.length, scale = scaleOf(this.scale === "row" ? "sqrt" : this.scale, nk);
      const cell = Math.max(40, Math.min(72, Math.floor((this.viewEl.clientWidth - 60) / (H + 1)) - 6)), gap = 6, left = 44, top = 18;
      const cw = Math.round(cell * Math.min(1, sk / sq)), ch = Math.round(cell * Math.min(1, sq / sk));
      const W = left + (H + 1) * (cell + gap) + 80, Hh = Math.max(top + L * (cell + gap), 200), dpr = DPR();
      const c = el("canvas", { id: "model-view", width: W * dpr, height: Hh * dpr, role: "img",
        "aria-label": `model view: ${L} layers × ${H} heads; click a thumbnail to open that head's heatmap` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d");
      ctx.scale(dpr, dpr); ctx.imageSmoothingEnabled = false;
      ctx.fillStyle = "#5b6573"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "center";
      for (let h = 0; h < H; h++) ctx.fillText("H" + ov.heads[h], left + h * (cell + gap) + cell / 2, 12);
      ctx.fillText("mean", left + H * (cell + gap) + cell / 2, 12);
      ctx.textAlign = "right";
      const size = sq * sk;
      // masked tiles: a max-pooled tile is masked when every cell in it is (its top-left cell is then masked)
      const fq = st.query_tokens.length / sq, fk = nk / sk;
      // every thumbnail (and each layer's mean) into one image, drawn tile by tile: one canvas, not L x (H + 1)
      const atlas = document.createElement("canvas");
      atlas.width = (H + 1) * sk; atlas.height = L * sq;
      const actx = atlas.getContext("2d"), img = actx.createImageData(atlas.width, atlas.height);
      for (let l = 0; l < L; l++) {
        const maskFn = st.mask ? (i, j) => isMasked(st.mask, ov.layers[l], Math.floor((i + 1) * fq) - 1, Math.floor(j * fk)) : null;
        const mean = new Float32Array(size);
        for (let h = 0; h < H; h++) {
          const t = ov.thumbs.subarray((l * H + h) * size, (l * H + h + 1) * size);
          for (let i = 0; i < size; i++) mean[i] += t[i] / 255 / H;
          paintInto(img.data, atlas.width, h * sk, l * sq, t, sq, sk, true, scale, maskFn);
        }
        paintInto(img.data, atlas.width, H * sk, l * sq, mean, sq, sk, false, scale, maskFn);
      }
      actx.putImageData(img, 0, 0);
      for (let l = 0; l < L; l++) {
        const y = top + l * (cell + gap);
        ctx.fillStyle = "#5b6573"; ctx.fillText("L" + ov.layers[l], left - 6, y + cell / 2 + 4);
        for (let h = 0; h <= H; h++) ctx.drawImage(atlas, h * sk, l * sq, sk, sq, left + h * (cell + gap), y, cw, ch);
      }
      colourBar(ctx, left + (H + 1) * (cell + gap) + 6, top, Math.min(160, Hh - top - 40), scale, !!st.mask);
      ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
      const li = ov.layers.indexOf(this.layer);
      for (const h of this.heads) {
        const hi = h === "mean" ? H : ov.heads.indexOf(h);
        if (li >= 0 && hi >= 0) ctx.strokeRect(left + hi * (cell + gap) - 1, top + li * (cell + gap) - 1, cw + 2, ch + 2);
      }
      const hit = (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left - left, y = e.clientY - r.top - top;
        const hi = Math.floor(x / (cell + gap)), l = Math.floor(y / (cell + gap));
        if (x < 0 || y < 0 || hi > H || l >= L || x - hi * (cell + gap) > cw || y - l * (cell + gap) > ch) return null;
        return { l, hi };
      };
      c.addEventListener("mousemove", (e) => {
        const p = hit(e);
        if (!p) { this.hideTip(); c.style.cursor = "default"; return; }
        c.style.cursor = "pointer";
        if (p.hi === H) { this.showTip(e, `layer ${ov.layers[p.l]} · mean over heads\nclick: heatmap of the mean`); return; }
        const stats = st.stats || {}, role = this.roles[this.stream];
        const lines = [`layer ${ov.layers[p.l]} · head ${ov.heads[p.hi]}`];
        if (stats.entropy) lines.push(`entropy ${fmt(stats.entropy[p.l][p.hi])} nats · max ${fmt(stats.max[p.l][p.hi])}`,
          `first-token mass ${fmt(stats.first_token_mass[p.l][p.hi])} · mean distance ${fmt(stats.mean_distance[p.l][p.hi], 1)}`);
        if (role) lines.push("role: " + roleText(role, p.l, p.hi));
        lines.push("click: heatmap · shift-click: add side by side");
        this.showTip(e, lines.join("\n"));
      });
      c.addEventListener("mouseleave", () => this.hideTip());
      c.addEventListener("click", (e) => {
        const p = hit(e);
        if (!p) return;
        this.hideTip();
        this.selectHead(ov.layers[p.l], p.hi === H ? "mean" : ov.heads[p.hi], e.shiftKey);
        this.renderStats();
        this.setView("heatmap");
      });
      return el("figure", {}, el("figcaption", { text: `${this.stream}: every layer (rows) and head (columns); thumbnails ${sq}×${sk}, max-pooled; colours: ${SCALES[scale].name}. Hover for statistics, click a head to open it.` }), c);
    }

    // ---------------------------------------------------------------- heatmaps (several heads side by side)
    async renderHeatmaps() {
      const st = this.s.streams[this.stream], q = st.query_tokens, k = st.key_tokens;
      const maps = await Promise.all(this.heads.map((h) => this.getMap(this.layer, h)));
      const panels = el("div", { class: "panels" });
      const avail = Math.max(240, (this.viewEl.clientWidth || 800) - 20);
      const per = this.heads.length === 1 ? Math.min(avail, 720) : Math.min(480, Math.floor(avail / Math.min(this.heads.length, 3)) - 12);
      this.heads.forEach((h, i) => panels.append(this.heatmap(maps[i].data, q, k, per,
        `layer ${this.layer} · ${h === "mean" ? "mean over heads" : "head " + h}`, h, st.mask, this.layer)));
      return panels;
    }

    heatmap(data, qTok, kTok, maxPx, caption, head, mask, layer) {
      const nq = qTok.length, nk = kTok.length, scale = scaleOf(this.scale, nk), dpr = DPR();
      const [xTitle, yTitle] = this.stream === "cross" ? ["source", "predicted target"] : ["key (attended to)", "query (attending)"];
      const font = 11, pitch = font * 1.12, m = document.createElement("canvas").getContext("2d");
      m.font = `${font}px system-ui, sans-serif`;
      const wq = Math.min(110, 6 + Math.max(0, ...qTok.map((t) => m.measureText(clipLabel(t, 16)).width)));
      const wk = Math.min(110, 6 + Math.max(0, ...kTok.map((t) => m.measureText(clipLabel(t, 16)).width)));
      const pad = wq + 18, padTop = wk + 18, barW = 86;
      const cellPx = Math.max(0.5, Math.min(28, (maxPx - pad - barW) / Math.max(nq, nk)));
      const sq = stride(nq, nq * cellPx, pitch), sk = stride(nk, nk * cellPx, pitch);
      const W = Math.ceil(pad + nk * cellPx + barW), Hh = Math.ceil(Math.max(padTop + nq * cellPx + 4, padTop + 200));
      const c = el("canvas", { class: "heatmap", width: W * dpr, height: Hh * dpr, "data-head": head, "data-scale": scale,
        "data-stride-q": sq, "data-stride-k": sk, "data-left": pad, "data-top": padTop, "data-cell": cellPx, role: "img", "aria-label": `${caption}: ${nq} queries × ${nk} keys, ${SCALES[scale].name}` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d");
      ctx.scale(dpr, dpr); ctx.imageSmoothingEnabled = false;
      let shown = data;
      if (scale === "row") {
        shown = new Float32Array(data.length);
        for (let i = 0; i < nq; i++) { let mx = 0; for (let j = 0; j < nk; j++) mx = Math.max(mx, data[i * nk + j]);
          const f = mx > 0 ? 1 / mx : 0; for (let j = 0; j < nk; j++) shown[i * nk + j] = data[i * nk + j] * f; }
      }
      const maskFn = mask ? (i, j) => isMasked(mask, layer, i, j) : null;
      ctx.drawImage(paint(shown, nq, nk, false, scale, maskFn), pad, padTop, nk * cellPx, nq * cellPx);
      ctx.fillStyle = "#1b2330"; ctx.font = `${font}px system-ui, sans-serif`; ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let i = 0; i < nq; i += sq) ctx.fillText(clipLabel(qTok[i], 16), pad - 4, padTop + (i + 0.5) * cellPx);
      for (let j = 0; j < nk; j += sk) { ctx.save(); ctx.translate(pad + (j + 0.5) * cellPx, padTop - 4); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left"; ctx.fillText(clipLabel(kTok[j], 16), 0, 0); ctx.restore(); }
      ctx.fillStyle = "#5b6573"; ctx.textAlign = "left"; ctx.fillText(xTitle + (sk > 1 ? ` (every ${sk}th labelled)` : ""), pad, 8);
      ctx.save(); ctx.translate(8, padTop + nq * cellPx / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center"; ctx.fillText(yTitle + (sq > 1 ? ` (every ${sq}th labelled)` : ""), 0, 0); ctx.restore();
      colourBar(ctx, pad + nk * cellPx + 10, padTop, Math.min(200, Math.max(80, nq * cellPx)), scale, !!mask);
      if (this.focus !== null && this.focus < nq) {
        ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5;
        ctx.strokeRect(pad, padTop + this.focus * cellPx, nk * cellPx, Math.max(1, cellPx));
      }
      if (this.focusKey !== null && this.focusKey < nk) {
        ctx.strokeStyle = "#ff7f0e"; ctx.lineWidth = 1.5;
        ctx.strokeRect(pad + this.focusKey * cellPx, padTop, Math.max(1, cellPx), nq * cellPx);
      }
      c.addEventListener("mousemove", (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left - pad, y = e.clientY - r.top - padTop;
        const i = Math.floor(y / cellPx), j = Math.floor(x / cellPx);
        if (x < 0 && y >= 0 && i < nq) { this.showTip(e, `query ${i}: ${qTok[i]}`); return; }  // thinned labels: every token on hover
        if (y < 0 && x >= 0 && j < nk) { this.showTip(e, `key ${j}: ${kTok[j]}`); return; }
        if (x < 0 || y < 0 || i >= nq || j >= nk) { this.hideTip(); return; }
        const masked = maskFn && maskFn(i, j);
        this.showTip(e, `query ${i}: ${qTok[i]}\nkey ${j}: ${kTok[j]}\n` + (masked ? "masked: not visible to this query" : `weight ${data[i * nk + j].toFixed(5)}`));
      });
      c.addEventListener("mouseleave", () => this.hideTip());
      return el("figure", {}, el("figcaption", { text: `${caption} · colours: ${SCALES[scale].name}` + (mask ? " · grey: masked" : "") }), c);
    }

    // ---------------------------------------------------------------- head view: token-to-token lines
    segmentOk(st, i, j) {
      if (this.pairFilter === "all" || !st.segments) return true;
      const a = st.segments[i], b = st.segments[j], want = { A: 0, B: 1 };
      return a === want[this.pairFilter[0]] && b === want[this.pairFilter[1]];
    }
    async renderLines() {
      const st = this.s.streams[this.stream], q = st.query_tokens, k = st.key_tokens, nq = q.length, nk = k.length;
      const legendHeads = this.isolated !== null ? this.isolatedFrom : this.heads;
      const maps = await Promise.all(this.heads.map((h) => this.getMap(this.layer, h)));
      const rowH = 18, colW = 130, gapW = 200, top = 22, W = colW * 2 + gapW, Hh = top + Math.max(nq, nk) * rowH + 6, dpr = DPR();
      const c = el("canvas", { class: "lines", id: "head-view", width: W * dpr, height: Hh * dpr, role: "img",
        "aria-label": `head view, layer ${this.layer}: lines from each query (left) to the keys it attends to (right)` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d");
      const colourOf = (h) => legendHeads.length > 1 ? HEAD_COLORS[legendHeads.indexOf(h) % HEAD_COLORS.length] : "#1f5fbf";
      // cached pictures: the labels alone (lines never cross the label columns) and every line (262k at 512 tokens)
      let base = null, labels = null;
      const label = (t, i, side, red) => {
        if (red) { ctx.fillStyle = "#fff"; ctx.fillRect(side ? colW + gapW + 2 : 0, top + i * rowH, colW - 2, rowH); }
        ctx.fillStyle = red ? "#d62728" : "#1b2330"; ctx.textAlign = side ? "left" : "right";
        ctx.fillText(clipLabel(t, 16), side ? colW + gapW + 6 : colW - 6, top + (i + 0.5) * rowH); };
      const draw = (focus, focusKey) => {
        if (focus === null && focusKey === null && base) { ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.drawImage(base, 0, 0); return; }
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        ctx.font = "12px system-ui, sans-serif"; ctx.textBaseline = "middle";
        if (labels) { ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.drawImage(labels, 0, 0); ctx.setTransform(dpr, 0, 0, dpr, 0, 0); }
        else {
          ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, Hh);
          ctx.fillStyle = "#5b6573"; ctx.textAlign = "right"; ctx.fillText("queries", colW - 6, 9);
          ctx.textAlign = "left"; ctx.fillText("keys", colW + gapW + 6, 9);
          q.forEach((t, i) => label(t, i, 0, false)); k.forEach((t, j) => label(t, j, 1, false));
          labels = document.createElement("canvas"); labels.width = c.width; labels.height = c.height; labels.getContext("2d").drawImage(c, 0, 0);
        }
        const x0 = colW, x1 = colW + gapW;
        ctx.globalCompositeOperation = "multiply";
        maps.forEach((m, mi) => {
          ctx.strokeStyle = colourOf(this.heads[mi]);
          const rows = focus === null ? [...Array(nq).keys()] : [focus];
          const cols = focusKey === null ? [...Array(nk).keys()] : [focusKey];
          const one = focus !== null || focusKey !== null, minW = one ? 0.005 : 0.03;
          for (const i of rows) for (const j of cols) {
            const w = m.data[i * nk + j];
            if (w < minW || !this.segmentOk(st, i, j)) continue;
            ctx.globalAlpha = Math.min(1, w * (one ? 1.2 : 0.9) + 0.05); ctx.lineWidth = 0.5 + 2.5 * w;
            ctx.beginPath(); ctx.moveTo(x0, top + (i + 0.5) * rowH); ctx.lineTo(x1, top + (j + 0.5) * rowH); ctx.stroke();
          }
        });
        ctx.globalAlpha = 1; ctx.globalCompositeOperation = "source-over";
        if (focus !== null) label(q[focus], focus, 0, true);
        if (focusKey !== null) label(k[focusKey], focusKey, 1, true);
        if (focus === null && focusKey === null && !base) {
          base = document.createElement("canvas"); base.width = c.width; base.height = c.height; base.getContext("2d").drawImage(c, 0, 0);
        }
      };
      draw(this.focus, this.focusKey);
      const name = (mi) => this.heads[mi] === "mean" ? "mean" : "head " + this.heads[mi];
      c.addEventListener("mousemove", (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top, i = Math.floor((y - top) / rowH);
        if (x < colW && i >= 0 && i < nq) {
          draw(i, null);
          const best = maps.map((m, mi) => { let bj = 0; for (let j = 1; j < nk; j++) if (m.data[i * nk + j] > m.data[i * nk + bj]) bj = j;
            return `${name(mi)}: strongest → ${k[bj]} (${m.data[i * nk + bj].toFixed(4)})`; });
          this.showTip(e, `query ${i}: ${q[i]}\n` + best.join("\n") + "\nclick: keep this query (and track it live)");
        } else if (x > colW + gapW && i >= 0 && i < nk) {  // a key: who attends to it
          draw(null, i);
          const who = maps.map((m, mi) => { let bi = 0, tot = 0; for (let a = 0; a < nq; a++) { tot += m.data[a * nk + i]; if (m.data[a * nk + i] > m.data[bi * nk + i]) bi = a; }
            return `${name(mi)}: most from ${q[bi]} (${m.data[bi * nk + i].toFixed(4)}) · total ${tot.toFixed(3)}`; });
          this.showTip(e, `key ${i}: ${k[i]} — who attends to it\n` + who.join("\n"));
        } else { this.hideTip(); draw(this.focus, this.focusKey); }
      });
      c.addEventListener("mouseleave", () => { this.hideTip(); draw(this.focus, this.focusKey); });
      c.addEventListener("click", (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top, i = Math.floor((y - top) / rowH);
        if (x < colW && i >= 0 && i < nq) {
          this.focusKey = null;
          this.focus = this.focus === i ? null : i;
          if (this.focus !== null) { const lab = q[i]; let occ = 0; for (let a = 0; a < i; a++) if (q[a] === lab) occ++; this.track = { label: lab, occ }; }
          else this.track = null;
        } else if (x > colW + gapW && i >= 0 && i < nk) { this.focus = null; this.focusKey = this.focusKey === i ? null : i; }
        draw(this.focus, this.focusKey);
      });
      const legend = el("div", { class: "legend", role: "group", "aria-label": "head colours: click one to isolate it" });
      legendHeads.forEach((h) => {
        const on = this.heads.includes(h);
        const b = el("button", { type: "button", class: "swatch" + (on ? "" : " off"), "data-head": h, "aria-pressed": String(this.isolated === h),
          title: this.isolated === h ? "click: show every selected head again" : "click: show only this head", text: h === "mean" ? "mean" : "head " + h,
          on: { click: () => this.isolate(h) } });
        b.style.setProperty("--swatch", colourOf(h));
        legend.append(b);
      });
      legend.append(el("span", { class: "hint", text: " hover a query to see where it looks, a key to see who attends to it; click to keep" }));
      return el("figure", {}, el("figcaption", { text: `layer ${this.layer}: token-to-token attention` + (this.pairFilter !== "all" ? ` · sentences ${this.pairFilter[0]} → ${this.pairFilter[1]}` : "") }), legend, c);
    }
    isolate(h) {
      if (this.isolated === h) { this.heads = this.isolatedFrom.slice(); this.isolated = null; }
      else { if (this.isolated === null) this.isolatedFrom = this.heads.slice(); this.isolated = h; this.heads = [h]; }
      this.buildHeadBox(); this.render(); this.renderStats();
    }

    async renderRollout() {
      const st = this.s.streams[this.stream];
      if (st.query_tokens.length !== st.key_tokens.length || this.stream === "cross")
        return el("p", { class: "hint", text: "Rollout needs a self-attention stream (queries and keys from one sequence)." });
      const m = await this.src.rollout(this.stream);
      const avail = Math.max(240, (this.viewEl.clientWidth || 800) - 20);
      return this.heatmap(m.data, st.query_tokens, st.key_tokens, Math.min(avail, 720),
        "attention rollout after the last layer (Abnar & Zuidema 2020): mean over heads, 0.5·A + 0.5·I, layers multiplied", "rollout", st.mask ? { diagonal: st.mask.diagonal } : null, null);
    }

    // ---------------------------------------------------------------- neuron view: query · key, per dimension
    numericHead() { const h = this.heads.find((x) => x !== "mean"); return h === undefined ? this.s.streams[this.stream].heads[0] : h; }
    async renderNeuron() {
      const st = this.s.streams[this.stream];
      if (this.stream !== "self" || this.s.generation || !this.req)
        return el("p", { class: "hint", text: "The neuron view takes an analysed text of an encoder or decoder-only model (the self stream)." });
      const head = this.numericHead(), nq = st.query_tokens.length;
      if (this.neuronQuery === undefined || this.neuronQuery >= nq) this.neuronQuery = this.focus !== null ? this.focus : Math.min(1, nq - 1);
      const sel = el("select", { id: "neuron-query", "aria-label": "query token", on: { change: () => { this.neuronQuery = +sel.value; this.render(); } } },
        ...st.query_tokens.map((t, i) => el("option", { value: i }, `${i}: ${t}`)));
      sel.value = this.neuronQuery;
      const d = await this.src.neuron({ text: this.req.text, text_pair: this.req.text_pair, model: this.req.model, truncate: this.req.truncate,
        layer: this.layer, head, query: this.neuronQuery });
      const dim = d.q.length, nk = d.k.length, cw = Math.max(3, Math.min(10, Math.floor(300 / dim))), rowH = 14;
      const labW = 110, gap = 14, x1 = labW, x2 = x1 + dim * cw + gap, x3 = x2 + dim * cw + gap, barW = 110;
      const W = x3 + 60 + barW, top = 34, Hh = top + (nk + 1) * rowH + 8, dpr = DPR();
      const prods = d.k.map((kv) => kv.map((v, i) => v * d.q[i]));
      const limK = Math.max(1e-9, ...d.k.map((kv) => Math.max(...kv.map(Math.abs))), ...d.q.map(Math.abs));
      const limP = Math.max(1e-9, ...prods.map((p) => Math.max(...p.map(Math.abs))));
      const c = el("canvas", { id: "neuron-view", class: "lines", width: W * dpr, height: Hh * dpr, role: "img",
        "aria-label": `neuron view: layer ${d.layer} head ${d.head}, query ${d.query}; query and key vectors, their element-wise products, scores and weights` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d"); ctx.scale(dpr, dpr);
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, Hh);
      ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle"; ctx.fillStyle = "#5b6573"; ctx.textAlign = "left";
      ctx.fillText("key vector k", x1, 10); ctx.fillText("q ⊙ k", x2, 10); ctx.fillText("score", x3, 10); ctx.fillText("weight", x3 + 60, 10);
      const rowY = (r) => top + r * rowH;
      ctx.textAlign = "right"; ctx.fillStyle = "#d62728"; ctx.fillText("q: " + clipLabel(d.tokens[d.query], 12), x1 - 4, rowY(0) - rowH / 2 + 1);
      d.q.forEach((v, i) => { ctx.fillStyle = divColour(v, limK); ctx.fillRect(x1 + i * cw, rowY(0) - rowH + 2, cw, rowH - 2); });
      const smax = Math.max(...d.scores.filter((_, j) => d.allowed[j]).map(Math.abs), 1e-9);
      for (let j = 0; j < nk; j++) {
        const y = rowY(j + 1);
        ctx.fillStyle = d.allowed[j] ? "#1b2330" : "#9aa1ab"; ctx.textAlign = "right"; ctx.fillText(clipLabel(d.tokens[j], 14), x1 - 4, y - rowH / 2 + 1);
        d.k[j].forEach((v, i) => { ctx.fillStyle = divColour(v, limK); ctx.fillRect(x1 + i * cw, y - rowH + 2, cw, rowH - 2); });
        prods[j].forEach((v, i) => { ctx.fillStyle = d.allowed[j] ? divColour(v, limP) : `rgb(${MASKED.join(",")})`; ctx.fillRect(x2 + i * cw, y - rowH + 2, cw, rowH - 2); });
        ctx.fillStyle = d.allowed[j] ? divColour(d.scores[j], smax) : `rgb(${MASKED.join(",")})`; ctx.fillRect(x3, y - rowH + 2, 52, rowH - 2);
        ctx.fillStyle = "#1b2330"; ctx.textAlign = "center"; ctx.fillText(d.allowed[j] ? d.scores[j].toFixed(2) : "masked", x3 + 26, y - rowH / 2 + 1);
        ctx.fillStyle = "#1f5fbf"; ctx.fillRect(x3 + 60, y - rowH + 3, Math.max(0, d.weights[j]) * barW, rowH - 4);
      }
      c.addEventListener("mousemove", (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top, j = Math.floor((y - top) / rowH);
        if (j < 0 || j >= nk) { this.hideTip(); return; }
        const i = x >= x2 && x < x2 + dim * cw ? Math.floor((x - x2) / cw) : x >= x1 && x < x1 + dim * cw ? Math.floor((x - x1) / cw) : null;
        const base = `key ${j}: ${d.tokens[j]} · score ${d.scores[j].toFixed(4)} · weight ${d.weights[j].toFixed(4)}`;
        this.showTip(e, i === null ? base : `${base}\ndim ${i}: q ${d.q[i].toFixed(4)} × k ${d.k[j][i].toFixed(4)} = ${prods[j][i].toFixed(4)}`);
      });
      c.addEventListener("mouseleave", () => this.hideTip());
      return el("figure", {}, el("div", { class: "bar-inline" }, el("label", {}, "query token", sel)),
        el("figcaption", { text: `${d.model}, layer ${d.layer}, head ${d.head}: score(key) = ${d.scale.toFixed(4)} × Σ_d q_d·k_d, weight = softmax over the keys the query sees (Vaswani et al. 2017). Red > 0, blue < 0; q and k after any rotary encoding.` + (d.window ? ` This layer attends to a sliding window of the last ${d.window} tokens: keys outside it are masked, as later keys are.` : "") }), c);
    }

    // ---------------------------------------------------------------- panels for the REST API's methods
    panel(title, ...children) { return el("section", { class: "panel", "aria-label": title }, el("h2", { text: title }), ...children); }
    async runInto(out, fn) {
      out.textContent = ""; out.append(el("p", { class: "hint", text: "Running…" }));
      this.root.dataset.panel = "running";
      try { const node = await fn(); out.textContent = ""; out.append(node); this.root.dataset.panel = "done"; }
      catch (e) { out.textContent = ""; out.append(el("p", { class: "status error", text: e.message })); this.root.dataset.panel = "error"; }
    }
    renderExplain() {
      const boxes = el("div", { class: "checks", role: "group", "aria-label": "attribution methods" });
      const out = el("div", { id: "explain-out" });
      const target = el("input", { type: "text", id: "explain-target", placeholder: "default: the prediction", "aria-label": "target token or class" });
      const random = el("input", { type: "checkbox", id: "explain-random" });
      const btn = el("button", { type: "button", id: "run-explain", text: "Explain", on: { click: () => this.runInto(out, async () => {
        const methods = [...boxes.querySelectorAll("input:checked")].map((x) => x.value);
        const m = this.models.find((x) => x.name === (this.req.model || "")) || {};
        const t = target.value.trim(), key = m.kind === "causal" ? "target_token" : "target_class";
        const res = await this.src.explain({ text: this.req.text, model: this.req.model, methods, allow_random_head: random.checked || undefined,
          [key]: t ? (/^\d+$/.test(t) ? +t : t) : undefined });
        return this.explainResult(res);
      }) } });
      const fill = (methods) => { for (const [i, name] of methods.entries()) boxes.append(el("label", { class: "check" },
        el("input", { type: "checkbox", value: name, checked: i < 3 || undefined }), name)); };
      if (this.explainMethods) fill(this.explainMethods);
      else this.src.explainMethods().then((ms) => { this.explainMethods = ms; fill(ms); }).catch((e) => out.append(el("p", { class: "status error", text: e.message })));
      const explain = this.panel("Explain one prediction: token importance by several methods and their agreement",
        el("p", { class: "hint", text: "Methods come from the server (POST /v1/explain). Classifiers and causal language models; the text is the one analysed." }),
        boxes, el("div", { class: "bar-inline" }, el("label", {}, "target", target), el("label", { class: "check" }, random, "allow a randomly initialised head"), btn), out);
      const kind = (this.models.find((x) => x.name === (this.req.model || "")) || {}).kind;
      return kind === "causal" || kind === "seq2seq" ? el("div", {}, explain, this.renderGeneration(kind)) : explain;
    }
    /** Attribute a greedy generation (POST /v1/attribute-generation): each generated token's logit to the prompt
     * (the source, for encoder-decoders) and the tokens generated before it. */
    renderGeneration(kind) {
      const boxes = el("div", { class: "checks", role: "group", "aria-label": "generation attribution methods" });
      const out = el("div", { id: "generation-out" });
      const n = el("input", { type: "number", id: "generation-n", min: 1, max: 64, value: 6, "aria-label": "tokens to generate" });
      const random = el("input", { type: "checkbox", id: "generation-random" });
      const btn = el("button", { type: "button", id: "run-generation", text: "Generate and attribute", on: { click: () => this.runInto(out, async () => {
        const methods = [...boxes.querySelectorAll("input:checked")].map((x) => x.value);
        if (!methods.length) throw new Error("Tick at least one method.");
        const k = Math.round(+n.value);
        if (!(k >= 1 && k <= 64)) throw new Error("Tokens to generate: give a whole number from 1 to 64.");
        const res = await this.src.attributeGeneration({ prompt: this.req.text, model: this.req.model, methods, max_new_tokens: k,
          allow_random_head: random.checked || undefined });
        return this.generationResult(res);
      }) } });
      const fill = (methods) => { for (const [i, name] of methods.entries()) boxes.append(el("label", { class: "check" },
        el("input", { type: "checkbox", value: name, checked: i === 0 || undefined }), name)); };
      if (this.generationMethods) fill(this.generationMethods);
      else this.src.generationMethods().then((ms) => { this.generationMethods = ms; fill(ms); }).catch((e) => out.append(el("p", { class: "status error", text: e.message })));
      return this.panel("Attribute a generation: each generated token to " + (kind === "seq2seq" ? "the source and the tokens generated before it" : "the prompt and the tokens generated before it"),
        el("p", { class: "hint", text: "Greedy decoding from the text above (POST /v1/attribute-generation). Rows: generated tokens; columns: what each one's logit is attributed to; colour relative to each row's largest magnitude. Each method runs its own generation." }),
        boxes, el("div", { class: "bar-inline" }, el("label", {}, "tokens to generate", n), el("label", { class: "check" }, random, "allow a randomly initialised head"), btn), out);
    }
    generationResult(res) {
      const wrap = el("div", {});
      for (const w of res.warnings || []) wrap.append(el("p", { class: "status error", role: "alert", text: "⚠ " + w }));
      for (const [m, r] of Object.entries(res.results)) {
        const failed = new Set(r.failed_steps), sec = el("section", { class: "generation", "data-method": m });
        const head = el("h3", {}, el("code", { text: m }));
        if (failed.size) head.append(el("span", { class: "badge fail", role: "alert", text: `⚠ ${failed.size} of ${r.generated_tokens.length} generated tokens FAILED the ${r.checks[[...failed][0]].check} check — those rows are not explanations` }));
        else { const c = r.checks.find((x) => x && x.check); if (c) head.append(el("span", { class: "badge ok", text: `✓ ${c.check} check passed on every token` })); }
        sec.append(head, el("p", { class: "note", text: r.note }));
        const cols = [...r.source_tokens.map((t) => ["source", t]), ...r.context_tokens.map((t) => ["", t])];
        const tb = el("tbody");
        r.generated_tokens.forEach((g, i) => {
          const vals = [...(r.source_scores ? r.source_scores[i] : []), ...r.scores[i]];
          const lim = Math.max(1e-12, ...vals.filter((v) => v !== null).map(Math.abs)), bad = failed.has(i);
          const th = el("th", { scope: "row", class: "role" + (bad ? " failed" : ""), title: `p = ${fmt(r.probabilities[i])}, logit ${fmt(r.target_logits[i])}`,
            text: (bad ? "⚠ " : "") + `${i + 1}. ${g}` });
          tb.append(el("tr", { class: bad ? "failed" : "" }, th, ...vals.map((v) => {
            if (v === null) return el("td", { class: "masked", title: "not generated yet" });
            const td = el("td", { text: fmtSig(v), class: bad ? "failed" : "" });
            if (!bad) { td.style.background = divColour(v, lim); if (Math.abs(v) > 0.6 * lim) td.style.color = "#fff"; }
            return td; })));
        });
        sec.append(el("div", { class: "scroll-x" }, el("table", { class: "grid generation-scores" },
          el("caption", { text: `${m}: generated "${r.generated_tokens.join("")}"` }),
          el("thead", {}, el("tr", {}, el("th", { scope: "col", class: "role", text: "generated ↓ / attributed to →" }),
            ...cols.map(([side, t]) => el("th", { scope: "col", class: side ? "source" : "", title: side ? "source token" : "", text: t })))), tb)));
        wrap.append(sec);
      }
      return wrap;
    }
    explainResult(res) {
      const wrap = el("div", {});
      for (const w of res.warnings || []) wrap.append(el("p", { class: "status error", role: "alert", text: "⚠ " + w }));
      wrap.append(el("p", { class: "hint", text: `prediction: ${res.target_label} (p = ${fmt(res.probability)})` }));
      const methods = Object.keys(res.scores), tb = el("tbody");
      // what each method is and is not, and the result of its own check: a failed one is never shown as an explanation
      const checks = res.checks || {}, notes = res.notes || {};
      const failed = new Set([...(res.failed_checks || []), ...Object.keys(checks).filter((m) => checks[m] && checks[m].ok === false)]);
      const list = el("ul", { id: "explain-notes", class: "notes", "aria-label": "what each method is and is not" });
      for (const m of methods) {
        const li = el("li", { "data-method": m, class: failed.has(m) ? "failed" : "" }, el("code", { text: m }));
        const leftOut = ((res.meta || {}).left_out_of_agreement || []).includes(m);
        if (failed.has(m)) li.append(el("span", { class: "badge fail", role: "alert", text: `⚠ FAILED its ${checks[m].check} check — not an explanation` + (leftOut ? "; left out of the agreement rows" : "") }));
        else if (checks[m] && checks[m].ok) li.append(el("span", { class: "badge ok", text: `✓ ${checks[m].check} check passed` }));
        li.append(el("span", { class: "note", text: notes[m] || "No note for this method: read its documentation before trusting it." }));
        list.append(li);
      }
      wrap.append(el("h3", { text: "what each method is and is not" }), list);
      const lim = Object.fromEntries(methods.map((m) => [m, Math.max(1e-12, ...res.scores[m].map(Math.abs))]));
      res.tokens.forEach((t, i) => tb.append(el("tr", {}, el("td", { class: "role", text: t }), ...methods.map((m) => {
        const v = res.scores[m][i], td = el("td", { text: fmt(v, 3), class: failed.has(m) ? "failed" : "" });
        if (!failed.has(m)) td.style.background = divColour(v, lim[m]);
        return td; }))));
      wrap.append(el("table", { id: "explain-scores", class: "grid" }, el("caption", { text: "scores per token (colour: relative to each method's largest magnitude; hatched, uncoloured: a method that failed its own check)" }),
        el("thead", {}, el("tr", {}, el("th", { scope: "col", class: "role", text: "token" }), ...methods.map((m) => el("th", { scope: "col", class: failed.has(m) ? "failed" : "",
          title: notes[m] || "", text: failed.has(m) ? `⚠ ${m} (failed ${checks[m].check})` : m })))), tb));
      const ag = el("tbody");
      for (const a of res.agreement) ag.append(el("tr", {}, el("td", { class: "role", text: `${a.a} vs ${a.b}` }), el("td", { text: fmt(a.spearman) }), el("td", { text: fmt(a.kendall) }), el("td", { text: fmt(a.topk_overlap, 2) + ` (k=${a.k})` })));
      wrap.append(el("table", { id: "explain-agreement" }, el("caption", { text: "agreement between methods (rank correlations, top-k overlap)" }),
        el("thead", {}, el("tr", {}, ...["pair", "Spearman", "Kendall", "top-k overlap"].map((t, i) => el("th", { scope: "col", class: i ? "" : "role", text: t })))), ag));
      return wrap;
    }
    renderAblate() {
      const out = el("div", { id: "ablate-out" });
      const heads = this.heads.filter((h) => h !== "mean");
      const zero = el("button", { type: "button", id: "run-ablate", text: `Zero layer ${this.layer}, heads ${heads.join(", ") || "–"}`, disabled: !heads.length || undefined,
        on: { click: () => this.runInto(out, async () => {
          const res = await this.src.ablate({ texts: [this.req.text], model: this.req.model, interventions: [{ type: "zero", heads: heads.map((h) => [this.layer, h]) }] });
          const r = res.results[0];
          return el("table", { id: "ablate-result" }, el("caption", { text: "prediction change when these heads output zero" }), el("tbody", {},
            ...[["target", r.target_label], ["p before", fmt(r.base_prob)], ["p after", fmt(r.new_prob)], ["probability shift", fmt(r.prob_shift)],
              ["KL(before ‖ after), nats", fmt(r.kl, 4)], ["logit difference", fmt(r.logit_diff)], ["prediction flipped", r.flipped ? "yes" : "no"]]
              .map(([a, b]) => el("tr", {}, el("th", { scope: "row", class: "role", text: a }), el("td", { text: String(b) })))));
        }) } });
      const imp = el("button", { type: "button", class: "secondary", id: "run-importance", text: "Head importance (ablation, every head)",
        on: { click: () => this.runInto(out, async () => {
          const res = await this.src.ablate({ texts: [this.req.text], model: this.req.model, importance: "ablation" });
          return this.headGrid(res.importance.layers, res.importance.heads, res.importance.scores, "importance-grid", `head importance (${res.importance.method}, Michel et al. 2019)`);
        }) } });
      return this.panel("Ablate: what changes when heads are switched off", el("p", { class: "hint", text: "Select heads in the bar above (the current layer). POST /v1/ablate." }),
        el("div", { class: "bar-inline" }, zero, imp), out);
    }
    headGrid(layers, heads, scores, id, caption) {
      const names = Object.keys(scores), wrap = el("div", { id });
      const sel = el("select", { "aria-label": "score" }, ...names.map((n) => el("option", { value: n }, n)));
      const holder = el("div", {});
      const draw = () => {
        const m = scores[sel.value], flat = m.flat().filter((v) => v !== null && Number.isFinite(v)), lim = Math.max(1e-12, ...flat.map(Math.abs)), signed = flat.some((v) => v < 0);
        const tb = el("tbody");
        layers.forEach((l, li) => tb.append(el("tr", {}, el("th", { scope: "row", text: "L" + l }), ...heads.map((h, hi) => {
          const v = m[li][hi], td = el("td", { text: fmtSig(v), title: `layer ${l} head ${h}: ${fmt(v, 4)}` });
          if (v !== null && Number.isFinite(v)) { const g = Math.round(Math.sqrt(Math.abs(v) / lim) * 255) * 3; td.style.background = signed ? divColour(v, lim) : `rgb(${LUT[g]},${LUT[g + 1]},${LUT[g + 2]})`; if (!signed && Math.abs(v) / lim > 0.5) td.style.color = "#fff"; }
          return td; }))));
        holder.textContent = "";
        holder.append(el("table", { class: "grid" }, el("caption", { text: `${caption}: ${sel.value} (rows: layers, columns: heads)` }),
          el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "" }), ...heads.map((h) => el("th", { scope: "col", text: "H" + h })))), tb));
      };
      sel.addEventListener("change", draw); draw();
      if (names.length > 1) wrap.append(el("label", {}, "score", sel));
      wrap.append(holder);
      return wrap;
    }
    renderAnalyses() {
      const list = this.analysisList || [], out = el("div", { id: "analysis-out" });
      const sel = el("select", { id: "analysis-name", "aria-label": "analysis" }, ...list.map((a) => el("option", { value: a.name, title: a.summary }, a.name)));
      const summary = el("p", { class: "hint" });
      const showSummary = () => { const a = list.find((x) => x.name === sel.value); summary.textContent = a ? a.summary : ""; };
      sel.addEventListener("change", showSummary); showSummary();
      const run = el("button", { type: "button", id: "run-analysis", text: "Run", on: { click: () => this.runInto(out, async () => {
        const a = list.find((x) => x.name === sel.value) || { params: {} };
        const params = "stream" in (a.params || {}) ? { stream: this.stream } : {};
        return this.analysisResult(await this.src.analysis(sel.value, { trace_id: this.src.id, params }));
      }) } });
      const other = el("textarea", { id: "compare-text", "aria-label": "second text to compare", placeholder: "a second text: compared head by head with the analysed one" });
      other.value = this.req ? this.req.text.replace(/\.$/, "") + " again." : "";
      const noCompare = !list.some((a) => a.name === "compare") || undefined;
      const align = el("select", { id: "compare-align", "aria-label": "how to line up the two inputs" },
        el("option", { value: "position" }, "by position (equal lengths)"), el("option", { value: "tokens" }, "shared tokens"));
      const here = { id: this.src.id, model: this.s.model, texts: this.s.texts, streams: this.s.streams };
      const compare = async (a, b) => {
        const stream = a.streams[this.stream] && b.streams[this.stream] ? this.stream : undefined;
        return this.compareResult(await this.src.compare({ a: a.id, b: b.id, stream, align: align.value }), a, b);
      };
      const cmp = el("button", { type: "button", id: "run-compare", text: "Compare texts", disabled: noCompare,
        on: { click: () => this.runInto(out, async () => compare(here, await this.src.traceOnly({ ...this.req, text: other.value }))) } });
      // two saved traces (.safetensors, as the 'trace' link and `attnscope analyze --save-trace` write them)
      const fileA = el("input", { type: "file", id: "compare-trace-a", accept: ".safetensors", "aria-label": "trace A: a .safetensors file (empty: this view's trace)" });
      const fileB = el("input", { type: "file", id: "compare-trace-b", accept: ".safetensors", "aria-label": "trace B: a .safetensors file" });
      const cmpT = el("button", { type: "button", id: "run-compare-traces", text: "Compare traces", disabled: noCompare,
        on: { click: () => this.runInto(out, async () => {
          if (!fileB.files.length) throw new ApiError("choose trace B (a .safetensors file) first");
          const a = fileA.files.length ? await this.src.uploadTrace(fileA.files[0]) : here;
          return compare(a, await this.src.uploadTrace(fileB.files[0]));
        }) } });
      return this.panel("Analyses of this trace (the server's registry) and comparing two texts or two traces",
        el("div", { class: "bar-inline" }, el("label", {}, "analysis", sel), run), summary,
        el("div", { class: "bar-inline" }, el("label", {}, "compare with", other), el("label", {}, "line up", align), cmp),
        el("div", { class: "bar-inline" }, el("label", {}, "trace A (empty: this view)", fileA), el("label", {}, "trace B", fileB), cmpT),
        el("p", { class: "hint", text: "Saved traces: .safetensors files from the 'trace' link, attnscope analyze --save-trace or AttentionTrace.save(). Head-by-head differences need the same layers and heads (the same model); by position also the same length." }),
        out);
    }
    compareResult(res, a, b) {
      const side = (x) => `${x.model || "trace"} — “${Object.values(x.texts || {}).join(" / ")}”` + (x.uploaded ? " (uploaded)" : "");
      const wrap = el("div", { id: "compare-result" });
      wrap.append(el("p", { class: "hint", id: "compare-sides", text: `A: ${side(a)}\nB: ${side(b)}` }));
      wrap.append(this.analysisResult(res));
      return wrap;
    }
    analysisResult(res) {
      const hs = res.type === "HeadScores" ? res : res.divergence && res.divergence.type === "HeadScores" ? res.divergence : null;
      const wrap = el("div", {});
      if (res.type === "TraceComparison") wrap.append(el("p", { class: "hint", text: `compare (${(res.meta || {}).align || ""}): Jensen–Shannon divergence and mean |a − b| per head; tokens A: ${(res.query_tokens || []).join(" ")}` }));
      if (hs) wrap.append(this.headGrid(hs.layers, hs.heads, hs.scores, "analysis-grid", res.name || hs.name));
      if (hs && hs.meta && hs.meta.labels) wrap.append(el("p", { class: "hint", text: "labels of the current layer: " + hs.meta.labels[hs.layers.indexOf(this.layer)].join(" · ") }));
      if (!hs) { const s = JSON.stringify(res, null, 1); wrap.append(el("pre", { class: "json", text: s.length > 6000 ? s.slice(0, 6000) + "\n…" : s })); }
      return wrap;
    }

    // ---------------------------------------------------------------- long inputs: pooled overview and zoom
    async runLong(req) {
      this.analyzeBtn.disabled = this.genBtn.disabled = true;
      this.setStatus("Pooled overview of a long input (no full maps)…");
      this.root.dataset.state = "loading";
      const t0 = performance.now();
      try {
        const ov = await this.src.pooled({ text: req.text, model: req.model, truncate: req.truncate, grid: 64 });
        this.req = { ...req, long: true };
        this.s = { model: ov.model, pooled: true, streams: { self: { layers: ov.layers, heads: ov.heads, query_tokens: ov.tokens, key_tokens: ov.tokens, stats: {},
          mask: ov.causal ? { diagonal: 0, windows: {} } : null } } };
        this.pooledState = { full: ov, zoom: null, head: null };
        this.stream = "self"; this.streamSel.textContent = ""; this.streamSel.append(el("option", { value: "self" }, "self")); this.streamSel.parentElement.hidden = true;
        this.layerSel.textContent = ""; for (const l of ov.layers) this.layerSel.append(el("option", { value: l }, "layer " + l));
        if (!ov.layers.includes(this.layer)) this.layer = ov.layers[0];
        this.layerSel.value = this.layer; this.heads = [ov.heads[0]]; this.buildHeadBox();
        this.bar.hidden = false; this.mainEl.hidden = false; this.stepBox.hidden = true; this.pairFilterLabel.hidden = true;
        this.view = "long";
        for (const b of this.tabs.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.view === "long"));
        await this.render();
        this.renderStats();
        this.setStatus(`${ov.model}: ${ov.n_query} tokens · pooled overview ready in ${((performance.now() - t0) / 1000).toFixed(2)} s (server ${ov.timing.pooled_s} s)`);
      } catch (e) { this.setStatus(e.message, true); this.root.dataset.state = "error"; }
      finally { this.analyzeBtn.disabled = this.genBtn.disabled = false; this.onModelChange(); }
    }
    async renderLong() {
      const ps = this.pooledState;
      if (!ps) return el("p", { class: "hint", text: "Tick “long input” and press Analyze: a pooled overview of every head without full maps (for thousands of tokens)." });
      if (!ps.zoom) return this.pooledGrid(ps.full);
      return this.pooledZoom(ps.zoom);
    }
    pooledGrid(ov) {
      const [L, H, gq, gk] = ov.shape, cell = Math.max(36, Math.min(64, Math.floor((this.viewEl.clientWidth - 140) / H) - 4)), gap = 4, left = 40, top = 16, dpr = DPR();
      const W = left + H * (cell + gap) + 80, Hh = Math.max(top + L * (cell + gap), 200);
      const c = el("canvas", { id: "pooled-view", width: W * dpr, height: Hh * dpr, role: "img", "aria-label": `pooled overview: ${L} layers × ${H} heads, ${gq}×${gk} tiles each; click a head to zoom` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d"); ctx.scale(dpr, dpr); ctx.imageSmoothingEnabled = false;
      ctx.font = "10px system-ui, sans-serif"; ctx.fillStyle = "#5b6573"; ctx.textAlign = "center";
      for (let h = 0; h < H; h++) ctx.fillText("H" + ov.heads[h], left + h * (cell + gap) + cell / 2, 10);
      const size = gq * gk, maskFn = ov.causal ? (i, j) => j * ov.tile[1] > (i + 1) * ov.tile[0] - 1 : null;
      for (let l = 0; l < L; l++) {
        ctx.fillStyle = "#5b6573"; ctx.textAlign = "right"; ctx.fillText("L" + ov.layers[l], left - 4, top + l * (cell + gap) + cell / 2);
        for (let h = 0; h < H; h++) ctx.drawImage(paint(ov.max.subarray((l * H + h) * size, (l * H + h + 1) * size), gq, gk, false, "sqrt", maskFn), left + h * (cell + gap), top + l * (cell + gap), cell, cell);
      }
      colourBar(ctx, left + H * (cell + gap) + 4, top, 150, "sqrt", !!maskFn);
      const hit = (e) => { const r = c.getBoundingClientRect(), x = e.clientX - r.left - left, y = e.clientY - r.top - top, h = Math.floor(x / (cell + gap)), l = Math.floor(y / (cell + gap));
        return x >= 0 && y >= 0 && h < H && l < L ? { l, h } : null; };
      c.addEventListener("mousemove", (e) => { const p = hit(e); if (!p) { this.hideTip(); return; } this.showTip(e, `layer ${ov.layers[p.l]} · head ${ov.heads[p.h]}\ntiles of ${ov.tile[0]}×${ov.tile[1]} tokens, colour = the tile's max weight\nclick: zoom into this head`); });
      c.addEventListener("mouseleave", () => this.hideTip());
      c.addEventListener("click", (e) => { const p = hit(e); if (!p) return; this.hideTip(); this.layer = ov.layers[p.l]; this.heads = [ov.heads[p.h]]; this.layerSel.value = this.layer; this.buildHeadBox(); this.zoomTo(ov.region); });
      return el("figure", {}, el("figcaption", { text: `${ov.n_query} tokens: every layer and head, ${gq}×${gk} tiles of ${ov.tile[0]}×${ov.tile[1]} tokens (tile max; square-root scale). Click a head to zoom; the full maps are never built.` }), c);
    }
    async zoomTo(region) {
      const ps = this.pooledState, head = this.numericHead();
      this.root.dataset.state = "loading";
      try {
        const z = await this.src.pooled({ text: this.req.text, model: this.req.model, truncate: this.req.truncate, grid: 64, region, layers: [this.layer], heads: [head] });
        ps.zoom = z; ps.history = (ps.history || []).concat([region]);
        await this.render();
      } catch (e) { this.setStatus(e.message, true); this.root.dataset.state = "ready"; }
    }
    pooledZoom(z) {
      const [, , gq, gk] = z.shape, [q0, q1, k0, k1] = z.region, tq = z.tile[0], tk = z.tile[1];
      const exact = tq === 1 && tk === 1, data = z.max, dpr = DPR();
      const px = Math.min(560, Math.max(240, this.viewEl.clientWidth - 260)), cell = px / Math.max(gq, gk);
      const left = 120, top = 110, W = left + gk * cell + 90, Hh = top + gq * cell + 10;
      const c = el("canvas", { id: "pooled-zoom", class: "heatmap", width: W * dpr, height: Hh * dpr, role: "img",
        "aria-label": `zoom: queries ${q0}–${q1 - 1}, keys ${k0}–${k1 - 1}; drag a rectangle to zoom further` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d"); ctx.scale(dpr, dpr); ctx.imageSmoothingEnabled = false;
      const maskFn = z.causal ? (i, j) => k0 + j * tk > q0 + (i + 1) * tq - 1 : null;
      const draw = (sel) => {
        ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, Hh);
        ctx.drawImage(paint(data, gq, gk, false, exact ? scaleOf(this.scale, k1 - k0) : "sqrt", maskFn), left, top, gk * cell, gq * cell);
        ctx.font = "10px system-ui, sans-serif"; ctx.fillStyle = "#1b2330"; ctx.textBaseline = "middle";
        const sQ = stride(gq, gq * cell, 12), sK = stride(gk, gk * cell, 12);
        ctx.textAlign = "right";
        for (let i = 0; i < gq; i += sQ) { const a = q0 + i * tq; ctx.fillText(tq === 1 ? clipLabel(z.tokens[a], 16) : `${a}–${Math.min(q1, a + tq) - 1}`, left - 4, top + (i + 0.5) * cell); }
        for (let j = 0; j < gk; j += sK) { const a = k0 + j * tk; ctx.save(); ctx.translate(left + (j + 0.5) * cell, top - 4); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left"; ctx.fillText(tk === 1 ? clipLabel(z.tokens[a], 16) : `${a}–${Math.min(k1, a + tk) - 1}`, 0, 0); ctx.restore(); }
        ctx.fillStyle = "#5b6573"; ctx.textAlign = "left"; ctx.fillText("key →", left, 8);
        ctx.save(); ctx.translate(8, top); ctx.rotate(-Math.PI / 2); ctx.textAlign = "right"; ctx.fillText("query ↓", 0, 0); ctx.restore();
        colourBar(ctx, left + gk * cell + 8, top, Math.min(200, gq * cell), exact ? scaleOf(this.scale, k1 - k0) : "sqrt", !!maskFn);
        if (sel) { ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5; ctx.strokeRect(left + Math.min(sel[0], sel[2]) * cell, top + Math.min(sel[1], sel[3]) * cell, (Math.abs(sel[2] - sel[0]) + 1) * cell, (Math.abs(sel[3] - sel[1]) + 1) * cell); }
      };
      draw(null);
      const cellAt = (e) => { const r = c.getBoundingClientRect(); return [Math.floor((e.clientX - r.left - left) / cell), Math.floor((e.clientY - r.top - top) / cell)]; };
      let start = null;
      c.addEventListener("mousedown", (e) => { const [j, i] = cellAt(e); if (i >= 0 && j >= 0 && i < gq && j < gk) start = [j, i]; });
      c.addEventListener("mousemove", (e) => {
        const [j, i] = cellAt(e);
        if (start) { draw([start[0], start[1], Math.max(0, Math.min(gk - 1, j)), Math.max(0, Math.min(gq - 1, i))]); return; }
        if (i < 0 || j < 0 || i >= gq || j >= gk) { this.hideTip(); return; }
        const a = q0 + i * tq, b = k0 + j * tk, v = data[i * gk + j], mn = z.mean[i * gk + j];
        this.showTip(e, (tq === 1 ? `query ${a}: ${z.tokens[a]}` : `queries ${a}–${Math.min(q1, a + tq) - 1}`) + "\n" + (tk === 1 ? `key ${b}: ${z.tokens[b]}` : `keys ${b}–${Math.min(k1, b + tk) - 1}`)
          + (maskFn && maskFn(i, j) ? "\nmasked" : exact ? `\nweight ${v.toFixed(5)}` : `\nmax ${v.toFixed(4)} · mean ${mn.toFixed(5)}`) + "\ndrag: zoom into a region");
      });
      c.addEventListener("mouseup", (e) => {
        if (!start) return;
        const [j, i] = cellAt(e), s = start; start = null;
        const a0 = Math.max(0, Math.min(s[1], i)), a1 = Math.min(gq - 1, Math.max(s[1], i)), b0 = Math.max(0, Math.min(s[0], j)), b1 = Math.min(gk - 1, Math.max(s[0], j));
        const region = [q0 + a0 * tq, Math.min(q1, q0 + (a1 + 1) * tq), k0 + b0 * tk, Math.min(k1, k0 + (b1 + 1) * tk)];
        if (region[1] - region[0] >= 1 && region[3] - region[2] >= 1 && (region[1] - region[0] < q1 - q0 || region[3] - region[2] < k1 - k0)) this.zoomTo(region); else draw(null);
      });
      c.addEventListener("mouseleave", () => { this.hideTip(); });
      const back = el("button", { type: "button", class: "secondary", id: "zoom-out", text: "whole map", on: { click: () => this.zoomTo(this.pooledState.full.region) } });
      const all = el("button", { type: "button", class: "secondary", id: "zoom-all", text: "all heads", on: { click: () => { this.pooledState.zoom = null; this.render(); } } });
      return el("figure", {}, el("div", { class: "bar-inline" }, all, back),
        el("figcaption", { text: `layer ${z.layers[0]} · head ${z.heads[0]}: queries ${q0}–${q1 - 1} × keys ${k0}–${k1 - 1}` + (exact ? " (exact weights)" : `, tiles of ${tq}×${tk} (colour: tile max, √ scale)`) + ". Drag a rectangle to zoom in." }), c);
    }

    // ---------------------------------------------------------------- statistics panel and generation steps
    renderStats() {
      if (!this.s) return;
      this.side.textContent = "";
      if (this.s.pooled) {
        const ov = this.pooledState.full;
        this.side.append(el("h2", { text: "long input" }), el("p", { class: "hint", text: `${ov.n_query} tokens, ${ov.layers.length} layers × ${ov.heads.length} heads. The overview keeps, per tile, the max and the mean weight, computed block by block during the forward pass; each zoom runs the model again for one head.` }));
        return;
      }
      const st = this.s.streams[this.stream], stats = st.stats || {}, li = st.layers.indexOf(this.layer);
      const role = this.roles[this.stream];
      this.side.append(el("h2", { text: `layer ${this.layer} · per-head statistics` }));
      this.side.append(el("p", { class: "hint", text: `${st.query_tokens.length} query × ${st.key_tokens.length} key tokens. Entropy in nats (mean over query rows); max = mean largest weight (concentration); first = mass on token 0; dist = mean |query − key|.` }));
      if (!stats.entropy) { this.side.append(el("p", { class: "hint", text: "no statistics" })); this.renderTimeline(); return; }
      const cols = [["H", null, "head"], ["entropy", "entropy", "entropy (nats)"], ["norm", "normalized_entropy", "normalised entropy"], ["max", "max", "mean largest weight"],
        ["first", "first_token_mass", "mass on the first token"], ["dist", "mean_distance", "mean distance in tokens"]];
      const thead = el("thead", {}, el("tr", {}, ...cols.map(([c, , full]) => el("th", { scope: "col", title: full, "aria-label": full, text: c })), role ? el("th", { scope: "col", class: "role", text: "role" }) : null));
      const tbody = el("tbody");
      st.heads.forEach((h, hi) => {
        const on = this.heads.includes(h);
        const tr = el("tr", { class: on ? "sel" : "", "data-head": h, tabindex: "0", "aria-selected": String(on), "aria-label": `head ${h}: select` });
        tr.append(el("th", { scope: "row", text: String(h) }));
        for (const [, key] of cols.slice(1)) tr.append(el("td", { text: fmt(stats[key][li][hi], key === "mean_distance" ? 1 : 3) }));
        if (role) tr.append(el("td", { class: "role", text: roleText(role, li, hi) }));
        const pick = (e) => { this.selectHead(this.layer, h, e.shiftKey); this.renderStats(); if (this.view === "model" || this.view === "rollout") this.setView("heatmap"); else this.render(); };
        tr.addEventListener("click", pick);
        tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); e.stopPropagation(); pick(e); } });
        tbody.append(tr);
      });
      this.side.append(el("table", { id: "stats-table" }, el("caption", { text: `per-head statistics of layer ${this.layer}; press Enter on a row to open that head` }), thead, tbody));
      const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
      this.side.append(el("p", { class: "hint", text: `layer mean: entropy ${fmt(mean(stats.entropy[li]))}, max ${fmt(mean(stats.max[li]))}` }));
      this.renderTimeline();
      const g = this.s.generation;
      if (g) {
        this.side.append(el("h2", { text: "generated tokens" }));
        const tb = el("tbody");
        const toks = st.query_tokens;
        g.token_ids.forEach((_, i) => {
          const tr = el("tr", { class: +this.step.value === i ? "sel" : "" }, el("td", { text: String(i) }), el("td", { class: "role", text: toks[g.prompt_length + i] }),
            el("td", { text: g.token_probs[i] < 0.001 ? Number(g.token_probs[i]).toExponential(1) : fmt(g.token_probs[i]) }), el("td", { text: fmt(g.step_entropies[i]) }));
          tr.addEventListener("click", () => { this.step.value = i; this.onStep(); });
          tb.append(tr);
        });
        this.side.append(el("table", {}, el("caption", { text: "generated tokens: probability and entropy of each step" }), el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "step" }), el("th", { scope: "col", text: "token" }), el("th", { scope: "col", text: "p" }), el("th", { scope: "col", text: "entropy" }))), tb));
        this.side.append(el("p", { class: "hint", text: "generated text: " + g.text }));
      }
    }

    onStep() {
      const g = this.s && this.s.generation;
      if (!g) return;
      const i = +this.step.value, st = this.s.streams[this.stream];
      const qi = this.stream === "cross" || this.stream === "decoder_self" || this.stream === "self" ? g.prompt_length + i - 1 : null;
      // the row that *produced* token i is the position before it (its query predicted it)
      this.focus = qi !== null && qi >= 0 && qi < st.query_tokens.length ? qi : null;
      this.stepOut.textContent = `${i + 1}/${g.token_ids.length}: ${st.query_tokens[g.prompt_length + i] || ""}`;
      this.stepOut.title = this.focus !== null ? `lines of the query that produced it: ${st.query_tokens[this.focus]} (position ${this.focus})` : "";
      if (this.view === "model" || this.view === "rollout") this.setView("head"); else this.render();
      this.renderStats();
    }

    async loadRoles() {
      const st = this.s.streams[this.stream], stream = this.stream;
      if (this.roles[stream] !== undefined || st.query_tokens.length !== st.key_tokens.length || stream === "cross") return;
      if (this.opt.form && !(this.analysisNames || []).includes("head_roles")) return;
      this.roles[stream] = null;
      try {
        const r = await this.src.headRoles(stream);
        if (r && this.s.streams[stream] === st) { this.roles[stream] = r; this.renderStats(); }
      } catch (e) { /* roles are optional */ }
    }
  }

  async function mount(root, source, options) {
    const ex = new Explorer(root, source, options);
    root.attnscope = ex;
    return ex.init();
  }

  global.AttnscopeExplorer = { mount, Explorer, ServerSource, EmbeddedSource, decodeContainer };
})(typeof window !== "undefined" ? window : this);
