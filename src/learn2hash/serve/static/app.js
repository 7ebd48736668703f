// The search page: pick a query-split item (or upload an image / paste features), POST /search,
// and show the k nearest database items with their Hamming distances and labels. When the service has an
// API key, the page asks for it and sends it with every request (images are then fetched and shown from
// blob URLs).
"use strict";

const PAGE_SIZE = 40;
const KEY_STORAGE = "learn2hash-api-key";
const state = { info: null, offset: 0, selected: null, key: sessionStorage.getItem(KEY_STORAGE) || "" };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = kind;
}

function withKey(headers = {}) {
  return state.key ? { ...headers, Authorization: `Bearer ${state.key}` } : headers;
}

async function getJSON(url, options = {}) {
  const response = await fetch(url, { ...options, headers: withKey(options.headers || {}) });
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (response.status === 401) $("key-form").hidden = false;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

// an <img> of an API image: a plain src without a key; with one, fetched with the key into a blob URL
function apiImage(url, alt) {
  const img = el("img", { alt });
  if (!state.key) {
    img.src = url;
  } else {
    fetch(url, { headers: withKey() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch(() => { img.dispatchEvent(new Event("error")); });
  }
  return img;
}

function kValue() {
  return Number.parseInt($("k").value, 10);
}

// ---------------------------------------------------------------- run info and query picker
async function loadInfo() {
  const info = await getJSON("/info");
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
  const page = await getJSON(`/queries?offset=${offset}&limit=${PAGE_SIZE}`);
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
    const result = await getJSON("/search", request);
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
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    loadInfo().then(() => setStatus("key in use", "idle"))
      .catch((err) => setStatus(`cannot load the run: ${err.message}`, "error"));
  });
  loadInfo().catch((err) => setStatus(`cannot load the run: ${err.message}`, "error"));
});
