// The collection page: thumbnails of the collection's images, search by an uploaded image, and (when the
// service has an API key) add an upload or remove an item. With a key, every request carries it
// (Authorization: Bearer), thumbnails included: they are fetched and shown from blob URLs.
"use strict";

const PAGE_SIZE = 48;
const state = { info: null, offset: 0, key: sessionStorage.getItem(KEY_STORAGE) || "" };

// a thumbnail: a plain <img src> without a key; with one, fetched with the key and shown from a blob URL
function thumbnail(item) {
  if (item.path === null) {
    return el("div", { class: "result-text", text: item.external_id || `item ${item.id}` });
  }
  const url = `/items/${item.id}/image`;
  const img = el("img", { alt: item.path, title: item.path, class: "photo" });
  return showApiImage(img, url, () => { img.alt = `no thumbnail for ${item.path}`; });
}

function caption(item) {
  return item.path !== null ? item.path : (item.external_id ? `external id ${item.external_id}` : "uploaded");
}

function card(item, extra = []) {
  const node = el("figure", { class: "result photo-card", "data-id": String(item.id) });
  node.append(thumbnail(item));
  node.append(el("figcaption", {}, [...extra, el("span", { class: "rank", text: `id ${item.id}` }),
    el("span", { class: "label", text: caption(item), title: caption(item) })]));
  if (state.info && state.info.writable) {
    const remove = el("button", { type: "button", class: "remove", text: "Remove" });
    remove.addEventListener("click", () => removeItem(item.id));
    node.append(remove);
  }
  return node;
}

// ---------------------------------------------------------------- the collection
async function loadInfo() {
  const info = await api("/info");
  state.info = info;
  $("run-info").textContent =
    `${info.collection} · ${info.method} · ${info.bits} bits · ${info.n_items.toLocaleString()} items`;
  $("k").max = info.limits.max_k;
  $("add-field").hidden = !info.writable;
  if (info.writable) $("key-form").hidden = false;
  await loadItems(state.offset);
}

async function loadItems(offset) {
  const page = await api(`/items?offset=${Math.max(0, offset)}&limit=${PAGE_SIZE}`);
  state.offset = page.offset;
  const grid = $("browse");
  grid.replaceChildren(...page.items.map((item) => card(item)));
  const stop = page.offset + page.items.length;
  $("page-info").textContent = page.total ? `${page.offset + 1}–${stop} of ${page.total}` : "empty";
  $("prev-page").disabled = page.offset === 0;
  $("next-page").disabled = stop >= page.total;
}

// ---------------------------------------------------------------- search, add, remove
function chosenFile() {
  const file = $("upload-file").files[0];
  if (!file) setStatus("choose an image file first", "error");
  return file;
}

async function search(event) {
  event.preventDefault();
  const file = chosenFile();
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  form.append("k", String(Number.parseInt($("k").value, 10)));
  setStatus("searching…", "loading");
  $("results").replaceChildren();
  try {
    const t0 = performance.now();
    const result = await api("/search", { method: "POST", body: form });
    $("query-view").hidden = false;
    $("query-title").textContent = `Upload: ${file.name}`;
    $("query-picture").replaceChildren(el("img", { src: URL.createObjectURL(file), alt: file.name }));
    $("query-code").textContent = result.code.replace(/(.{8})/g, "$1 ").trim();
    $("results").replaceChildren(...result.results.map((hit) => {
      const node = card(hit, [el("span", { class: "distance", text: `d = ${hit.distance}` })]);
      node.dataset.distance = String(hit.distance);
      return node;
    }));
    setStatus(`${result.results.length} nearest of ${result.n_items.toLocaleString()} by Hamming distance · ` +
      `${(performance.now() - t0).toFixed(0)} ms`, "done");
  } catch (err) {
    setStatus(err.message, "error");
  }
}

async function addItem() {
  const file = chosenFile();
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  const external = $("external-id").value.trim();
  if (external) form.append("external_id", external);
  try {
    const added = await api("/items", { method: "POST", body: form });
    setStatus(`added as item ${added.id}; the collection holds ${added.n_items.toLocaleString()} items`, "done");
    await loadInfo();
  } catch (err) {
    setStatus(err.message, "error");
  }
}

async function removeItem(id) {
  try {
    const removed = await api(`/items/${id}`, { method: "DELETE" });
    for (const node of document.querySelectorAll(`.photo-card[data-id="${id}"]`)) node.remove();
    setStatus(`removed item ${id}; the collection holds ${removed.n_items.toLocaleString()} items`, "done");
    await loadInfo();
  } catch (err) {
    setStatus(err.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("upload-form").addEventListener("submit", search);
  $("add-item").addEventListener("click", addItem);
  $("prev-page").addEventListener("click", () => loadItems(state.offset - PAGE_SIZE));
  $("next-page").addEventListener("click", () => loadItems(state.offset + PAGE_SIZE));
  bindKeyForm(loadInfo, "collection");
  loadInfo().catch((err) => setStatus(`cannot load the collection: ${err.message}`, "error"));
});
