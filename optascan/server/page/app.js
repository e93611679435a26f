// optascan's page: plain ES modules, no build step, no CDN. Talks to the same API as every other client.
"use strict";

import { loadHistory, loadModels } from "./manage.js";
import "./scan.js";

// --- tabs -----------------------------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.removeAttribute("aria-current"));
  tab.setAttribute("aria-current", "page");
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== tab.dataset.tab; });
  if (tab.dataset.tab === "history") loadHistory();
  if (tab.dataset.tab === "models") loadModels();
}));

loadModels();
