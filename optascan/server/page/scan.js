// The Scan tab: photo intake, the streamed plain answer, and the Opta flow (questions, then the ranked result).
"use strict";

import { $, api, failure, readSSE, showError } from "./util.js";
import { renderResult } from "./result.js";

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
  const started = performance.now(); // before the request: time to first token as the user waits for it
  const response = await api("/v1/chat/completions", {
    json: { model, messages: [{ role: "user", content }], stream: true, temperature: 0, max_tokens: 256,
            stream_options: { include_usage: true } },
    signal: job.abort.signal,
  });
  if (!response.ok) throw new Error(await failure(response));
  job.generationId = response.headers.get("X-Generation-Id");
  let tokens = 0;
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
  job.generationId = response.headers.get("X-Stream-Id"); // Cancel stops it on the server through the API
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
