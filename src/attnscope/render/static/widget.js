// attnscope's notebook widget (anywidget ESM): a layer x head grid of thumbnails, the selected head's map
// and the selected layer's head statistics. The selection (stream, layer, head) is shared with Python:
// clicking here sets the traits; setting them in Python redraws here. No network, no dependency.
// Token text is only ever set with textContent or drawn on a canvas (never parsed as HTML).

const STATS = [
  ["entropy", "entropy (nats)"],
  ["max", "max weight"],
  ["first_token_mass", "first-token mass"],
  ["mean_distance", "mean distance"],
];

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(model, name) {
  const v = model.get(name);
  if (!v) return new Uint8Array(0);
  if (v instanceof DataView) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  return new Uint8Array(v.buffer || v);
}

function floats(model, name) {
  const b = bytes(model, name);
  return new Float32Array(b.slice().buffer); // copied: the view may not be 4-byte aligned
}

// Blues, as the static figures (white -> dark blue); masked cells grey.
function blue(v) {
  const t = Math.max(0, Math.min(1, v));
  return [Math.round(247 - t * (247 - 8)), Math.round(251 - t * (251 - 48)), Math.round(255 - t * (255 - 107))];
}

function thin(n, most) {
  const step = Math.max(1, Math.ceil(n / most));
  const out = [];
  for (let i = 0; i < n; i += step) out.push(i);
  return out;
}

function render({ model, el }) {
  el.classList.add("atw");
  el.tabIndex = 0;
  el.setAttribute("role", "application");
  el.setAttribute("aria-label", "attention: layer and head selection (arrow keys move)");
  const top = h("div", "atw-top");
  const streamSel = h("select", "atw-stream");
  streamSel.setAttribute("aria-label", "stream");
  const selText = h("span", "atw-sel");
  top.append(streamSel, selText);
  const main = h("div", "atw-main");
  const gridWrap = h("div", "atw-grid-wrap");
  const grid = h("div", "atw-grid");
  gridWrap.append(grid);
  const mapWrap = h("div", "atw-map-wrap");
  const canvas = h("canvas", "atw-map");
  const tip = h("div", "atw-tip");
  const note = h("div", "atw-note");
  mapWrap.append(canvas, tip, note);
  main.append(gridWrap, mapWrap);
  const stats = h("div", "atw-stats");
  el.append(top, main, stats);

  const meta = () => model.get("meta") || {};
  const info = () => (meta().streams || {})[model.get("stream")] || { layers: [], heads: [] };
  const select = (layer, head) => {
    model.set("layer", layer);
    model.set("head", head);
    model.save_changes();
  };

  function drawStreams() {
    streamSel.replaceChildren();
    const names = Object.keys(meta().streams || {});
    for (const s of names) {
      const o = h("option", "", s);
      o.value = s;
      streamSel.append(o);
    }
    streamSel.value = model.get("stream");
    streamSel.style.display = names.length > 1 ? "" : "none";
  }
  streamSel.addEventListener("change", () => {
    model.set("stream", streamSel.value);
    model.save_changes();
  });

  function drawGrid() {
    const s = info();
    const buf = bytes(model, "thumbs");
    const t = s.thumb || 0;
    const nL = s.layers.length, nH = s.heads.length;
    const cell = Math.max(14, Math.min(40, Math.floor(300 / Math.max(1, nH))));
    grid.replaceChildren();
    grid.style.gridTemplateColumns = `auto repeat(${nH}, ${cell}px)`;
    grid.append(h("span", "atw-corner", "L\\H"));
    for (const hd of s.heads) grid.append(h("span", "atw-col", String(hd)));
    for (let li = 0; li < nL; li++) {
      grid.append(h("span", "atw-row", String(s.layers[li])));
      for (let hi = 0; hi < nH; hi++) {
        const c = h("canvas", "atw-thumb");
        c.width = t; c.height = t;
        c.style.width = c.style.height = cell + "px";
        c.dataset.layer = s.layers[li];
        c.dataset.head = s.heads[hi];
        c.title = `layer ${s.layers[li]} · head ${s.heads[hi]}`;
        if (t && buf.length >= (li * nH + hi + 1) * t * t) {
          const ctx = c.getContext("2d");
          const img = ctx.createImageData(t, t);
          const off = (li * nH + hi) * t * t;
          for (let p = 0; p < t * t; p++) {
            const [r, g, b] = blue(Math.sqrt(buf[off + p] / 255));
            img.data.set([r, g, b, 255], p * 4);
          }
          ctx.putImageData(img, 0, 0);
        }
        c.addEventListener("click", () => select(s.layers[li], s.heads[hi]));
        grid.append(c);
      }
    }
    markGrid();
  }

  function markGrid() {
    for (const c of grid.querySelectorAll("canvas")) {
      const on = Number(c.dataset.layer) === model.get("layer") && Number(c.dataset.head) === model.get("head");
      c.classList.toggle("atw-on", on);
    }
    selText.textContent = `${model.get("stream")} · layer ${model.get("layer")} · head ${model.get("head")}`;
  }

  function drawMap() {
    const s = info();
    const [nq, nk] = model.get("map_shape") || [0, 0];
    const w = floats(model, "head_map");
    const ql = s.query_labels || [], kl = s.key_labels || [];
    const size = 360, pad = 80;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = (size + pad) * dpr; canvas.height = (size + pad) * dpr;
    canvas.style.width = canvas.style.height = size + pad + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size + pad, size + pad);
    if (!nq || !nk || w.length < nq * nk) return;
    const cw = size / nk, ch = size / nq;
    const pooled = (model.get("map_bins") || 1) > 1;
    for (let i = 0; i < nq; i++) {
      for (let j = 0; j < nk; j++) {
        const masked = s.causal && !pooled && j > i;
        const [r, g, b] = masked ? [215, 215, 215] : blue(Math.sqrt(w[i * nk + j]));
        ctx.fillStyle = `rgb(${r},${g},${b})`;
        ctx.fillRect(pad + j * cw, pad + i * ch, Math.ceil(cw), Math.ceil(ch));
      }
    }
    ctx.fillStyle = "#333";
    ctx.font = "10px sans-serif";
    if (!pooled) {
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      for (const i of thin(nq, 36)) ctx.fillText(String(ql[i] ?? i).slice(0, 12), pad - 3, pad + (i + 0.5) * ch);
      for (const j of thin(nk, 36)) {
        ctx.save();
        ctx.translate(pad + (j + 0.5) * cw, pad - 3);
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left";
        ctx.fillText(String(kl[j] ?? j).slice(0, 12), 0, 0);
        ctx.restore();
      }
    }
    note.textContent = (pooled ? `pooled: each cell is the largest weight of ${model.get("map_bins")} x ` +
      `${model.get("map_bins")} tokens · ` : "") + "query rows, key columns · colour: √weight" +
      (s.causal ? " · grey: masked" : "");
    canvas.onmousemove = (ev) => {
      const r = canvas.getBoundingClientRect();
      const j = Math.floor((ev.clientX - r.left - pad) / cw), i = Math.floor((ev.clientY - r.top - pad) / ch);
      if (i < 0 || j < 0 || i >= nq || j >= nk) { tip.textContent = ""; return; }
      const v = w[i * nk + j];
      tip.textContent = pooled ? `rows ${i}, cols ${j}: ${v.toFixed(3)}`
        : `${ql[i] ?? i} → ${kl[j] ?? j}: ${v.toFixed(3)}`;
    };
    canvas.onmouseleave = () => { tip.textContent = ""; };
  }

  function drawStats() {
    const s = info();
    const li = s.layers.indexOf(model.get("layer"));
    stats.replaceChildren();
    if (li < 0 || !s.stats) return;
    const table = h("table", "atw-table");
    const cap = h("caption", "", `layer ${model.get("layer")}: head statistics (mean over query rows)`);
    const head = h("tr");
    head.append(h("th", "", "head"));
    const names = STATS.filter(([k]) => s.stats[k]);
    for (const [, label] of names) head.append(h("th", "", label));
    table.append(cap, head);
    const top = {};
    for (const [k] of names) top[k] = Math.max(1e-9, ...s.stats[k].flat());
    s.heads.forEach((hd, hi) => {
      const tr = h("tr", hd === model.get("head") ? "atw-on" : "");
      tr.append(h("td", "", String(hd)));
      for (const [k] of names) {
        const v = s.stats[k][li][hi];
        const td = h("td");
        const bar = h("span", "atw-bar");
        bar.style.width = Math.round((100 * v) / top[k]) + "%";
        td.append(bar, h("span", "atw-val", v.toFixed(3)));
        tr.append(td);
      }
      tr.addEventListener("click", () => select(model.get("layer"), hd));
      table.append(tr);
    });
    stats.append(table);
  }

  el.addEventListener("keydown", (ev) => {
    const s = info();
    let li = s.layers.indexOf(model.get("layer")), hi = s.heads.indexOf(model.get("head"));
    if (ev.key === "ArrowUp") li -= 1;
    else if (ev.key === "ArrowDown") li += 1;
    else if (ev.key === "ArrowLeft") hi -= 1;
    else if (ev.key === "ArrowRight") hi += 1;
    else return;
    ev.preventDefault();
    li = Math.max(0, Math.min(s.layers.length - 1, li));
    hi = Math.max(0, Math.min(s.heads.length - 1, hi));
    select(s.layers[li], s.heads[hi]);
  });

  const onSelection = () => { markGrid(); drawStats(); };
  const onStream = () => { drawStreams(); drawGrid(); drawStats(); };
  const onMap = () => drawMap();
  model.on("change:layer", onSelection);
  model.on("change:head", onSelection);
  model.on("change:stream", onStream);
  model.on("change:meta", onStream);
  model.on("change:thumbs", drawGrid);
  model.on("change:head_map", onMap);
  model.on("change:map_shape", onMap);
  onStream();
  drawMap();
  return () => {
    model.off("change:layer", onSelection);
    model.off("change:head", onSelection);
    model.off("change:stream", onStream);
    model.off("change:meta", onStream);
    model.off("change:thumbs", drawGrid);
    model.off("change:head_map", onMap);
    model.off("change:map_shape", onMap);
  };
}

export default { render };
