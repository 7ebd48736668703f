// The search page: pick a query-split item (or upload an image / paste features), POST /search,
// and show the k nearest database items with their Hamming distances and labels. When the service has an
// API key, the page asks for it and sends it with every request (images are then fetched and shown from
// blob URLs).
"use strict";

const PAGE_SIZE = 40;
const state = { info: null, offset: 0, selected: null, key: sessionStorage.getItem(KEY_STORAGE) || "" };

// an <img> of an API image: a plain src without a key; with one, fetched with the key into a blob URL
function apiImage(url, alt) {
  const img = el("img", { alt });
  return showApiImage(img, url, () => { img.dispatchEvent(new Event("error")); });
}

function kValue() {
  return Number.parseInt($("k").value, 10);
}

// ---------------------------------------------------------------- run info and query picker
async function loadInfo() {
  const info = await api("/info");
  state.info = info;
  $("run-info").textContent =
    `${info.method} · ${info.bits} bits · ${info.dataset} (${info.protocol}) · ` +
    `${info.n_database.toLocaleString()} database items · ${info.n_query.toLocaleString()} queries`;
  $("k").max = info.limits.max_k;
  if (!info.accepts.includes("image")) {
    $("upload-image-field").hidden = true;
  }
  if (info.accepts.includes("features")) {
    $("upload-features-field").hidden = false;
    $("tab-button-upload").textContent = "Features";
  } else if (!info.accepts.includes("image")) {
    $("tab-button-upload").hidden = true;
  }
  await loadQueries(0);
}

async function loadQueries(offset) {
  const n = state.info.n_query;
  offset = Math.max(0, Math.min(offset, Math.max(0, n - 1)));
  const page = await api(`/queries?offset=${offset}&limit=${PAGE_SIZE}`);
  state.offset = offset;
  const grid = $("query-grid");
  grid.replaceChildren();
  for (const item of page.items) {
    const button = el("button", {
      type: "button", class: "query-thumb", title: `query ${item.index}: ${item.labels.join(", ")}`,
      "data-index": String(item.index),
    });
    if (state.info.has_images) {
      button.append(apiImage(`/queries/${item.index}/image`, `query ${item.index}`));
    } else {
      button.append(el("span", { class: "thumb-text", text: item.labels.join(", ") || "—" }));
    }
    if (state.selected === item.index) button.classList.add("selected");
    button.addEventListener("click", () => searchQuery(item.index));
    grid.append(button);
  }
  const stop = Math.min(n, offset + page.items.length);
  $("page-info").textContent = `${offset + 1}–${stop} of ${n}`;
  $("prev-page").disabled = offset === 0;
  $("next-page").disabled = stop >= n;
}

// ---------------------------------------------------------------- searching
async function runSearch(request, describe) {
  setStatus("searching…", "loading");
  $("results").replaceChildren();
  try {
    const t0 = performance.now();
    const result = await api("/search", request);
    const ms = performance.now() - t0;
    showQuery(result, describe);
    await showResults(result);
    const relevant = result.relevant ? result.relevant.filter(Boolean).length : null;
    setStatus(
      `${result.ids.length} nearest of ${state.info.n_database.toLocaleString()} by Hamming distance` +
      (relevant === null ? "" : ` · ${relevant} of ${result.ids.length} share a label with the query`) +
      ` · ${ms.toFixed(0)} ms`, "done");
  } catch (err) {
    setStatus(err.message, "error");
  }
}

function searchQuery(index) {
  state.selected = index;
  for (const b of document.querySelectorAll(".query-thumb")) {
    b.classList.toggle("selected", Number(b.dataset.index) === index);
  }
  const picture = state.info.has_images
    ? apiImage(`/queries/${index}/image`, `query ${index}`)
    : null;
  return runSearch({
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query_index: index, k: kValue() }),
  }, { title: `Query ${index}`, picture });
}

function searchUpload(event) {
  event.preventDefault();
  if (state.info.accepts.includes("features")) {
    let features;
    try { features = JSON.parse($("features").value); } catch (err) {
      setStatus("the features are not a JSON array of numbers", "error");
      return;
    }
    return runSearch({
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ features, k: kValue() }),
    }, { title: "Feature vector", picture: null });
  }
  const file = $("upload-file").files[0];
  if (!file) { setStatus("choose an image file first", "error"); return; }
  const form = new FormData();
  form.append("image", file);
  form.append("k", String(kValue()));
  const picture = el("img", { src: URL.createObjectURL(file), alt: file.name });
  return runSearch({ method: "POST", body: form }, { title: `Upload: ${file.name}`, picture });
}

function showQuery(result, describe) {
  $("query-view").hidden = false;
  $("query-title").textContent = describe.title;
  const holder = $("query-picture");
  holder.replaceChildren();
  if (describe.picture) holder.append(describe.picture);
  const labels = result.query.labels || [];
  $("query-labels").textContent = labels.length ? `${labels.length > 1 ? "labels" : "label"}: ${labels.join(", ")}` : "";
  $("query-code").textContent = result.code.replace(/(.{8})/g, "$1 ").trim();
}

function showResults(result) {
  const grid = $("results");
  const loads = [];
  result.ids.forEach((id, rank) => {
    const relevance = result.relevant ? (result.relevant[rank] ? "relevant" : "irrelevant") : "unknown";
    const card = el("figure", {
      class: `result ${relevance}`, "data-id": String(id), "data-distance": String(result.distances[rank]),
    });
    if (state.info.has_images) {
      const img = apiImage(`/items/${id}/image`, `database item ${id}`);
      loads.push(new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; }));
      card.append(img);
    } else {
      card.append(el("div", { class: "result-text", text: result.labels[rank].join(", ") || "—" }));
    }
    card.append(el("figcaption", {}, [
      el("span", { class: "distance", text: `d = ${result.distances[rank]}` }),
      el("span", { class: "rank", text: `#${rank + 1} · id ${id}` }),
      el("span", { class: "label", text: result.labels[rank].join(", ") || "no label" }),
    ]));
    grid.append(card);
  });
  return Promise.all(loads);
}

// ---------------------------------------------------------------- wiring
function showTab(name) {
  for (const button of document.querySelectorAll(".tab")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  $("tab-pick").hidden = name !== "pick";
  $("tab-upload").hidden = name !== "upload";
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll(".tab")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("prev-page").addEventListener("click", () => loadQueries(state.offset - PAGE_SIZE));
  $("next-page").addEventListener("click", () => loadQueries(state.offset + PAGE_SIZE));
  $("random-query").addEventListener("click", async () => {
    const index = Math.floor(Math.random() * state.info.n_query);
    await loadQueries(Math.floor(index / PAGE_SIZE) * PAGE_SIZE);
    searchQuery(index);
  });
  $("upload-form").addEventListener("submit", searchUpload);
  bindKeyForm(loadInfo, "run");
  loadInfo().catch((err) => setStatus(`cannot load the run: ${err.message}`, "error"));
});
