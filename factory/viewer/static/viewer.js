// The viewer page: records, a record's lineage, stats and the two-run comparison, all from the JSON API.
// The view and its filters live in location.hash, so the back button and links (a parent record) work.
"use strict";

const $ = function (id) { return document.getElementById(id); };
const form = $("filters");
const FILTERS = ["run", "task", "split", "validator", "verdict", "reason", "score_min", "score_max", "q", "sort", "order"];
let runs = [];
const facetCache = {};
// Where the app is served: "" for `mmsynth view`, "/view" when the studio serves it over its samples.
const BASE = document.body.dataset.base || "";

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children || []) if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

function setStatus(text, busy) {
  $("status").textContent = text;
  $("status").classList.toggle("busy", !!busy);
}

async function api(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") qs.set(k, v);
  const resp = await fetch(BASE + path + (qs.toString() ? "?" + qs : ""));
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) throw new Error(data.error || data.detail || resp.statusText);
  return data;
}

// -- routing -------------------------------------------------------------------------------------------

function route() {
  const h = location.hash.replace(/^#/, "");
  const i = h.indexOf("?");
  const view = (i < 0 ? h : h.slice(0, i)) || "records";
  return {view: view, params: Object.fromEntries(new URLSearchParams(i < 0 ? "" : h.slice(i + 1)))};
}

function href(view, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") qs.set(k, v);
  return "#" + view + (qs.toString() ? "?" + qs : "");
}

function go(view, params) { location.hash = href(view, params); }

function recordHref(run, id) {
  const r = route();
  return href(r.view, Object.assign({}, r.params, {record: run + ":" + id}));
}

async function render() {
  const r = route();
  for (const b of $("tabs").querySelectorAll("button")) b.classList.toggle("active", b.dataset.view === r.view);
  for (const v of ["records", "stats", "compare"]) {
    const section = $("view-" + v);
    if (section) section.classList.toggle("hidden", v !== r.view);
  }
  try {
    if (r.view === "records") await showRecords(r.params);
    else if (r.view === "stats") await showStats(r.params);
    else if (r.view === "compare") await showCompare(r.params);
    if (r.params.record) await showRecord(r.params.record);
    else $("record-modal").classList.add("hidden");
  } catch (e) {
    // The status pill is visible on every tab; the records tab also shows the message above the gallery.
    setStatus("error: " + e.message);
    $("records-error").textContent = e.message;
  }
}

// -- records -------------------------------------------------------------------------------------------

function fillSelect(select, options, keep) {
  const value = keep !== undefined ? keep : select.value;
  const first = select.options[0];
  select.replaceChildren(first);
  for (const [value_, label] of options) select.appendChild(el("option", {value: value_, text: label}));
  select.value = [...select.options].some(function (o) { return o.value === value; }) ? value : "";
}

async function facets(run, task) {
  const key = run + "/" + (task || "");
  if (!facetCache[key]) facetCache[key] = await api("/api/facets", {run: run, task: task});
  return facetCache[key];
}

async function showRecords(p) {
  const run = p.run || "a";
  const f = await facets(run, p.task);
  fillSelect(form.elements.task, Object.entries(f.tasks).map(function (e) { return [e[0], e[0] + " (" + e[1] + ")"]; }), p.task || "");
  fillSelect(form.elements.validator, f.validators.map(function (v) { return [v, v]; }), p.validator || "");
  fillSelect(form.elements.reason, f.reasons.map(function (e) { return [e[0], e[0] + " (" + e[1] + ")"]; }), p.reason || "");
  const sorts = [["seed", "seed"]].concat(f.validators.map(function (v) { return ["score:" + v, v + " score"]; }));
  fillSelect(form.elements.sort, sorts, p.sort || "");
  for (const name of FILTERS) {
    const input = form.elements[name];
    if (input && !["task", "validator", "reason", "sort"].includes(name)) input.value = p[name] || (name === "order" ? "asc" : name === "run" ? "a" : "");
  }
  setStatus("loading", true);
  $("records-error").textContent = "";
  const data = await api("/api/records", Object.assign({}, p, {record: undefined, per_page: 24}));
  const gallery = $("gallery");
  gallery.replaceChildren(...data.records.map(function (rec) { return recCard(rec, run); }));
  if (!data.records.length) gallery.appendChild(el("p", {class: "muted", text: "No records match these filters."}));
  for (const id of ["pager-top", "pager"]) pager($(id), data, data.total + " records", function (page) { go("records", Object.assign({}, p, {page: page})); });
  setStatus(data.total + " records · " + data.ms + " ms");
}

function pager(node, data, what, goto) {
  node.replaceChildren(
    el("button", {type: "button", text: "‹ Prev", disabled: data.page <= 1 ? "" : null, onclick: function () { goto(data.page - 1); }}),
    el("span", {class: "muted", text: "page " + data.page + " of " + data.pages + " · " + what}),
    el("button", {type: "button", text: "Next ›", disabled: data.page >= data.pages ? "" : null, onclick: function () { goto(data.page + 1); }}),
  );
}

function verdictList(verdicts) {
  return el("ul", {class: "verdicts"}, (verdicts || []).map(function (v) {
    return el("li", {class: v.keep ? "keep" : "reject"}, [
      el("span", {text: (v.keep ? "✓ " : "✗ ") + v.validator}),
      v.reason ? el("span", {class: "reason", text: v.reason}) : null,
      v.score !== null && v.score !== undefined ? el("span", {class: "score", text: fmt(v.score)}) : null,
    ]);
  }));
}

function documentItems(doc) {
  return el("div", {class: "doc"}, doc.map(function (item) {
    return item.text !== undefined ? el("div", {class: "doc-text", text: item.text}) : item.image ? el("img", {src: item.image, alt: "document image"}) : el("span", {class: "muted", text: "[missing image]"});
  }));
}

function outputBlock(rec) {
  if (rec.document) return documentItems(rec.document);
  return el("pre", {class: "out" + (rec.pretty ? " json" : ""), text: rec.pretty || rec.output || "(no output)"});
}

function recCard(rec, run, compact) {
  const links = el("div", {class: "links"}, [
    el("a", {href: recordHref(run, rec.id), class: "lineage-link", text: "lineage"}),
    rec.parent_id ? el("a", {href: recordHref(run, rec.parent_id), class: "parent-link", text: "parent"}) : null,
  ]);
  return el("article", {class: "rec " + (rec.accepted ? "accepted" : "rejected"), "data-id": rec.id}, [
    el("div", {class: "head"}, [
      el("span", {class: "badge" + (rec.accepted ? " ok" : ""), text: rec.accepted ? "accepted" : "rejected"}),
      el("span", {text: rec.task}),
      // In a comparison the seed heads the row, so a card names only its sample.
      el("span", {text: compact ? "sample " + rec.sample_index : "seed " + rec.seed_index + (rec.sample_index ? " · sample " + rec.sample_index : "")}),
      compact ? null : el("code", {text: rec.template_id + "@" + rec.template_version}),
    ]),
    el("div", {class: "body"}, [
      rec.image && !compact ? el("img", {class: "thumb", src: rec.image, alt: "input image"}) : null,
      el("div", {class: "text"}, [
        outputBlock(rec),
        rec.reject_reason ? el("div", {class: "reason", text: rec.reject_reason}) : null,
        verdictList(rec.verdicts),
        links,
      ]),
    ]),
  ]);
}

// -- one record and its lineage ----------------------------------------------------------------------------

function dl(rows) {
  const node = el("dl", {class: "lineage"});
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === "") continue;
    node.appendChild(el("dt", {text: k}));
    node.appendChild(typeof v === "string" ? el("dd", {text: v}) : el("dd", {}, [v]));
  }
  return node;
}

function json(value) { return el("pre", {class: "out", text: JSON.stringify(value, null, 2)}); }

async function showRecord(ref) {
  const i = ref.indexOf(":");
  const run = ref.slice(0, i), id = ref.slice(i + 1);
  const box = $("record");
  $("record-modal").classList.remove("hidden");
  box.replaceChildren(el("p", {class: "muted", text: "loading " + id}));
  let rec;
  try {
    rec = await api("/api/records/" + encodeURIComponent(id), {run: run});
  } catch (e) {
    box.replaceChildren(closeButton(), el("p", {class: "error", text: e.message}));
    return;
  }
  const template = el("div", {}, [el("code", {text: rec.template_ref}), " "]);
  if (rec.template_saved) {
    const src = el("pre", {class: "out hidden template-source"});
    template.appendChild(el("a", {href: "#", class: "template-link", text: "template source", onclick: async function (ev) {
      ev.preventDefault();
      if (!src.textContent) src.textContent = await api("/api/template", {run: run, ref: rec.template_ref});
      src.classList.toggle("hidden");
    }}));
    template.appendChild(src);
  }
  const parent = rec.parent ? (rec.parent.in_run ? el("a", {href: recordHref(run, rec.parent.id), class: "parent-link", text: rec.parent.id}) : el("span", {text: rec.parent.id + " (not in this run)"})) : null;
  const kids = rec.children.length ? el("span", {}, rec.children.map(function (c) { return el("a", {href: recordHref(run, c), class: "child-link", text: c.slice(0, 12) + " "}); })) : null;
  box.replaceChildren(
    closeButton(),
    el("h2", {text: "Record " + rec.id}),
    el("div", {class: "head"}, [
      el("span", {class: "badge" + (rec.accepted ? " ok" : ""), text: rec.split}),
      " ", el("span", {text: rec.task + " · run " + run.toUpperCase()}),
    ]),
    rec.reject_reason ? el("p", {class: "reason", text: rec.reject_reason}) : null,
    el("div", {class: "body record-body"}, [rec.image ? el("img", {class: "big-img", src: rec.image, alt: "input image"}) : null]),
    el("h3", {text: "Output"}),
    outputBlock(rec),
    verdictList(rec.verdicts),
    el("h3", {text: "Lineage"}),
    dl([
      ["template", template],
      ["template hash", rec.template_hash],
      ["model", rec.model],
      ["model revision", rec.model_revision],
      ["backend", rec.backend],
      ["sampling", rec.sampling ? json(rec.sampling) : null],
      ["sample seed", rec.sample_seed === null ? null : String(rec.sample_seed)],
      ["seed", rec.seed_id + " (index " + rec.seed_index + ", sample " + rec.sample_index + ")"],
      ["parent", parent],
      ["made from it", kids],
      ["generation", rec.generation ? json(rec.generation) : null],
      ["finish reason", rec.finish_reason],
      ["tokens", rec.prompt_tokens + " prompt, " + rec.completion_tokens + " completion"],
      ["request key", rec.request_key],
      ["created at", rec.created_at],
    ]),
    el("h3", {text: "Rendered prompt"}),
    rec.system ? el("div", {class: "msg system"}, [el("div", {class: "role", text: "system"}), el("div", {class: "msg-body", text: rec.system})]) : null,
    el("div", {class: "msg user"}, [el("div", {class: "role", text: "user"}), el("div", {class: "msg-body rendered-prompt", text: rec.prompt})]),
    el("h3", {text: "Seed fields"}),
    json(rec.seed),
  );
}

function closeButton() {
  return el("button", {type: "button", class: "close", text: "Close", onclick: closeRecord});
}

function closeRecord() {
  const r = route();
  delete r.params.record;
  go(r.view, r.params);
}

// -- stats ---------------------------------------------------------------------------------------------

async function showStats(p) {
  setStatus("loading", true);
  const all = await Promise.all(runs.map(function (r) { return api("/api/stats", {run: r.key, task: p.task}); }));
  fillSelect($("stats-task"), Object.keys(all[0].tasks).map(function (t) { return [t, t]; }), p.task || "");
  $("stats").replaceChildren(...all.map(function (s, i) { return statsCard(runs[i], s); }));
  setStatus(all.map(function (s) { return s.records.total; }).join(" / ") + " records");
}

function statsCard(run, s) {
  const box = el("section", {class: "card stats-card", "data-run": run.key}, [
    el("h2", {text: "Run " + run.key.toUpperCase() + ": " + run.name + (s.task ? " · " + s.task : "")}),
    el("p", {class: "muted small", text: run.path + (s.complete ? "" : " · still running (no manifest yet)")}),
    el("p", {text: s.records.total + " records: " + s.records.accepted + " accepted, " + s.records.rejected + " rejected"}),
    el("h3", {text: "Pass rate per validator"}),
    barChart(Object.entries(s.validators).map(function (e) {
      const v = e[1];
      return {label: e[0], value: v.pass_rate || 0, max: 1, cls: "bar-ok", note: v.pass_rate === null ? "no verdicts" : Math.round(v.pass_rate * 1000) / 10 + "% of " + v.seen};
    })),
    el("h3", {text: "Top reject reasons"}),
    s.reject_reasons.length ? barChart(s.reject_reasons.map(function (e) { return {label: e[0], value: e[1], cls: "bar-bad", note: String(e[1])}; })) : el("p", {class: "muted", text: "none"}),
  ]);
  for (const [name, v] of Object.entries(s.validators)) {
    if (!v.histogram) continue;
    const h = v.histogram;
    box.appendChild(el("h3", {text: name + " score (" + h.count + " scored, mean " + fmt(h.mean) + ")"}));
    box.appendChild(histogramChart(h));
  }
  return box;
}

// -- compare -------------------------------------------------------------------------------------------

async function showCompare(p) {
  setStatus("loading", true);
  const f = await facets("a", "");
  fillSelect($("compare-task"), Object.keys(f.tasks).map(function (t) { return [t, t]; }), p.task || "");
  $("compare-status").value = p.status || "";
  const data = await api("/api/compare", {task: p.task, status: p.status, page: p.page, per_page: 10});
  const s = data.summary;
  $("compare-summary").textContent = s.seeds + " seeds: " + s.same + " same, " + s.differ + " differ, " + s.only_a + " only in A, " + s.only_b + " only in B";
  const head = el("tr", {}, [el("th", {text: "Seed"}), el("th", {text: "A: " + runs[0].name}), el("th", {text: "B: " + runs[1].name})]);
  const rows = data.pairs.map(function (pair) {
    const first = pair.a[0] || pair.b[0];
    return el("tr", {class: "pair", "data-seed": pair.seed_id}, [
      el("td", {}, [
        first && first.image ? el("img", {class: "thumb", src: first.image, alt: "seed image"}) : null,
        el("div", {class: "small", text: pair.task + " · seed " + pair.seed_index}),
        el("span", {class: "status-pill " + pair.status, text: pair.status.replace("_", " ")}),
      ]),
      el("td", {class: "side-a"}, pair.a.map(function (r) { return recCard(r, "a", true); })),
      el("td", {class: "side-b"}, pair.b.map(function (r) { return recCard(r, "b", true); })),
    ]);
  });
  $("pairs").replaceChildren(el("thead", {}, [head]), el("tbody", {}, rows));
  for (const id of ["compare-pager-top", "compare-pager"]) pager($(id), data, data.total + " seeds", function (page) { go("compare", Object.assign({}, p, {page: page})); });
  setStatus(data.total + " seeds · " + data.ms + " ms");
}

// -- wiring ----------------------------------------------------------------------------------------------

form.addEventListener("submit", function (ev) {
  ev.preventDefault();
  const params = {};
  for (const name of FILTERS) if (form.elements[name] && form.elements[name].value) params[name] = form.elements[name].value;
  if (params.order === "asc") delete params.order;
  if (params.run === "a") delete params.run;
  go("records", params);
});
form.addEventListener("change", function (ev) {
  if (ev.target.tagName === "SELECT") form.requestSubmit();
});
$("reset").addEventListener("click", function () { go("records", {}); });
for (const b of $("tabs").querySelectorAll("button")) b.addEventListener("click", function () { go(b.dataset.view, {}); });
$("stats-task").addEventListener("change", function () { go("stats", {task: $("stats-task").value}); });
for (const id of ["compare-task", "compare-status"]) {
  const node = $(id);
  if (node) node.addEventListener("change", function () { go("compare", {task: $("compare-task").value, status: $("compare-status").value}); });
}
$("record-modal").addEventListener("click", function (ev) { if (ev.target === $("record-modal")) closeRecord(); });
document.addEventListener("keydown", function (ev) { if (ev.key === "Escape" && route().params.record) closeRecord(); });
window.addEventListener("hashchange", render);

(async function start() {
  try {
    runs = await api("/api/runs");
  } catch (e) {
    setStatus("error");
    $("records-error").textContent = e.message;
    return;
  }
  render();
})();
