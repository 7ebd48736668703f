// What the run page (app.js) and the collection page (collection.js) share: element helpers, the
// status line, requests that carry the API key, images fetched with it, and the key form. Loaded
// before the page's own script, which defines the global `state` (`state.key`: the key in use, or "").
"use strict";

const KEY_STORAGE = "learn2hash-api-key";
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

async function api(url, options = {}) {
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

// shows the API image at url in img: a plain src without a key; with one, fetched with the key into a
// blob URL (onError runs when that fails)
function showApiImage(img, url, onError) {
  if (!state.key) {
    img.src = url;
  } else {
    fetch(url, { headers: withKey() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch(onError);
  }
  return img;
}

// the key form: a key typed in is kept for the session, and reload() fetches the page's data with it
function bindKeyForm(reload, what) {
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    reload().then(() => setStatus("key in use", "idle"))
      .catch((err) => setStatus(`cannot load the ${what}: ${err.message}`, "error"));
  });
}
