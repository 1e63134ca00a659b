// A tiny highlighter for mmsynth template files: YAML front matter, then a Jinja2 body.
// It only adds <span class>es around escaped text, so the overlay lines up with the textarea exactly.
"use strict";

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function span(cls, text) {
  return '<span class="' + cls + '">' + escapeHtml(text) + "</span>";
}

// Inside {{ }} or {% %}: keywords, strings, numbers and names.
function highlightExpr(code) {
  const re = /("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(\b\d+(?:\.\d+)?\b)|(\b(?:block|endblock|if|elif|else|endif|for|endfor|in|not|and|or|is|set|endset|with|endwith|macro|endmacro|filter|endfilter|raw|endraw|true|false|none|True|False|None|loop|defined)\b)|([A-Za-z_][A-Za-z0-9_]*)/g;
  let out = "", last = 0, m;
  while ((m = re.exec(code)) !== null) {
    out += escapeHtml(code.slice(last, m.index));
    if (m[1]) out += span("tok-str", m[1]);
    else if (m[2]) out += span("tok-num", m[2]);
    else if (m[3]) out += span("tok-kw", m[3]);
    else {
      const before = code.slice(0, m.index);
      // A name after '|' is a filter, after `block` a block name; anything else a variable.
      const cls = /\|\s*$/.test(before) ? "tok-filter" : /\bblock\s*$/.test(before) ? "tok-block" : "tok-var";
      out += span(cls, m[4]);
    }
    last = re.lastIndex;
  }
  return out + escapeHtml(code.slice(last));
}

function highlightJinja(text) {
  const re = /(\{#[\s\S]*?(?:#\}|$))|(\{%-?)([\s\S]*?)(-?%\}|$)|(\{\{-?)([\s\S]*?)(-?\}\}|$)/g;
  let out = "", last = 0, m;
  while ((m = re.exec(text)) !== null) {
    if (m[0] === "") { re.lastIndex++; continue; }
    out += escapeHtml(text.slice(last, m.index));
    if (m[1] !== undefined) out += span("tok-comment", m[1]);
    else if (m[2] !== undefined) out += '<span class="tok-tag">' + escapeHtml(m[2]) + highlightExpr(m[3]) + escapeHtml(m[4]) + "</span>";
    else out += '<span class="tok-out">' + escapeHtml(m[5]) + highlightExpr(m[6]) + escapeHtml(m[7]) + "</span>";
    last = re.lastIndex;
  }
  return out + escapeHtml(text.slice(last));
}

function highlightYaml(text) {
  return text.split("\n").map(function (line) {
    const comment = line.match(/^(.*?)(\s#.*)$/);
    const body = comment ? comment[1] : line;
    const tail = comment ? span("tok-comment", comment[2]) : "";
    const key = body.match(/^(\s*-?\s*)([A-Za-z_][\w.-]*)(\s*:)(.*)$/);
    if (key) return escapeHtml(key[1]) + span("tok-key", key[2]) + escapeHtml(key[3]) + span("tok-val", key[4]) + tail;
    return escapeHtml(body) + tail;
  }).join("\n");
}

// The whole file: the front matter (between the first two '---' lines) as YAML, the rest as Jinja.
function highlightTemplate(text) {
  const lines = text.split("\n");
  if (lines[0].trim() === "---") {
    const close = lines.findIndex(function (l, i) { return i > 0 && l.trim() === "---"; });
    if (close > 0) {
      const front = lines.slice(1, close).join("\n");
      const body = lines.slice(close + 1).join("\n");
      return span("tok-fence", lines[0]) + "\n" + highlightYaml(front) + "\n" + span("tok-fence", lines[close]) +
        (close + 1 < lines.length ? "\n" + highlightJinja(body) : "");
    }
  }
  return highlightJinja(text);
}
