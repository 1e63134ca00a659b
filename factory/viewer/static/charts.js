// Small SVG charts for the stats view (no chart library: the page works offline).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x) {
  if (x === null || x === undefined) return "";
  const a = Math.abs(x);
  return a !== 0 && (a < 0.01 || a >= 1e4) ? x.toExponential(2) : String(Math.round(x * 1000) / 1000);
}

// Horizontal bars: rows of {label, value, max?, cls?, note?}; value / max sets the length.
function barChart(rows, opts) {
  const o = Object.assign({width: 440, labelWidth: 170, row: 20}, opts || {});
  const height = rows.length * o.row + 6;
  const root = svg("svg", {class: "chart", width: o.width, height: height, role: "img"});
  const room = o.width - o.labelWidth - 70;
  const top = Math.max(1e-12, ...rows.map(function (r) { return r.max !== undefined ? r.max : r.value; }));
  rows.forEach(function (r, i) {
    const y = i * o.row + 3;
    const label = r.label.length > 28 ? r.label.slice(0, 27) + "…" : r.label;
    const t = root.appendChild(svg("text", {x: o.labelWidth - 6, y: y + o.row * 0.65, "text-anchor": "end"}, label));
    t.appendChild(svg("title", {}, r.label));
    const w = Math.max(1, (r.value / (r.max !== undefined ? r.max : top)) * room);
    root.appendChild(svg("rect", {x: o.labelWidth, y: y + 2, width: w, height: o.row - 6, class: r.cls || "bar"}));
    root.appendChild(svg("text", {x: o.labelWidth + w + 5, y: y + o.row * 0.65, class: "muted-text"}, r.note || fmt(r.value)));
  });
  return root;
}

// A score histogram {edges, kept, rejected}: stacked bars, kept (green) under rejected (red).
function histogramChart(h, opts) {
  const o = Object.assign({width: 440, height: 150}, opts || {});
  const pad = {l: 36, r: 8, t: 8, b: 30};
  const root = svg("svg", {class: "chart histogram", width: o.width, height: o.height, role: "img"});
  const n = h.kept.length;
  const totals = h.kept.map(function (k, i) { return k + h.rejected[i]; });
  const top = Math.max(1, ...totals);
  const bw = (o.width - pad.l - pad.r) / n;
  const ph = o.height - pad.t - pad.b;
  root.appendChild(svg("line", {x1: pad.l, y1: pad.t + ph, x2: o.width - pad.r, y2: pad.t + ph, class: "axis"}));
  root.appendChild(svg("text", {x: pad.l - 4, y: pad.t + 9, "text-anchor": "end", class: "muted-text"}, String(top)));
  root.appendChild(svg("text", {x: pad.l - 4, y: pad.t + ph, "text-anchor": "end", class: "muted-text"}, "0"));
  for (let i = 0; i < n; i++) {
    const x = pad.l + i * bw + 1;
    const hk = (h.kept[i] / top) * ph;
    const hr = (h.rejected[i] / top) * ph;
    const tip = fmt(h.edges[i]) + " – " + fmt(h.edges[i + 1]) + ": " + h.kept[i] + " kept, " + h.rejected[i] + " rejected";
    const g = root.appendChild(svg("g", {}));
    g.appendChild(svg("title", {}, tip));
    g.appendChild(svg("rect", {x: x, y: pad.t + ph - hk, width: Math.max(1, bw - 2), height: hk, class: "bar-ok"}));
    g.appendChild(svg("rect", {x: x, y: pad.t + ph - hk - hr, width: Math.max(1, bw - 2), height: hr, class: "bar-bad"}));
  }
  root.appendChild(svg("text", {x: pad.l, y: o.height - 10, class: "muted-text"}, fmt(h.edges[0])));
  root.appendChild(svg("text", {x: o.width - pad.r, y: o.height - 10, "text-anchor": "end", class: "muted-text"}, fmt(h.edges[n])));
  return root;
}
