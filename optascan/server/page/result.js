// The optimised answer as cards: title, summary, ranked options, highlights, caveats (text only, never HTML).
"use strict";

export function renderResult(container, result) {
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
