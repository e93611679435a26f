// The History and Models tabs: past scans, and the model manager (pull with live progress, unload, delete).
"use strict";

import { $, api, failure, readSSE, showError } from "./util.js";
import { renderResult } from "./result.js";

// --- history --------------------------------------------------------------------------------------
export async function loadHistory(q = "") {
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

export async function loadModels() {
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
