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
    constructor(base) { this.base = base || ""; this.id = null; this.bytes = 0; }
    async _json(path, body) {
      const r = await fetch(this.base + path, body === undefined ? {} : {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const j = await r.json().catch(() => ({ error: { message: r.statusText } }));
      if (!r.ok) throw new ApiError((j.error && j.error.message) || ("HTTP " + r.status));
      return j;
    }
    async _bin(path) {
      const r = await fetch(this.base + path);
      if (!r.ok) { const j = await r.json().catch(() => ({})); throw new ApiError((j.error && j.error.message) || ("HTTP " + r.status)); }
      const buf = await r.arrayBuffer();
      this.bytes += buf.byteLength;
      return decodeContainer(buf);
    }
    models() { return this._json("/v1/models"); }
    analyses() { return this._json("/v1/analyses"); }
    async trace(req) { const s = await this._json("/v1/traces", req); this.id = s.id; return s; }
    async generate(req) { const s = await this._json("/v1/generate", req); this.id = s.id; return s; }
    _q(o) { return Object.entries(o).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&"); }
    async overview(stream) {
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
  }

  class EmbeddedSource {
    /* data = {summary, blobs: {name: base64 container}} written by attnscope.render.notebook */
    constructor(data) { this.data = data; this.cache = {}; }
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
  }

  // ------------------------------------------------------------------ drawing helpers
  const LUT = (() => {  // white -> deep blue, perceptually even enough for weights in [0, 1]
    const stops = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]], out = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const t = i / 255 * (stops.length - 1), k = Math.min(stops.length - 2, Math.floor(t)), f = t - k;
      for (let c = 0; c < 3; c++) out[i * 3 + c] = stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f;
    }
    return out;
  })();
  const GAMMA = new Uint8Array(256);  // sqrt contrast so weak but real attention stays visible
  for (let i = 0; i < 256; i++) GAMMA[i] = Math.round(Math.sqrt(i / 255) * 255);
  const HEAD_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939"];

  function paint(values, rows, cols, isByte) {  // -> offscreen canvas rows x cols
    const c = document.createElement("canvas");
    c.width = cols; c.height = rows;
    const ctx = c.getContext("2d"), img = ctx.createImageData(cols, rows), px = img.data;
    for (let i = 0, n = rows * cols; i < n; i++) {
      const v = isByte ? values[i] : Math.max(0, Math.min(255, Math.round(values[i] * 255)));
      const g = GAMMA[v] * 3;
      px[i * 4] = LUT[g]; px[i * 4 + 1] = LUT[g + 1]; px[i * 4 + 2] = LUT[g + 2]; px[i * 4 + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return c;
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
  const DPR = () => Math.min(2, global.devicePixelRatio || 1);

  // ------------------------------------------------------------------ the explorer
  class Explorer {
    constructor(root, source, options) {
      this.root = root; this.src = source; this.opt = Object.assign({ form: true }, options || {});
      this.s = null; this.stream = null; this.layer = 0; this.heads = [0]; this.view = "model";
      this.focus = null; this.roles = {}; this.overviews = {}; this.maps = new Map(); this.models = [];
      this.seq = 0;
      this.build();
    }

    // ---------------------------------------------------------------- DOM
    build() {
      const r = this.root;
      r.classList.add("atsc");
      r.textContent = "";
      this.tip = el("div", { class: "tooltip", role: "tooltip" });
      this.status = el("div", { class: "status", role: "status", "aria-live": "polite" });
      if (this.opt.form) {
        this.modelSel = el("select", { id: "model", "aria-label": "model", on: { change: () => this.onModelChange() } });
        this.text = el("textarea", { id: "text", placeholder: "Type a sentence…", "aria-label": "text" });
        this.text.value = "The quick brown fox jumps over the lazy dog.";
        this.pair = el("input", { id: "text-pair", type: "text", placeholder: "optional second sentence", "aria-label": "second sentence" });
        this.target = el("input", { id: "target", type: "text", placeholder: "target text (teacher forcing)", "aria-label": "target" });
        this.analyzeBtn = el("button", { id: "analyze", type: "submit", text: "Analyze" });
        this.maxNew = el("input", { id: "max-new", type: "number", min: 1, max: 256, value: 12, "aria-label": "new tokens" });
        this.genBtn = el("button", { id: "generate", type: "button", class: "secondary", text: "Generate", on: { click: () => this.run(true) } });
        this.pairLabel = el("label", {}, "second sentence", this.pair);
        this.targetLabel = el("label", { hidden: true }, "target", this.target);
        this.genLabel = el("label", { hidden: true }, "new tokens", el("span", { class: "gen" }, this.maxNew, this.genBtn));
        const form = el("form", { class: "form", on: { submit: (e) => { e.preventDefault(); this.run(false); } } },
          el("header", {}, el("h1", { text: "attnscope" }), el("label", {}, "model", this.modelSel),
            el("label", {}, "text", this.text), this.pairLabel, this.targetLabel, this.analyzeBtn, this.genLabel));
        r.append(form);
      }
      this.streamSel = el("select", { id: "stream", "aria-label": "stream", on: { change: () => { this.stream = this.streamSel.value; this.onStream(); } } });
      this.layerSel = el("select", { id: "layer", "aria-label": "layer", on: { change: () => { this.layer = +this.layerSel.value; this.render(); this.renderStats(); } } });
      this.headBox = el("div", { class: "heads", id: "heads", role: "group", "aria-label": "heads" });
      this.tabs = el("div", { class: "tabs", role: "group", "aria-label": "view" });
      for (const [v, label] of [["model", "Model view"], ["head", "Head view"], ["heatmap", "Heatmap"], ["rollout", "Rollout"]])
        this.tabs.append(el("button", { type: "button", "data-view": v, "aria-pressed": String(v === this.view), text: label, on: { click: () => this.setView(v) } }));
      this.scaleSel = el("select", { id: "scale", "aria-label": "colour scale", on: { change: () => { this.scale = this.scaleSel.value; this.render(); } } },
        el("option", { value: "auto" }, "auto"), el("option", { value: "absolute" }, "absolute weight"), el("option", { value: "row" }, "÷ row max"));
      this.scale = "auto";
      this.stepBox = el("span", { class: "gen", hidden: true });
      this.step = el("input", { id: "step", type: "range", min: 0, max: 0, value: 0, "aria-label": "generated token", on: { input: () => this.onStep() } });
      this.stepOut = el("output", { id: "step-token" });
      this.stepBox.append(el("span", { class: "hint", text: "step" }), this.step, this.stepOut);
      this.bar = el("div", { class: "bar", hidden: true },
        el("label", {}, "stream", this.streamSel), el("label", {}, "layer", this.layerSel),
        el("label", {}, "heads (several = side by side)", this.headBox), this.tabs,
        el("label", { title: "colours of heatmaps; hover always shows the exact weight" }, "colour scale", this.scaleSel), this.stepBox);
      this.viewEl = el("div", { class: "view", id: "view" });
      this.side = el("aside", { class: "side", id: "stats" });
      this.mainEl = el("div", { class: "main", hidden: true }, this.viewEl, this.side);
      this.caveat = el("p", { class: "caveat", id: "caveat", role: "note", text: CAVEAT });
      r.append(this.status, this.bar, this.mainEl, this.caveat, this.tip);
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
        try { this.analysisNames = (await this.src.analyses()).map((a) => a.name); } catch (e) { this.analysisNames = []; }
      } else {
        this.analysisNames = [];
        const summary = await this.src.trace();
        const texts = Object.entries(summary.texts || {}).map(([k, v]) => `${k}: ${v}`).join("  ·  ");
        this.root.insertBefore(el("header", {}, el("h1", { text: "attnscope" }), el("span", { class: "hint", text: `${summary.model || "trace"} — ${texts}` })), this.status);
        await this.load(summary);
      }
      return this;
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

    async run(generate) {
      const text = this.text.value;
      if (!text.trim()) { this.setStatus("Type a sentence first.", true); return; }
      const model = this.modelSel.value || undefined;
      this.analyzeBtn.disabled = this.genBtn.disabled = true;
      this.setStatus(generate ? "Generating…" : "Running the model…");
      this.root.dataset.state = "loading";
      const t0 = performance.now();
      try {
        const req = generate ? { prompt: text, model, max_new_tokens: +this.maxNew.value || 12 }
          : { text, model, text_pair: (!this.pairLabel.hidden && this.pair.value.trim()) ? this.pair.value : undefined,
              target: (!this.targetLabel.hidden && this.target.value.trim()) ? this.target.value : undefined };
        const summary = generate ? await this.src.generate(req) : await this.src.trace(req);
        await this.load(summary);
        this.setStatus(`${summary.model}: ${this.nTokens()} tokens · ready in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
      } catch (e) {
        this.setStatus(e.message, true);
        this.root.dataset.state = "error";
      } finally { this.analyzeBtn.disabled = this.genBtn.disabled = false; this.onModelChange(); }
    }

    nTokens() { const st = this.s.streams[this.stream]; return st.query_tokens.length; }

    async load(summary) {
      this.seq++;
      this.s = summary; this.overviews = {}; this.maps = new Map(); this.roles = {}; this.focus = null;
      const streams = Object.keys(summary.streams);
      this.streamSel.textContent = "";
      for (const s of streams) this.streamSel.append(el("option", { value: s }, s));
      this.stream = streams.includes("self") ? "self" : streams[0];
      this.streamSel.value = this.stream;
      this.streamSel.parentElement.hidden = streams.length < 2;
      const g = summary.generation;
      this.stepBox.hidden = !g;
      if (g) { this.step.max = Math.max(0, g.token_ids.length - 1); this.step.value = 0; }
      this.bar.hidden = false; this.mainEl.hidden = false;
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
      this.loadRoles();
    }

    buildHeadBox() {
      const st = this.s.streams[this.stream];
      this.headBox.textContent = "";
      for (const h of [...st.heads, "mean"]) {
        const cb = el("input", { type: "checkbox", value: h, "data-head": h });
        cb.checked = this.heads.includes(h);
        const lab = el("label", { class: cb.checked ? "on" : "", title: h === "mean" ? "mean over the layer's heads" : "head " + h }, cb, h === "mean" ? "mean" : String(h));
        cb.addEventListener("change", () => {
          const v = h;
          if (cb.checked) { if (!this.heads.includes(v)) this.heads.push(v); } else this.heads = this.heads.filter((x) => x !== v);
          if (!this.heads.length) { this.heads = [v]; cb.checked = true; }
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
      this.buildHeadBox();
    }

    setView(v) {
      this.view = v;
      for (const b of this.tabs.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.view === v));
      this.render();
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
        if (this.view === "model") node = await this.renderModel();
        else if (this.view === "heatmap") node = await this.renderHeatmaps();
        else if (this.view === "head") node = await this.renderLines();
        else node = await this.renderRollout();
        if (seq !== this.seq) return;  // a newer render started meanwhile
        this.viewEl.textContent = "";
        this.viewEl.append(node);
        this.root.dataset.state = "ready";
        this.root.dataset.view = this.view;
      } catch (e) {
        if (seq !== this.seq) return;
        this.viewEl.textContent = "";
        this.viewEl.append(el("p", { class: "hint", text: e.message }));
        this.root.dataset.state = "ready";
      }
    }

    // ---------------------------------------------------------------- model view: layers x heads thumbnails
    async renderModel() {
      if (!this.overviews[this.stream]) this.overviews[this.stream] = this.src.overview(this.stream);
      const ov = await this.overviews[this.stream];
      const [L, H, sq, sk] = ov.shape, st = this.s.streams[this.stream];
      const cell = Math.max(40, Math.min(72, Math.floor((this.viewEl.clientWidth - 60) / (H + 1)) - 6)), gap = 6, left = 44, top = 18;
      const cw = Math.round(cell * Math.min(1, sk / sq)), ch = Math.round(cell * Math.min(1, sq / sk));
      const W = left + (H + 1) * (cell + gap), Hh = top + L * (cell + gap), dpr = DPR();
      const c = el("canvas", { id: "model-view", width: W * dpr, height: Hh * dpr, "aria-label": `model view: ${L} layers × ${H} heads` });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d");
      ctx.scale(dpr, dpr); ctx.imageSmoothingEnabled = false;
      ctx.fillStyle = "#5b6573"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "center";
      for (let h = 0; h < H; h++) ctx.fillText("H" + ov.heads[h], left + h * (cell + gap) + cell / 2, 12);
      ctx.fillText("mean", left + H * (cell + gap) + cell / 2, 12);
      ctx.textAlign = "right";
      const size = sq * sk;
      for (let l = 0; l < L; l++) {
        const y = top + l * (cell + gap);
        ctx.fillStyle = "#5b6573"; ctx.fillText("L" + ov.layers[l], left - 6, y + cell / 2 + 4);
        const mean = new Float32Array(size);
        for (let h = 0; h < H; h++) {
          const t = ov.thumbs.subarray((l * H + h) * size, (l * H + h + 1) * size);
          for (let i = 0; i < size; i++) mean[i] += t[i] / 255 / H;
          ctx.drawImage(paint(t, sq, sk, true), left + h * (cell + gap), y, cw, ch);
        }
        ctx.drawImage(paint(mean, sq, sk, false), left + H * (cell + gap), y, cw, ch);
      }
      // selection outline
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
        if (role) lines.push("role: " + role.meta.labels[p.l][p.hi]);
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
      const wrap = el("figure", {}, el("figcaption", { text: `${this.stream}: every layer (rows) and head (columns); thumbnails ${sq}×${sk}, max-pooled. Hover for statistics, click a head to open it.` }), c);
      return wrap;
    }

    // ---------------------------------------------------------------- heatmaps (several heads side by side)
    async renderHeatmaps() {
      const st = this.s.streams[this.stream], q = st.query_tokens, k = st.key_tokens;
      const maps = await Promise.all(this.heads.map((h) => this.getMap(this.layer, h)));
      const panels = el("div", { class: "panels" });
      const avail = Math.max(240, (this.viewEl.clientWidth || 800) - 20);
      const per = this.heads.length === 1 ? Math.min(avail, 640) : Math.min(420, Math.floor(avail / Math.min(this.heads.length, 3)) - 12);
      this.heads.forEach((h, i) => panels.append(this.heatmap(maps[i].data, q, k, per,
        `layer ${this.layer} · ${h === "mean" ? "mean over heads" : "head " + h}`, h)));
      return panels;
    }

    heatmap(data, qTok, kTok, maxPx, caption, head) {
      const nq = qTok.length, nk = kTok.length, labels = Math.max(nq, nk) <= 60;
      const pad = labels ? Math.min(110, 8 + 7 * Math.max(...qTok.map((t) => Math.min(14, t.length)))) : 0;
      const padTop = labels ? Math.min(110, 8 + 7 * Math.max(...kTok.map((t) => Math.min(14, t.length)))) : 0;
      const cellPx = Math.max(0.5, Math.min(24, (maxPx - pad) / Math.max(nq, nk)));
      const W = Math.ceil(pad + nk * cellPx), Hh = Math.ceil(padTop + nq * cellPx), dpr = DPR();
      const c = el("canvas", { class: "heatmap", width: W * dpr, height: Hh * dpr, "data-head": head, "aria-label": caption });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d");
      ctx.scale(dpr, dpr); ctx.imageSmoothingEnabled = false;
      const rowScale = this.scale === "row" || (this.scale === "auto" && nk > 64);
      let shown = data;
      if (rowScale) {  // long inputs: weights near 1/N are invisible on an absolute scale
        shown = new Float32Array(data.length);
        for (let i = 0; i < nq; i++) { let m = 0; for (let j = 0; j < nk; j++) m = Math.max(m, data[i * nk + j]);
          const f = m > 0 ? 1 / m : 0; for (let j = 0; j < nk; j++) shown[i * nk + j] = data[i * nk + j] * f; }
        caption += " · colours ÷ row max";
      }
      ctx.drawImage(paint(shown, nq, nk, false), pad, padTop, nk * cellPx, nq * cellPx);
      const clip = (t) => t.length > 14 ? t.slice(0, 13) + "…" : t;
      if (labels) {
        ctx.fillStyle = "#1b2330"; ctx.font = `${Math.min(12, Math.max(8, cellPx - 2))}px system-ui, sans-serif`;
        ctx.textAlign = "right"; ctx.textBaseline = "middle";
        qTok.forEach((t, i) => ctx.fillText(clip(t), pad - 4, padTop + (i + 0.5) * cellPx));
        ctx.save();
        kTok.forEach((t, j) => { ctx.save(); ctx.translate(pad + (j + 0.5) * cellPx, padTop - 4); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left"; ctx.fillText(clip(t), 0, 0); ctx.restore(); });
        ctx.restore();
      }
      if (this.focus !== null && this.focus < nq) {
        ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5;
        ctx.strokeRect(pad, padTop + this.focus * cellPx, nk * cellPx, Math.max(1, cellPx));
      }
      c.addEventListener("mousemove", (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left - pad, y = e.clientY - r.top - padTop;
        const i = Math.floor(y / cellPx), j = Math.floor(x / cellPx);
        if (x < 0 || y < 0 || i >= nq || j >= nk) { this.hideTip(); return; }
        this.showTip(e, `query ${i}: ${qTok[i]}\nkey ${j}: ${kTok[j]}\nweight ${data[i * nk + j].toFixed(5)}`);
      });
      c.addEventListener("mouseleave", () => this.hideTip());
      return el("figure", {}, el("figcaption", { text: caption }), c);
    }

    // ---------------------------------------------------------------- head view: token-to-token lines
    async renderLines() {
      const st = this.s.streams[this.stream], q = st.query_tokens, k = st.key_tokens, nq = q.length, nk = k.length;
      const maps = await Promise.all(this.heads.map((h) => this.getMap(this.layer, h)));
      const rowH = 18, colW = 130, gapW = 200, top = 22, W = colW * 2 + gapW, Hh = top + Math.max(nq, nk) * rowH + 6, dpr = DPR();
      const c = el("canvas", { class: "lines", id: "head-view", width: W * dpr, height: Hh * dpr, "aria-label": "head view" });
      c.style.width = W + "px"; c.style.height = Hh + "px";
      const ctx = c.getContext("2d");
      const draw = (focus) => {
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        ctx.clearRect(0, 0, W, Hh);
        ctx.font = "12px system-ui, sans-serif"; ctx.textBaseline = "middle"; ctx.fillStyle = "#5b6573";
        ctx.textAlign = "right"; ctx.fillText("queries", colW - 6, 9);
        ctx.textAlign = "left"; ctx.fillText("keys", colW + gapW + 6, 9);
        const x0 = colW, x1 = colW + gapW;
        ctx.globalCompositeOperation = "multiply";
        maps.forEach((m, mi) => {
          ctx.strokeStyle = this.heads.length > 1 ? HEAD_COLORS[mi % HEAD_COLORS.length] : "#1f5fbf";
          const rows = focus === null ? [...Array(nq).keys()] : [focus];
          const minW = focus === null ? 0.03 : 0.005;
          for (const i of rows) {
            for (let j = 0; j < nk; j++) {
              const w = m.data[i * nk + j];
              if (w < minW) continue;
              ctx.globalAlpha = Math.min(1, w * (focus === null ? 0.9 : 1.2) + 0.05); ctx.lineWidth = 0.5 + 2.5 * w;
              ctx.beginPath(); ctx.moveTo(x0, top + (i + 0.5) * rowH); ctx.lineTo(x1, top + (j + 0.5) * rowH); ctx.stroke();
            }
          }
        });
        ctx.globalAlpha = 1; ctx.globalCompositeOperation = "source-over";
        const clip = (t) => t.length > 16 ? t.slice(0, 15) + "…" : t;
        q.forEach((t, i) => { ctx.fillStyle = i === focus ? "#d62728" : "#1b2330"; ctx.textAlign = "right"; ctx.fillText(clip(t), colW - 6, top + (i + 0.5) * rowH); });
        k.forEach((t, j) => { ctx.fillStyle = "#1b2330"; ctx.textAlign = "left"; ctx.fillText(clip(t), colW + gapW + 6, top + (j + 0.5) * rowH); });
      };
      draw(this.focus);
      c.addEventListener("mousemove", (e) => {
        const r = c.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top, i = Math.floor((y - top) / rowH);
        if (x < colW && i >= 0 && i < nq) {
          draw(i);
          const best = maps.map((m, mi) => { let bj = 0; for (let j = 1; j < nk; j++) if (m.data[i * nk + j] > m.data[i * nk + bj]) bj = j;
            return `${this.heads[mi] === "mean" ? "mean" : "head " + this.heads[mi]}: strongest → ${k[bj]} (${m.data[i * nk + bj].toFixed(4)})`; });
          this.showTip(e, `query ${i}: ${q[i]}\n` + best.join("\n"));
        } else if (x > colW + gapW && i >= 0 && i < nk) {
          const ws = maps.map((m, mi) => `${this.heads[mi] === "mean" ? "mean" : "head " + this.heads[mi]}: ${this.focus !== null ? m.data[this.focus * nk + i].toFixed(5) : ""}`);
          this.showTip(e, `key ${i}: ${k[i]}` + (this.focus !== null ? `\nweight from query ${this.focus}:\n` + ws.join("\n") : ""));
        } else { this.hideTip(); }
      });
      c.addEventListener("mouseleave", () => { this.hideTip(); draw(this.focus); });
      const legend = el("div", { class: "hint" });
      this.heads.forEach((h, mi) => { const s = el("span", { text: "■ " + (h === "mean" ? "mean" : "head " + h) + "  " }); if (this.heads.length > 1) s.style.color = HEAD_COLORS[mi % HEAD_COLORS.length]; legend.append(s); });
      legend.append(el("span", { text: " · hover a query token to see only its lines" }));
      return el("figure", {}, el("figcaption", { text: `layer ${this.layer}: token-to-token attention` }), legend, c);
    }

    async renderRollout() {
      const st = this.s.streams[this.stream];
      if (st.query_tokens.length !== st.key_tokens.length || this.stream === "cross")
        return el("p", { class: "hint", text: "Rollout needs a self-attention stream (queries and keys from one sequence)." });
      const m = await this.src.rollout(this.stream);
      const avail = Math.max(240, (this.viewEl.clientWidth || 800) - 20);
      return this.heatmap(m.data, st.query_tokens, st.key_tokens, Math.min(avail, 640),
        "attention rollout after the last layer (Abnar & Zuidema 2020): mean over heads, 0.5·A + 0.5·I, layers multiplied", "rollout");
    }

    // ---------------------------------------------------------------- statistics panel and generation steps
    renderStats() {
      if (!this.s) return;
      const st = this.s.streams[this.stream], stats = st.stats || {}, li = st.layers.indexOf(this.layer);
      const role = this.roles[this.stream];
      this.side.textContent = "";
      this.side.append(el("h2", { text: `layer ${this.layer} · per-head statistics` }));
      this.side.append(el("p", { class: "hint", text: `${st.query_tokens.length} query × ${st.key_tokens.length} key tokens. Entropy in nats (mean over query rows); max = mean largest weight (concentration); first = mass on token 0; dist = mean |query − key|.` }));
      if (!stats.entropy) { this.side.append(el("p", { class: "hint", text: "no statistics" })); return; }
      const cols = [["H", null], ["entropy", "entropy"], ["norm", "normalized_entropy"], ["max", "max"], ["first", "first_token_mass"], ["dist", "mean_distance"]];
      const thead = el("thead", {}, el("tr", {}, ...cols.map(([c]) => el("th", { text: c })), role ? el("th", { class: "role", text: "role" }) : null));
      const tbody = el("tbody");
      st.heads.forEach((h, hi) => {
        const tr = el("tr", { class: this.heads.includes(h) ? "sel" : "", "data-head": h });
        tr.append(el("td", { text: String(h) }));
        for (const [, key] of cols.slice(1)) tr.append(el("td", { text: fmt(stats[key][li][hi], key === "mean_distance" ? 1 : 3) }));
        if (role) tr.append(el("td", { class: "role", text: role.meta.labels[li][hi] }));
        tr.addEventListener("click", (e) => { this.selectHead(this.layer, h, e.shiftKey); this.renderStats(); if (this.view === "model" || this.view === "rollout") this.setView("heatmap"); else this.render(); });
        tbody.append(tr);
      });
      this.side.append(el("table", { id: "stats-table" }, thead, tbody));
      const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
      this.side.append(el("p", { class: "hint", text: `layer mean: entropy ${fmt(mean(stats.entropy[li]))}, max ${fmt(mean(stats.max[li]))}` }));
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
        this.side.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "step" }), el("th", { text: "token" }), el("th", { text: "p" }), el("th", { text: "entropy" }))), tb));
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
