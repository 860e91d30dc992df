// openbatch console: a page over the public /v1 API, with the user's key, and nothing else.
// No build step and no third-party code. The key is kept in sessionStorage (this tab only)
// and sent as an Authorization header; it never goes into a URL, the page or a log.
"use strict";

const API = location.pathname.replace(/[^/]*$/, "") + "v1";
const KEY_SLOT = "openbatch.apiKey";
const PART_BYTES = 4 * 1024 * 1024; // one API request carries about 4.5 MB
const POLL_MS = 2000;
const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);
const STATUSES = ["validating", "in_progress", "finalizing", "completed", "failed", "expired",
  "cancelling", "cancelled"];
const ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
  "/v1/score", "/v1/rerank"];
const TIMELINE = [["created_at", "created"], ["in_progress_at", "in progress"],
  ["finalizing_at", "finalizing"], ["completed_at", "completed"], ["failed_at", "failed"],
  ["cancelling_at", "cancelling"], ["cancelled_at", "cancelled"], ["expired_at", "expired"],
  ["expires_at", "window ends"]];

const main = document.getElementById("main");
const announcer = document.getElementById("announce");
let timer = null; // the one poll of the view on screen
const samples = new Map(); // batch id -> [{t, done, tokens}] seen by this tab

// -- small helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces a node's children, skipping null/undefined/false as h() does: the DOM's own
// replaceChildren would write them out as the text "null" (a pager with no links did).
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function announce(text) { announcer.textContent = text; }
function when(seconds) { return seconds ? new Date(seconds * 1000).toLocaleString() : "—"; }
function number(value) { return (value || 0).toLocaleString(); }
function bytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}
function duration(seconds) {
  seconds = Math.round(seconds);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, "0")}s`;
  return `${Math.floor(seconds / 3600)}h ${String(Math.floor(seconds % 3600 / 60)).padStart(2, "0")}m`;
}
function badge(status) { return h("span", { class: `badge ${status}` }, status.replace("_", " ")); }
function alertBox(text) { return h("p", { class: "alert", role: "alert" }, text); }

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The API answered ${status}.`);
    this.status = status; this.param = error.param; this.code = error.code;
  }
}

// -- the API --------------------------------------------------------------------------------

function key() { return sessionStorage.getItem(KEY_SLOT); }

async function api(method, path, { json, form, raw } = {}) {
  const headers = { Authorization: `Bearer ${key()}` };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  const response = await fetch(API + path, { method, headers, body, credentials: "omit", cache: "no-store" });
  if (response.status === 401) { signOut("Your key was refused; sign in again."); throw new ApiError(401, null); }
  if (!response.ok) {
    let detail = null;
    try { detail = await response.json(); } catch (ignored) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return raw ? response : response.json();
}

async function download(fileId, name) {
  const response = await api("GET", `/files/${encodeURIComponent(fileId)}/content`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: name });
  document.body.append(link); link.click(); link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  announce(`Downloaded ${name}.`);
}

async function uploadFile(file, progress) {
  if (file.size <= PART_BYTES) {
    const form = new FormData();
    form.append("purpose", "batch");
    form.append("file", file, file.name);
    progress(`Uploading ${file.name} (${bytes(file.size)})…`);
    return api("POST", "/files", { form });
  }
  const upload = await api("POST", "/uploads", {
    json: { bytes: file.size, filename: file.name, mime_type: "application/jsonl", purpose: "batch" },
  });
  const parts = [];
  const count = Math.ceil(file.size / PART_BYTES);
  for (let index = 0; index < count; index++) {
    progress(`Uploading part ${index + 1} of ${count}…`);
    const form = new FormData();
    form.append("data", file.slice(index * PART_BYTES, (index + 1) * PART_BYTES), `part-${index}`);
    parts.push((await api("POST", `/uploads/${upload.id}/parts`, { form })).id);
  }
  progress("Joining the parts…");
  const done = await api("POST", `/uploads/${upload.id}/complete`, { json: { part_ids: parts } });
  return done.file;
}

async function firstUrl(file) {
  // The first line's url. A line can be far longer than what is worth reading here: then
  // its "url" field is looked for in the first 64 KB (batch lines put it before the body).
  const head = await file.slice(0, 64 * 1024).text();
  const line = head.split("\n").find((l) => l.trim()) || "";
  try { return JSON.parse(line).url || ""; } catch (ignored) { /* cut short, or not JSON */ }
  const found = line.match(/"url"\s*:\s*"([^"]{1,64})"/);
  return found ? found[1] : "";
}

// -- progress and ETA -------------------------------------------------------------------------

function counts(batch) {
  const c = batch.request_counts || { total: 0, completed: 0, failed: 0 };
  return { total: c.total, completed: c.completed, failed: c.failed, done: c.completed + c.failed };
}

function remember(batch) {
  const list = samples.get(batch.id) || [];
  const c = counts(batch);
  const tokens = batch.usage ? batch.usage.output_tokens : 0;
  const last = list[list.length - 1];
  if (!last || last.done !== c.done || last.tokens !== tokens || Date.now() - last.t > 10000) {
    list.push({ t: Date.now(), done: c.done, tokens });
    if (list.length > 600) list.shift();
  }
  samples.set(batch.id, list);
  return list;
}

function eta(batch) {
  if (TERMINAL.has(batch.status)) return "—";
  const list = samples.get(batch.id) || [];
  const c = counts(batch);
  if (list.length < 2 || c.total === 0) return batch.status === "in_progress" ? "measuring…" : "—";
  const first = list[0], last = list[list.length - 1];
  const rate = (last.done - first.done) / Math.max((last.t - first.t) / 1000, 0.001);
  if (rate <= 0) return "measuring…";
  return duration((c.total - c.done) / rate);
}

function progressBar(batch) {
  const c = counts(batch);
  // Widths through the CSSOM: the page's policy refuses inline style attributes.
  const bar = (className, n) => {
    const part = h("span", { class: className });
    part.style.width = `${c.total ? (100 * n / c.total).toFixed(2) : 0}%`;
    return part;
  };
  return h("div", {},
    h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": c.total || 1,
      "aria-valuenow": c.done, "aria-label": `${c.done} of ${c.total} requests done` },
      bar("done", c.completed), bar("failed", c.failed)),
    h("div", { class: "progress-label" }, `${number(c.done)} / ${number(c.total)} done, ${number(c.failed)} failed`));
}

// -- views ------------------------------------------------------------------------------------

function show(...nodes) {
  clearTimeout(timer); timer = null;
  fill(main, ...nodes);
}

function markNav(view) {
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function signInView(message) {
  document.getElementById("nav").hidden = true;
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "key-hint" });
  const status = h("div", { "aria-live": "assertive" }, message ? alertBox(message) : null);
  const form = h("form", { class: "stack", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_SLOT, input.value.trim());
    try {
      await api("GET", "/batches?limit=1");
      input.value = "";
      location.hash = "#/batches"; route();
    } catch (error) {
      if (error.status !== 401) status.replaceChildren(alertBox(error.message));
    }
  } },
    h("div", {}, h("label", { for: "api-key" }, "API key"), input,
      h("p", { class: "hint", id: "key-hint" }, "Kept in this browser tab only (session storage) and sent only to this API.")),
    h("div", {}, h("button", { type: "submit" }, "Sign in")), status);
  show(h("h2", {}, "Sign in"), form);
  input.focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_SLOT);
  samples.clear();
  signInView(message);
}

async function batchesView(params) {
  markNav("batches");
  const filter = params.get("status") || "";
  const after = params.get("after") || "";
  const select = h("select", { id: "status-filter", onchange: () => {
    const next = new URLSearchParams(params); next.delete("after");
    if (select.value) next.set("status", select.value); else next.delete("status");
    location.hash = `#/batches?${next}`;
  } }, h("option", { value: "" }, "All statuses"), STATUSES.map((s) => h("option", { value: s, selected: s === filter }, s.replace("_", " "))));
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const note = h("div", { "aria-live": "polite" });
  show(h("h2", {}, "Batches"),
    h("div", { class: "toolbar" }, h("div", {}, h("label", { for: "status-filter" }, "Status"), select),
      h("div", {}, h("a", { class: "button", href: "#/new" }, "New batch"))),
    note,
    h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "visually-hidden" }, "Batches, newest first"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Batch"), h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Progress"), h("th", { scope: "col", class: "num" }, "Tokens in / out"),
        h("th", { scope: "col" }, "Created"), h("th", { scope: "col" }, "ETA"))), body)),
    pager);
  const refresh = async () => {
    let page;
    try {
      page = await api("GET", `/batches?limit=20${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    } catch (error) { note.replaceChildren(alertBox(error.message)); return; }
    const shown = page.data.filter((b) => !filter || b.status === filter);
    body.replaceChildren(...shown.map((batch) => {
      remember(batch);
      const usage = batch.usage || { input_tokens: 0, output_tokens: 0 };
      return h("tr", { "data-batch": batch.id },
        h("td", {}, h("a", { href: `#/batches/${batch.id}`, class: "mono" }, batch.id)),
        h("td", {}, badge(batch.status)), h("td", {}, progressBar(batch)),
        h("td", { class: "num" }, `${number(usage.input_tokens)} / ${number(usage.output_tokens)}`),
        h("td", {}, when(batch.created_at)), h("td", {}, eta(batch)));
    }));
    fill(note, shown.length ? null : h("p", { class: "note" },
      filter ? `No ${filter.replace("_", " ")} batch on this page.` : "No batches yet."));
    const older = new URLSearchParams(params);
    fill(pager,
      after ? h("a", { class: "button secondary", href: "#/batches" + (filter ? `?status=${filter}` : "") }, "Newest") : null,
      page.has_more && page.last_id ? (older.set("after", page.last_id), h("a", { class: "button secondary", href: `#/batches?${older}` }, "Older")) : null);
    if (page.data.some((b) => !TERMINAL.has(b.status))) timer = setTimeout(refresh, POLL_MS);
  };
  await refresh();
}

function timeline(batch) {
  return h("dl", { class: "facts" }, TIMELINE.filter(([field]) => batch[field])
    .map(([field, label]) => [h("dt", {}, label), h("dd", {}, when(batch[field]))]));
}

function chart(title, points, className, unit) {
  const width = 320, height = 150, pad = 30;
  const box = h("div", { class: "card chart" }, h("h3", {}, title));
  if (points.length < 2) { box.append(h("p", { class: "hint" }, "The chart fills in while this page watches the batch.")); return box; }
  const t0 = points[0][0], t1 = points[points.length - 1][0] || t0 + 1;
  const top = Math.max(...points.map((p) => p[1]), 1);
  const x = (t) => pad + (width - pad - 8) * (t - t0) / Math.max(t1 - t0, 1);
  const y = (v) => height - pad + 10 - (height - pad - 10) * v / top;
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  box.append(svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `${title}: from ${points[0][1]} to ${points[points.length - 1][1]} ${unit} over ${duration((t1 - t0) / 1000)}` },
    svg("line", { class: "axis", x1: pad, y1: height - pad + 10, x2: width - 8, y2: height - pad + 10 }),
    svg("line", { class: "axis", x1: pad, y1: 10, x2: pad, y2: height - pad + 10 }),
    svg("text", { x: 2, y: 16 }, document.createTextNode(String(Math.round(top)))),
    svg("text", { x: 2, y: height - pad + 10 }, document.createTextNode("0")),
    svg("text", { x: width - 60, y: height - 6 }, document.createTextNode(duration((t1 - t0) / 1000))),
    svg("path", { class: `series ${className}`, d: path })));
  return box;
}

async function errorLines(batch) {
  const box = h("div", {}, h("h3", {}, "First lines of the error file"));
  try {
    const response = await api("GET", `/files/${encodeURIComponent(batch.error_file_id)}/content`, { raw: true });
    const lines = (await response.text()).split("\n").filter(Boolean).slice(0, 10).map((line) => JSON.parse(line));
    box.append(h("div", { class: "table-wrap" }, h("table", { id: "error-lines" },
      h("thead", {}, h("tr", {}, ["custom_id", "status", "code", "message"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, lines.map((line) => {
        const error = line.error || (line.response && line.response.body && line.response.body.error) || {};
        return h("tr", {}, h("td", { class: "mono" }, line.custom_id), h("td", {}, line.response ? line.response.status_code : "—"),
          h("td", {}, error.code || "—"), h("td", {}, error.message || ""));
      })))));
  } catch (error) { box.append(alertBox(error.message)); }
  return box;
}

async function batchView(id) {
  markNav("batches");
  const holder = h("div", { "aria-live": "polite" });
  const errorsBox = h("div");
  let errorFileShown = false;
  show(h("p", {}, h("a", { href: "#/batches" }, "← All batches")), holder, errorsBox);
  const refresh = async () => {
    let batch;
    try { batch = await api("GET", `/batches/${encodeURIComponent(id)}`); }
    catch (error) { holder.replaceChildren(alertBox(error.message)); return; }
    const list = remember(batch);
    const action = (label, handler, attrs = {}) => h("button", { type: "button", ...attrs, onclick: async (event) => {
      event.target.disabled = true;
      try { await handler(); } catch (error) { holder.prepend(alertBox(error.message)); }
      finally { event.target.disabled = false; }
    } }, label);
    const c = counts(batch);
    const tokensPerSecond = list.slice(1).map((p, i) => [p.t, (p.tokens - list[i].tokens) / Math.max((p.t - list[i].t) / 1000, 0.001)]);
    const usage = batch.usage || { input_tokens: 0, output_tokens: 0 };
    holder.replaceChildren(
      h("h2", {}, "Batch ", h("span", { class: "mono" }, batch.id), " ", badge(batch.status)),
      h("div", { class: "actions" },
        ["validating", "in_progress"].includes(batch.status) ? action("Cancel batch", async () => {
          if (!confirm("Cancel this batch? Finished results are kept.")) return;
          await api("POST", `/batches/${batch.id}/cancel`); announce("Cancelling."); await refresh();
        }, { class: "danger", id: "cancel" }) : null,
        ["completed", "expired", "cancelled"].includes(batch.status) && c.failed + (c.total - c.done) > 0 ? action("Retry what failed", async () => {
          const child = await api("POST", `/batches/${batch.id}/retry`, { json: {} });
          location.hash = `#/batches/${child.id}`;
        }, { class: "secondary", id: "retry" }) : null,
        batch.output_file_id ? action("Download output", () => download(batch.output_file_id, `${batch.id}_output.jsonl`), { id: "download-output" }) : null,
        batch.error_file_id ? action("Download errors", () => download(batch.error_file_id, `${batch.id}_errors.jsonl`), { class: "secondary", id: "download-errors" }) : null),
      progressBar(batch),
      h("div", { class: "grid2" },
        h("div", { class: "card" }, h("h3", {}, "Timeline"), timeline(batch)),
        h("div", { class: "card" }, h("h3", {}, "Details"), h("dl", { class: "facts" },
          h("dt", {}, "endpoint"), h("dd", { class: "mono" }, batch.endpoint),
          h("dt", {}, "model"), h("dd", {}, batch.model || "—"),
          h("dt", {}, "window"), h("dd", {}, batch.completion_window),
          h("dt", {}, "input file"), h("dd", { class: "mono" }, batch.input_file_id),
          h("dt", {}, "tokens"), h("dd", {}, `${number(usage.input_tokens)} in, ${number(usage.output_tokens)} out`),
          h("dt", {}, "ETA"), h("dd", {}, eta(batch)),
          h("dt", {}, "priority"), h("dd", { id: "priority" }, String(batch.priority ?? 0)),
          h("dt", {}, "reused requests"), h("dd", { id: "reused" }, number(batch.reused_requests ?? 0)),
          h("dt", {}, "GPU time"), h("dd", { id: "gpu-seconds" }, `${(batch.gpu_seconds ?? 0).toFixed(1)} GPU-seconds`),
          h("dt", {}, "estimated cost"), h("dd", { id: "estimated-cost", title: "GPU time at the deployment's GpuHourlyPrice; idle and cold-start time are not in it" }, `$${(batch.estimated_cost ?? 0).toFixed(4)}`),
          Object.entries(batch.metadata || {}).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
        chart("Completed requests", list.map((p) => [p.t, p.done]), "done", "requests"),
        chart("Output tokens per second", tokensPerSecond, "tokens", "tokens/s")));
    const problems = (batch.errors && batch.errors.data) || [];
    if (problems.length && !errorsBox.querySelector("#validation-errors")) {
      errorsBox.prepend(h("h3", {}, "Validation errors"), h("div", { class: "table-wrap" }, h("table", { id: "validation-errors" },
        h("thead", {}, h("tr", {}, ["line", "code", "param", "message"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, problems.map((e) => h("tr", {}, h("td", { class: "num" }, e.line ?? "—"), h("td", {}, e.code || ""),
          h("td", { class: "mono" }, e.param || "—"), h("td", {}, e.message || "")))))));
    }
    if (batch.error_file_id && !errorFileShown) { errorFileShown = true; errorsBox.append(await errorLines(batch)); }
    if (!TERMINAL.has(batch.status)) timer = setTimeout(refresh, POLL_MS);
    else announce(`Batch ${batch.status}.`);
  };
  await refresh();
}

function newBatchView() {
  markNav("new");
  const status = h("div", { "aria-live": "polite" });
  const pairs = h("div", { id: "metadata" });
  const addPair = () => {
    const n = pairs.children.length;
    if (n >= 16) return;
    pairs.append(h("div", { class: "pair" },
      h("div", {}, h("label", { for: `meta-key-${n}` }, `Metadata key ${n + 1}`), h("input", { id: `meta-key-${n}`, maxlength: 64, class: "meta-key" })),
      h("div", {}, h("label", { for: `meta-value-${n}` }, `Value ${n + 1}`), h("input", { id: `meta-value-${n}`, maxlength: 512, class: "meta-value" })),
      h("button", { type: "button", class: "secondary", "aria-label": `Remove metadata pair ${n + 1}`, onclick: (e) => e.target.closest(".pair").remove() }, "Remove")));
  };
  const file = h("input", { id: "input-file", type: "file", accept: ".jsonl,application/jsonl,application/x-ndjson", required: true, "aria-describedby": "file-hint" });
  const endpoint = h("select", { id: "endpoint" }, h("option", { value: "" }, "From the file's first line"), ENDPOINTS.map((e) => h("option", { value: e }, e)));
  const windowInput = h("input", { id: "window", value: "24h", required: true, pattern: "([1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])h|[1-7]d", "aria-describedby": "window-hint" });
  const priority = h("input", { id: "priority-input", type: "number", step: 1, min: -1000, max: 1000, placeholder: "0", "aria-describedby": "priority-hint" });
  const submit = h("button", { type: "submit" }, "Create batch");
  const form = h("form", { class: "stack", onsubmit: async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    submit.disabled = true;
    const say = (text) => status.replaceChildren(h("p", { class: "note" }, text));
    try {
      let url = endpoint.value;
      if (!url) {
        url = await firstUrl(chosen);
        if (!ENDPOINTS.includes(url)) throw new Error("The file's first line names no endpoint: choose one.");
      }
      const metadata = {};
      for (const pair of pairs.querySelectorAll(".pair")) {
        const k = pair.querySelector(".meta-key").value.trim();
        if (k) metadata[k] = pair.querySelector(".meta-value").value;
      }
      const uploaded = await uploadFile(chosen, say);
      say("Creating the batch…");
      const params = { input_file_id: uploaded.id, endpoint: url,
        completion_window: windowInput.value.trim(), metadata: Object.keys(metadata).length ? metadata : null };
      if (priority.value.trim()) params.priority = Number(priority.value);
      const batch = await api("POST", "/batches", { json: params });
      announce(`Batch ${batch.id} created.`);
      location.hash = `#/batches/${batch.id}`;
    } catch (error) {
      status.replaceChildren(alertBox(error.param ? `${error.message} (${error.param})` : error.message));
    } finally { submit.disabled = false; }
  } },
    h("div", {}, h("label", { for: "input-file" }, "JSONL file"), file,
      h("p", { class: "hint", id: "file-hint" }, "One request per line, in OpenAI's batch format. Files over 4 MB go up in parts.")),
    h("div", {}, h("label", { for: "endpoint" }, "Endpoint"), endpoint),
    h("div", {}, h("label", { for: "window" }, "Completion window"), windowInput,
      h("p", { class: "hint", id: "window-hint" }, "1h to 168h, or 1d to 7d.")),
    h("div", {}, h("label", { for: "priority-input" }, "Priority"), priority,
      h("p", { class: "hint", id: "priority-hint" }, "Orders your own batches that wait together: higher runs first (default 0).")),
    h("fieldset", {}, h("legend", {}, "Metadata (up to 16 pairs)"), pairs,
      h("button", { type: "button", class: "secondary", onclick: addPair }, "Add a pair")),
    h("div", {}, submit), status);
  show(h("h2", {}, "New batch"), form);
}

async function filesView(params) {
  markNav("files");
  const after = params.get("after") || "";
  const body = h("tbody");
  const note = h("div", { "aria-live": "polite" });
  const pager = h("div", { class: "pager" });
  show(h("h2", {}, "Files"), note, h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "visually-hidden" }, "Files, newest first"),
    h("thead", {}, h("tr", {}, ["File", "Name", "Purpose", "Size", "Created", "Expires", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
    body)), pager);
  let page;
  try { page = await api("GET", `/files?limit=20&order=desc${after ? `&after=${encodeURIComponent(after)}` : ""}`); }
  catch (error) { note.replaceChildren(alertBox(error.message)); return; }
  body.replaceChildren(...page.data.map((file) => h("tr", { "data-file": file.id },
    h("td", { class: "mono" }, file.id), h("td", {}, file.filename), h("td", {}, file.purpose),
    h("td", { class: "num" }, bytes(file.bytes)), h("td", {}, when(file.created_at)), h("td", {}, when(file.expires_at)),
    h("td", {}, h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", "aria-label": `Download ${file.filename}`, onclick: () => download(file.id, file.filename).catch((e) => note.replaceChildren(alertBox(e.message))) }, "Download"),
      h("button", { type: "button", class: "danger", "aria-label": `Delete ${file.filename}`, onclick: async () => {
        if (!confirm(`Delete ${file.filename}? Its bytes are removed.`)) return;
        try { await api("DELETE", `/files/${file.id}`); announce(`Deleted ${file.filename}.`); await filesView(params); }
        catch (error) { note.replaceChildren(alertBox(error.message)); }
      } }, "Delete"))))));
  if (!page.data.length) note.replaceChildren(h("p", { class: "note" }, "No files."));
  fill(pager,
    after ? h("a", { class: "button secondary", href: "#/files" }, "Newest") : null,
    page.has_more && page.last_id ? h("a", { class: "button secondary", href: `#/files?after=${page.last_id}` }, "Older") : null);
}

// -- routing ----------------------------------------------------------------------------------

async function route() {
  if (!key()) { signInView(); return; }
  document.getElementById("nav").hidden = false;
  const [path, query] = (location.hash.slice(1) || "/batches").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "batches" && parts[1]) await batchView(decodeURIComponent(parts[1]));
    else if (parts[0] === "new") newBatchView();
    else if (parts[0] === "files") await filesView(params);
    else await batchesView(params);
  } catch (error) {
    if (error.status !== 401) show(alertBox(error.message));
  }
  main.focus({ preventScroll: true });
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
