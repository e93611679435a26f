// optascan's page: plain JS, no build step, no CDN. Talks to the same API as every other client.
"use strict";

const $ = (id) => document.getElementById(id);
const key = new URLSearchParams(location.search).get("api_key") || sessionStorage.getItem("optascan-key") || "";
if (key) sessionStorage.setItem("optascan-key", key);

function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (key) headers.Authorization = "Bearer " + key;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json), method: options.method || "POST" };
  }
  return fetch(path, { ...options, headers });
}

async function failure(response) {
  try {
    const body = await response.json();
    const e = body.error || {};
    return (e.message || response.statusText) + (e.hint ? " (" + e.hint + ")" : "");
  } catch (_) {
    return response.status + " " + response.statusText;
  }
}

// Reads a text/event-stream body; calls onData with each parsed "data:" payload ("[DONE]" is skipped).
async function readSSE(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ") && line !== "data: [DONE]") onData(JSON.parse(line.slice(6)));
      }
    }
  }
}

// --- tabs -----------------------------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.removeAttribute("aria-current"));
  tab.setAttribute("aria-current", "page");
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== tab.dataset.tab; });
  if (tab.dataset.tab === "history") loadHistory();
  if (tab.dataset.tab === "models") loadModels();
}));

// --- photo intake ---------------------------------------------------------------------------------
let photo = null; // data: URL, downscaled in the browser (a phone photo need not cross the wire at 12 MP)

async function takePhoto(file) {
  if (!file) return;
  const bitmap = await createImageBitmap(file); // applies EXIF orientation
  const scale = Math.min(1, 2048 / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  photo = canvas.toDataURL("image/jpeg", 0.92);
  $("preview").src = photo;
  $("preview").alt = "The chosen photo";
  $("preview").hidden = false;
}

$("photo").addEventListener("change", (e) => takePhoto(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); takePhoto(e.dataTransfer.files[0]); });

// --- progress -------------------------------------------------------------------------------------
function showProgress(p) {
  $("progress").hidden = false;
  const pct = p.max_tokens ? Math.min(100, Math.round((100 * p.tokens) / p.max_tokens)) : 0;
  $("ring-bar").style.strokeDashoffset = String(100 - pct);
  $("ring").setAttribute("aria-valuenow", String(pct));
  const speed = p.tokens_per_s ? ` · ${p.tokens_per_s.toFixed(1)} tok/s` : "";
  const state = p.queue_position ? `queued (#${p.queue_position})` : p.state || "generating";
  $("stats").textContent = `${state} · ${p.tokens} / ${p.max_tokens} tokens${speed}`;
}

let running = null; // { abort: AbortController, generationId?: string }

function setRunning(job) {
  running = job;
  $("cancel").disabled = !job;
  $("start").disabled = !!job;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

$("cancel").addEventListener("click", async () => {
  if (!running) return;
  $("stats").textContent = "cancelling";
  if (running.generationId) {
    await api(`/api/generations/${running.generationId}/cancel`, { method: "POST" });
  } else {
    running.abort.abort(); // closing the stream cancels the flow's generation on the server
  }
});

// --- scan: a plain answer, streamed through the OpenAI-compatible endpoint -------------------------
async function ask(goal, model) {
  const content = [{ type: "text", text: goal }];
  if (photo) content.unshift({ type: "image_url", image_url: { url: photo } });
  const job = { abort: new AbortController() };
  setRunning(job);
  const response = await api("/v1/chat/completions", {
    json: { model, messages: [{ role: "user", content }], stream: true, temperature: 0, max_tokens: 256,
            stream_options: { include_usage: true } },
    signal: job.abort.signal,
  });
  if (!response.ok) throw new Error(await failure(response));
  job.generationId = response.headers.get("X-Generation-Id");
  let tokens = 0;
  const started = performance.now();
  let first = null;
  await readSSE(response, (chunk) => {
    if (chunk.error) throw new Error(chunk.error.message);
    const choice = chunk.choices && chunk.choices[0];
    if (choice && choice.delta && choice.delta.content) {
      if (first === null) first = performance.now();
      tokens += 1;
      $("answer").textContent += choice.delta.content;
      const seconds = (performance.now() - first) / 1000;
      showProgress({ tokens, max_tokens: 256, tokens_per_s: seconds > 0 ? (tokens - 1) / seconds : null });
    }
    if (choice && choice.finish_reason) $("stats").textContent += ` · ${choice.finish_reason}`;
    if (chunk.usage) {
      const ms = first === null ? 0 : Math.round(first - started);
      showProgress({ tokens: chunk.usage.completion_tokens, max_tokens: chunk.usage.completion_tokens,
                     state: `done in ${ms} ms to first token`});
    }
  });
}

// --- scan: the Opta flow (analyze → questions → answer) --------------------------------------------
let session = null;

async function flowStream(path, body) {
  const job = { abort: new AbortController() };
  setRunning(job);
  const response = await api(path, { json: body, signal: job.abort.signal });
  if (!response.ok) throw new Error(await failure(response));
  let final = null;
  await readSSE(response, (event) => {
    if (event.type === "progress") {
      showProgress(event);
      if (event.delta) $("answer").textContent += event.delta;
    } else if (event.type === "error") {
      throw new Error(event.error.message + (event.error.hint ? ` (${event.error.hint})` : ""));
    } else {
      final = event;
    }
  });
  if (!final) throw new Error("the stream ended early (cancelled)");
  return final;
}

function questionCard(q) {
  const card = document.createElement("fieldset");
  card.className = "card";
  card.dataset.id = q.id;
  card.dataset.kind = q.kind;
  const legend = document.createElement("legend");
  legend.textContent = q.prompt;
  card.append(legend);
  const name = "q-" + q.id;
  if (q.kind === "single_choice" || q.kind === "multi_choice") {
    q.options.forEach((option, i) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = q.kind === "single_choice" ? "radio" : "checkbox";
      input.name = name;
      input.value = option;
      if (i === 0 && q.kind === "single_choice") input.checked = true;
      label.append(input, " " + option);
      card.append(label);
    });
  } else {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.name = name;
    input.id = name;
    label.htmlFor = name;
    if (q.kind === "slider") {
      input.type = "range";
      input.min = q.min ?? 0;
      input.max = q.max ?? 100;
      input.value = q.default ?? input.min;
      label.textContent = `${input.value}${q.unit ? " " + q.unit : ""}`;
      input.addEventListener("input", () => { label.textContent = `${input.value}${q.unit ? " " + q.unit : ""}`; });
    } else {
      input.placeholder = q.placeholder || "";
      label.textContent = "Your answer";
    }
    card.append(label, input);
  }
  return card;
}

function collectAnswers() {
  const answers = {};
  document.querySelectorAll("#question-cards fieldset").forEach((card) => {
    const inputs = [...card.querySelectorAll("input")];
    const kind = card.dataset.kind;
    if (kind === "multi_choice") answers[card.dataset.id] = inputs.filter((i) => i.checked).map((i) => i.value);
    else if (kind === "single_choice") answers[card.dataset.id] = (inputs.find((i) => i.checked) || {}).value;
    else if (kind === "slider") answers[card.dataset.id] = Number(inputs[0].value);
    else if (inputs[0].value) answers[card.dataset.id] = inputs[0].value;
  });
  return answers;
}

function renderResult(container, result) {
  container.replaceChildren();
  const title = document.createElement("h3");
  title.textContent = result.title;
  const summary = document.createElement("p");
  summary.textContent = result.summary;
  const list = document.createElement("ol");
  list.className = "ranked cards";
  for (const option of result.options || []) {
    const item = document.createElement("li");
    item.className = "card option";
    const name = document.createElement("h4");
    name.textContent = option.name;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${option.score}/10`;
    const why = document.createElement("p");
    why.textContent = option.why;
    item.append(score, name, why);
    list.append(item);
  }
  container.append(title, summary, list);
  for (const [heading, items] of [["Highlights", result.highlights], ["Caveats", result.caveats]]) {
    if (!items || !items.length) continue;
    const h = document.createElement("h4");
    h.textContent = heading;
    const ul = document.createElement("ul");
    for (const text of items) { const li = document.createElement("li"); li.textContent = text; ul.append(li); }
    container.append(h, ul);
  }
  container.hidden = false;
}

async function optimize(goal, model, depth) {
  const analysis = await flowStream("/api/flow/analyze", { goal, model, depth, images: photo ? [photo] : [] });
  session = analysis.session_id;
  $("answer").textContent = "";
  $("understanding").textContent = analysis.understanding;
  const cards = $("question-cards");
  cards.replaceChildren(...analysis.questions.map(questionCard));
  $("questions").hidden = false;
  if (!analysis.questions.length) $("questions-title").textContent = "No questions needed";
  const first = cards.querySelector("input");
  (first || $("questions").querySelector("button")).focus();
}

$("questions").addEventListener("submit", (e) => {
  e.preventDefault();
  run(async () => {
    $("questions").hidden = true;
    const done = await flowStream(`/api/flow/${session}/answer`, { answers: collectAnswers() });
    $("answer").textContent = "";
    renderResult($("result"), done.result);
    $("result").focus();
  });
});

async function run(work) {
  showError("");
  try {
    await work();
  } catch (error) {
    showError(error.name === "AbortError" ? "Cancelled." : error.message);
  } finally {
    setRunning(null);
  }
}

$("scan-form").addEventListener("submit", (e) => {
  e.preventDefault();
  $("answer").textContent = "";
  $("result").hidden = true;
  $("questions").hidden = true;
  const goal = $("goal").value.trim();
  const model = $("model").value || undefined;
  const kind = document.querySelector("input[name=kind]:checked").value;
  run(() => (kind === "ask" ? ask(goal, model) : optimize(goal, model, $("depth").value)));
});

// --- history --------------------------------------------------------------------------------------
async function loadHistory(q = "") {
  const response = await api("/api/history" + (q ? "?q=" + encodeURIComponent(q) : ""));
  if (!response.ok) return showError(await failure(response));
  const { scans } = await response.json();
  const list = $("history-list");
  list.replaceChildren();
  if (!scans.length) list.textContent = "Nothing here yet.";
  for (const scan of scans) {
    const item = document.createElement("li");
    item.className = "card";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary";
    open.textContent = `${scan.goal} — ${(scan.result && scan.result.title) || ""}`;
    open.addEventListener("click", () => renderResult($("history-detail"), scan.result));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete "${scan.goal}"`);
    remove.addEventListener("click", async () => {
      await api(`/api/history/${scan.id}`, { method: "DELETE" });
      loadHistory(q);
    });
    const when = document.createElement("p");
    when.className = "muted";
    when.textContent = new Date(scan.created * 1000).toLocaleString() + ` · ${scan.model} · ${scan.depth}`;
    item.append(open, when, remove);
    list.append(item);
  }
}
$("history-search").addEventListener("submit", (e) => { e.preventDefault(); loadHistory($("history-q").value); });

// --- models ---------------------------------------------------------------------------------------
function mb(bytes) { return bytes ? `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB` : "?"; }

async function loadModels() {
  const response = await api("/api/models");
  if (!response.ok) return showError(await failure(response));
  const data = await response.json();
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...data.served.map((name) => new Option(name, name)));
  if (chosen) select.value = chosen;
  $("models-note").textContent = `Served here: ${data.served.join(", ")}.`;
  const list = $("model-list");
  list.replaceChildren();
  for (const entry of data.catalog) {
    const item = document.createElement("li");
    item.className = "card";
    const title = document.createElement("h3");
    title.textContent = entry.name;
    const info = document.createElement("p");
    const loaded = entry.loaded ? ` · loaded, ${mb(entry.loaded.bytes)} in memory` : "";
    info.textContent = `${entry.description} · ${mb(entry.download_bytes)} · ${entry.licence}` +
      (entry.installed ? " · installed" : "") + loaded;
    item.append(title, info);
    const button = (label, action) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.textContent = label;
      b.setAttribute("aria-label", `${label} ${entry.name}`);
      b.addEventListener("click", action);
      item.append(b);
    };
    if (!entry.installed) button("Pull", () => pull(entry.name));
    if (entry.loaded) button("Unload", async () => { await api(`/api/models/${entry.name}/unload`, { method: "POST" }); loadModels(); });
    if (entry.installed && entry.repo_id) {
      button("Delete", async () => { await api(`/api/models/${entry.repo_id}`, { method: "DELETE" }); loadModels(); });
    }
    list.append(item);
  }
}

async function pull(name) {
  $("pull-progress").hidden = false;
  $("pull-text").textContent = `pulling ${name}`;
  const response = await api("/api/pull", { json: { model: name } });
  if (!response.ok) { $("pull-text").textContent = await failure(response); return; }
  await readSSE(response, (event) => {
    if (event.type === "progress") {
      $("pull-bar").value = event.fraction;
      const speed = event.bytes_per_s ? ` · ${mb(event.bytes_per_s)}/s` : "";
      $("pull-text").textContent = `${name}: ${mb(event.bytes)} of ${mb(event.total)}${speed}`;
    } else if (event.type === "done") {
      $("pull-bar").value = 1;
      $("pull-text").textContent = `${name}: done (${event.repo_id})`;
    } else if (event.type === "error") {
      $("pull-text").textContent = `${name}: ${event.error.message}`;
    }
  });
  loadModels();
}
$("pull-form").addEventListener("submit", (e) => { e.preventDefault(); pull($("pull-name").value.trim()); });

loadModels();
