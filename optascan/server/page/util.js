// Shared helpers: the API client (with the key from ?api_key=), error text, an SSE reader.
"use strict";

export const $ = (id) => document.getElementById(id);
const key = new URLSearchParams(location.search).get("api_key") || sessionStorage.getItem("optascan-key") || "";
if (key) sessionStorage.setItem("optascan-key", key);

export function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (key) headers.Authorization = "Bearer " + key;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json), method: options.method || "POST" };
  }
  return fetch(path, { ...options, headers });
}

export async function failure(response) {
  try {
    const body = await response.json();
    const e = body.error || {};
    return (e.message || response.statusText) + (e.hint ? " (" + e.hint + ")" : "");
  } catch (_) {
    return response.status + " " + response.statusText;
  }
}

// Reads a text/event-stream body; calls onData with each parsed "data:" payload ("[DONE]" is skipped).
export async function readSSE(response, onData) {
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

export function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}
