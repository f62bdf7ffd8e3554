"""The search page served at `/`: a text box, an image upload, and a grid of the top results."""

from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mmray search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
  form { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; margin-bottom: 1.5rem; }
  label { display: flex; flex-direction: column; font-size: .85rem; gap: .25rem; }
  input[type=text] { width: 28rem; padding: .4rem; }
  input[type=number] { width: 5rem; padding: .4rem; }
  button { padding: .45rem 1.2rem; }
  #status { margin: .5rem 0 1rem; color: #555; }
  #status.error { color: #b00020; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1rem; }
  .hit { border: 1px solid #ddd; border-radius: 6px; padding: .5rem; font-size: .8rem; }
  .hit img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 4px; background: #eee; }
  .meta { font-weight: 600; margin: .3rem 0; }
  .caption { overflow-wrap: anywhere; }
</style>
</head>
<body>
<h1>mmray search</h1>
<form id="search">
  <label>Text <input type="text" id="text" name="text" placeholder="a large red square in the top right corner"></label>
  <label>Image <input type="file" id="image" name="image" accept="image/*"></label>
  <label>Find <select id="target" name="target">
    <option value="">default</option><option value="images">images</option><option value="captions">captions</option>
  </select></label>
  <label>k <input type="number" id="k" name="k" value="8" min="1"></label>
  <label>α (image weight) <input type="number" id="alpha" name="alpha" value="0.5" min="0" max="1" step="0.1"></label>
  __KEY_FIELD__
  <button type="submit" id="go">Search</button>
</form>
<div id="status">Type a text, choose an image, or both.</div>
<div id="results"></div>
<script>
const form = document.getElementById("search");
const statusLine = document.getElementById("status");
const grid = document.getElementById("results");
const keyInput = document.getElementById("key");
if (keyInput) { keyInput.value = localStorage.getItem("mmray-key") || ""; }

function show(message, isError) {
  statusLine.textContent = message;
  statusLine.className = isError ? "error" : "";
}

function cell(hit) {
  const div = document.createElement("div");
  div.className = "hit";
  div.dataset.id = hit.id;
  div.dataset.kind = hit.kind;
  const img = document.createElement("img");
  if (hit.thumbnail) { img.src = hit.thumbnail.data_url; }
  img.alt = hit.kind + " " + hit.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = "#" + hit.rank + "  " + hit.kind + " " + hit.id + "  score " + hit.score.toFixed(3);
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.textContent = hit.metadata.text || (hit.metadata.captions || [""])[0] || (hit.thumbnail || {}).caption || "";
  div.append(img, meta, caption);
  return div;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData();
  const text = document.getElementById("text").value.trim();
  const file = document.getElementById("image").files[0];
  if (!text && !file) { show("Type a text or choose an image first.", true); return; }
  if (text) data.append("text", text);
  if (file) data.append("image", file);
  const target = document.getElementById("target").value;
  if (target) data.append("target", target);
  data.append("k", document.getElementById("k").value);
  data.append("alpha", document.getElementById("alpha").value);
  data.append("thumbnails", "true");
  const headers = {};
  if (keyInput && keyInput.value) {
    localStorage.setItem("mmray-key", keyInput.value);
    headers["Authorization"] = "Bearer " + keyInput.value;
  }
  show("Searching…", false);
  grid.replaceChildren();
  try {
    const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
    const response = await fetch(base + "v1/search", { method: "POST", body: data, headers });
    const body = await response.json();
    if (!response.ok) {
      show("Error " + response.status + (body.field ? " (" + body.field + ")" : "") + ": " + body.error, true);
      return;
    }
    grid.replaceChildren(...body.hits.map(cell));
    show(body.hits.length + " " + body.target + " found (model " + body.model_version + ")", false);
  } catch (error) {
    show("The request failed: " + error, true);
  }
});
</script>
</body>
</html>
"""

_KEY_FIELD = '<label>API key <input type="password" id="key" name="key" autocomplete="off"></label>'


def search_page(needs_key: bool) -> str:
    """The page's HTML; with API keys on it has a key field (kept in the browser's local storage)."""
    return _PAGE.replace("__KEY_FIELD__", _KEY_FIELD if needs_key else "")
