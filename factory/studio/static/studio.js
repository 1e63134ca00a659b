// The editor page: live lint and render on every edit, runs, comparisons and saves through the JSON API.
"use strict";

const root = document.getElementById("studio");
const task = root.dataset.task;
let baseRef = root.dataset.baseRef;
const editor = document.getElementById("editor");
const highlight = document.getElementById("highlight");
const gutter = document.getElementById("gutter");
const statusEl = document.getElementById("status");
const $ = function (id) { return document.getElementById(id); };

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children || []) if (c) node.appendChild(c);
  return node;
}

function setStatus(text, busy) {
  statusEl.textContent = text;
  statusEl.classList.toggle("busy", !!busy);
}

async function api(path, body) {
  const resp = await fetch(path, body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || (data.detail && JSON.stringify(data.detail)) || resp.statusText);
  return data;
}

function samples() { return Math.max(1, parseInt($("samples").value, 10) || 1); }

// -- editor ------------------------------------------------------------------------------------------

let issues = [];

function paint() {
  // A trailing newline keeps the overlay as tall as the textarea when the text ends with one.
  highlight.innerHTML = highlightTemplate(editor.value) + "\n";
  const bad = {};
  for (const i of issues) bad[i.line] = bad[i.line] === "error" ? "error" : i.severity;
  const n = editor.value.split("\n").length;
  let html = "";
  for (let k = 1; k <= n; k++) {
    html += bad[k] ? '<span class="ln-' + bad[k] + '" title="' + bad[k] + '">' + k + "</span>\n" : k + "\n";
  }
  gutter.innerHTML = html;
  syncScroll();
}

function syncScroll() {
  highlight.scrollTop = editor.scrollTop;
  highlight.scrollLeft = editor.scrollLeft;
  gutter.scrollTop = editor.scrollTop;
}

function showIssues(list) {
  issues = list;
  const ul = $("lint");
  ul.innerHTML = "";
  if (!list.length) ul.appendChild(el("li", {class: "ok", text: "No problems found."}));
  for (const i of list) {
    const li = el("li", {class: i.severity}, [
      el("span", {class: "where", text: "line " + i.line + " · " + i.severity}),
      el("span", {text: " " + i.message}),
    ]);
    li.addEventListener("click", function () { goToLine(i.line); });
    ul.appendChild(li);
  }
  paint();
}

function goToLine(line) {
  const lines = editor.value.split("\n");
  const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
  editor.focus();
  editor.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

// -- live render -------------------------------------------------------------------------------------

let renderSeq = 0;
let renderTimer = null;

function scheduleRender() {
  paint();
  clearTimeout(renderTimer);
  setStatus("editing…", true);
  renderTimer = setTimeout(render, 250);
}

async function render() {
  const seq = ++renderSeq;
  setStatus("rendering…", true);
  try {
    const data = await api("/api/render", {task: task, source: editor.value, samples: samples()});
    if (seq !== renderSeq) return;  // a newer edit is on its way
    showIssues(data.issues);
    showPreview(data);
    setStatus(data.issues.some(function (i) { return i.severity === "error"; }) ? "has errors" : "rendered", false);
  } catch (e) {
    if (seq === renderSeq) setStatus("error: " + e.message, false);
  }
}

function seedCell(seed) {
  return el("div", {class: "seed"}, [
    seed.image ? el("img", {src: seed.image, alt: "seed " + seed.index, class: "thumb"}) : null,
    el("div", {class: "small muted", text: "seed " + seed.index + " · " + seed.id.slice(0, 8)}),
    seed.fields.description ? el("div", {class: "small", text: seed.fields.description}) : null,
  ]);
}

function showPreview(data) {
  const box = $("preview");
  box.innerHTML = "";
  const err = $("render-error");
  err.classList.toggle("hidden", !data.error);
  err.textContent = data.error || "";
  for (const s of data.samples) {
    const msgs = el("div", {class: "messages"});
    if (s.error) msgs.appendChild(el("div", {class: "error", text: s.error}));
    for (const m of s.messages) {
      const body = el("div", {class: "msg-body"});
      for (const p of m.parts) {
        body.appendChild(p.type === "image" ? el("img", {src: p.src, class: "inline-img", alt: "image"}) : el("span", {text: p.text}));
      }
      msgs.appendChild(el("div", {class: "msg " + m.role}, [el("div", {class: "role", text: m.role}), body]));
    }
    box.appendChild(el("div", {class: "sample rendered-sample"}, [seedCell(s.seed), msgs]));
  }
}

// -- runs and comparisons ----------------------------------------------------------------------------

function verdictList(out) {
  return el("ul", {class: "verdicts"}, out.verdicts.map(function (v) {
    return el("li", {class: v.keep ? "keep" : "reject", text: (v.keep ? "✓ " : "✗ ") + v.validator + (v.reason ? ": " + v.reason : "")});
  }));
}

function outputCell(out) {
  return el("div", {class: "output " + (out.accepted ? "accepted" : "rejected")}, [
    el("div", {class: "badge", text: out.accepted ? "kept" : "rejected"}),
    el("pre", {class: "out-text", text: out.text || "(no output)"}),
    // Failures without verdicts (a render error, a backend refusal) say why here; others in their verdicts.
    !out.accepted && !out.verdicts.length ? el("div", {class: "reason", text: out.reason}) : null,
    verdictList(out),
  ]);
}

function summary(report, withRef) {
  return el("div", {class: "summary"}, [
    withRef === false ? null : el("b", {text: report.ref + (report.edited ? " (edited)" : "")}),
    el("span", {class: "pass-rate", text: " pass rate " + Math.round(report.pass_rate * 100) + "% (" + report.accepted + "/" + report.total + ")"}),
    el("span", {class: "muted small", text: " · " + report.sent + " requests sent · " + report.seconds + " s"}),
  ]);
}

// A link to the viewer over the samples just run (the app serves it when it keeps them: see samples.py).
function viewerLink(href, text) {
  return href ? el("p", {class: "small"}, [el("a", {href: href, target: "_blank", class: "viewer-link", text: text})]) : null;
}

function showRun(report) {
  const box = $("run-results");
  box.innerHTML = "";
  box.appendChild(summary(report));
  const link = viewerLink(report.viewer, "Open these samples in the viewer");
  if (link) box.appendChild(link);
  for (const s of report.samples) {
    box.appendChild(el("div", {class: "sample run-sample"}, [seedCell(s.seed), el("div", {class: "outputs"}, s.outputs.map(outputCell))]));
  }
}

async function run() {
  selectTab("run");
  setStatus("running on " + samples() + " samples…", true);
  $("run-results").innerHTML = "";
  try {
    showRun(await api("/api/run", {task: task, source: editor.value, samples: samples()}));
    setStatus("run done", false);
  } catch (e) {
    $("run-results").appendChild(el("p", {class: "error", text: e.message}));
    setStatus("run failed", false);
  }
}

function side(select) {
  return select.value ? {task: task, ref: select.value} : {task: task, source: editor.value};
}

async function compare() {
  setStatus("comparing…", true);
  const box = $("compare-results");
  box.innerHTML = "";
  try {
    const data = await api("/api/compare", {task: task, a: side($("compare-a")), b: side($("compare-b")), samples: samples()});
    const label = function (r) { return r.ref + (r.edited ? " (edited)" : ""); };
    const head = el("tr", {}, [el("th", {text: "sample"}),
      el("th", {}, [el("div", {text: "A: " + label(data.a)}), summary(data.a, false)]),
      el("th", {}, [el("div", {text: "B: " + label(data.b)}), summary(data.b, false)])]);
    const rows = data.a.samples.map(function (s, i) {
      return el("tr", {}, [el("td", {}, [seedCell(s.seed)]),
        el("td", {}, s.outputs.map(outputCell)),
        el("td", {}, data.b.samples[i].outputs.map(outputCell))]);
    });
    const link = viewerLink(data.viewer, "Open A and B side by side in the viewer");
    if (link) box.appendChild(link);
    box.appendChild(el("table", {class: "compare"}, [el("thead", {}, [head]), el("tbody", {}, rows)]));
    setStatus("compared", false);
  } catch (e) {
    box.appendChild(el("p", {class: "error", text: e.message}));
    setStatus("compare failed", false);
  }
}

// -- versions ----------------------------------------------------------------------------------------

let proposal = null;

function showDiff(diff) {
  const pre = $("diff");
  pre.innerHTML = "";
  for (const line of diff.split("\n")) {
    const cls = line.startsWith("+++") || line.startsWith("---") ? "meta" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "";
    pre.appendChild(el("span", {class: cls, text: line + "\n"}));
  }
}

async function proposeSave() {
  $("save-status").textContent = "";
  try {
    proposal = await api("/api/save", {task: task, base_ref: baseRef, source: editor.value});
    $("save-ref").textContent = proposal.ref;
    $("save-path").textContent = proposal.path;
    showDiff(proposal.diff);
    $("save-note").textContent = proposal.note || "";
    $("save-note").classList.toggle("hidden", !proposal.note);
    $("save-panel").classList.remove("hidden");
  } catch (e) {
    $("save-status").textContent = "Cannot save: " + e.message;
    $("save-status").className = "status-line error";
  }
}

function setVersions(refs, selected) {
  const fill = function (select, extra) {
    const keep = select.value;
    select.innerHTML = "";
    for (const r of refs) select.appendChild(el("option", {value: r, text: r}));
    if (extra) select.appendChild(el("option", {value: "", text: "editor (unsaved)"}));
    select.value = keep;
  };
  fill($("open-version"), false);
  $("open-version").value = selected;
  fill($("compare-a"), true);
  fill($("compare-b"), true);
}

async function confirmSave() {
  try {
    const saved = await api("/api/save", {task: task, base_ref: baseRef, source: editor.value, version: proposal.version});
    $("save-panel").classList.add("hidden");
    $("save-status").textContent = "Saved " + saved.ref + " to " + saved.path + " (sha256 " + saved.hash.slice(0, 12) + ")." + (saved.note ? " Note: " + saved.note + "." : "");
    $("save-status").className = "status-line ok";
    editor.value = saved.source;  // the text as written, with its new version number
    baseRef = saved.ref;
    $("base-ref").textContent = baseRef;
    setVersions(saved.versions, saved.ref);
    scheduleRender();
  } catch (e) {
    $("save-status").textContent = "Not saved: " + e.message;
    $("save-status").className = "status-line error";
  }
}

async function openVersion() {
  const ref = $("open-version").value;
  try {
    const data = await api("/api/source?ref=" + encodeURIComponent(ref));
    editor.value = data.source;
    baseRef = data.ref;
    $("base-ref").textContent = baseRef;
    scheduleRender();
  } catch (e) {
    setStatus("error: " + e.message, false);
  }
}

// -- wiring ------------------------------------------------------------------------------------------

function selectTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("hidden", t.id !== "tab-" + name);
}

editor.addEventListener("input", scheduleRender);
editor.addEventListener("scroll", syncScroll);
editor.addEventListener("keydown", function (e) {
  if (e.key === "Tab") {  // two spaces, as YAML and the templates are indented
    e.preventDefault();
    const s = editor.selectionStart;
    editor.setRangeText("  ", s, editor.selectionEnd, "end");
    scheduleRender();
  }
});
$("samples").addEventListener("change", scheduleRender);
$("run-btn").addEventListener("click", run);
$("compare-btn").addEventListener("click", compare);
$("save-btn").addEventListener("click", proposeSave);
$("confirm-save-btn").addEventListener("click", confirmSave);
$("cancel-save-btn").addEventListener("click", function () { $("save-panel").classList.add("hidden"); });
$("open-version").addEventListener("change", openVersion);
for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", function () { selectTab(b.dataset.tab); });

scheduleRender();
