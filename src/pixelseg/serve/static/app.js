// The pixelseg service page: upload an image, show its mask over it, list the classes.
//
// Plain JavaScript, no build step and no framework, so the package can serve it as is.
// The mask arrives once (a PNG whose pixel values are class indices); it is coloured here with
// /v1/info's colours and blended over the original image on a canvas, so the opacity slider
// redraws locally and never re-requests. An ES module: the browser loads its imports.

import { withoutExifOrientation } from "./jpeg_orientation.js";
import { buildPalette, colourMask, decodeIndexPng, maskError } from "./mask.js";

const SEGMENT_URL = "/v1/segment?format=json&include_mask=true";

const $ = (id) => document.getElementById(id);
const els = {
  apiKey: $("api-key"),
  apiKeyRow: $("api-key-row"),
  dropZone: $("drop-zone"),
  fileInput: $("file-input"),
  limits: $("limits"),
  opacity: $("opacity"),
  opacityValue: $("opacity-value"),
  status: $("status"),
  error: $("error"),
  errorTitle: $("error-title"),
  errorMessage: $("error-message"),
  result: $("result"),
  emptyState: $("empty-state"),
  overlay: $("overlay"),
  imageInfo: $("image-info"),
  pixelInfo: $("pixel-info"),
  latencyServer: $("latency-server"),
  latencyRoundTrip: $("latency-roundtrip"),
  batchSize: $("batch-size"),
  legend: $("legend"),
};

const state = {
  info: null,
  // Uint32 RGBA per class index (256 entries: the mask PNG is 8-bit); alpha 0 = not drawn.
  palette: null,
  request: null, // AbortController of the request in flight
  infoLoad: null, // the /v1/info request in flight
  view: null, // {width, height, original, maskCanvas, indices}
};

// ---- service calls ----------------------------------------------------------------------

function authHeaders() {
  const key = els.apiKey.value.trim();
  return key ? { "X-API-Key": key } : {};
}

// The service answers errors as {"error": {"code", "message"}}; FastAPI's own errors use
// {"detail": ...}; anything else (a proxy's HTML page) is reported by its status alone.
async function readError(response) {
  const error = {
    status: response.status,
    code: `http_${response.status}`,
    message: response.statusText || "The request failed.",
  };
  try {
    const body = await response.json();
    if (body && body.error) {
      error.code = body.error.code || error.code;
      error.message = body.error.message || error.message;
    } else if (body && body.detail) {
      error.message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    // not JSON: keep the status line
  }
  return error;
}

// One load at a time: the key field's "change" and "submit" both ask for it on Enter.
function loadInfo() {
  if (!state.infoLoad) state.infoLoad = fetchInfo().finally(() => (state.infoLoad = null));
  return state.infoLoad;
}

async function fetchInfo() {
  let response;
  try {
    response = await fetch("/v1/info", { headers: authHeaders() });
  } catch (err) {
    showError({ status: 0, code: "network", message: `Could not reach the service (${err.message}).` });
    setStatus("");
    return;
  }
  if (!response.ok) {
    const error = await readError(response);
    if (response.status === 401 || response.status === 403) els.apiKeyRow.hidden = false;
    showError(error);
    setStatus("");
    return;
  }
  const info = await response.json();
  state.info = info;
  state.palette = buildPalette(info.colors || [], info.ignore_index);
  showInfo(info);
  clearError();
  setStatus("Choose an image to segment.");
}

async function segment(file) {
  if (!file) return;
  if (!state.info) {
    await loadInfo();
    if (!state.info) return;
  }
  if (state.request) state.request.abort();
  const controller = new AbortController();
  state.request = controller;
  clearError();
  els.overlay.dataset.ready = "false";
  els.dropZone.dataset.state = "busy";
  setStatus(`Segmenting ${file.name}…`);

  const form = new FormData();
  form.append("image", file, file.name);
  const started = performance.now();
  try {
    const response = await fetch(SEGMENT_URL, {
      method: "POST",
      body: form,
      headers: authHeaders(),
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = await readError(response);
      if (controller !== state.request) return;
      if (response.status === 401) els.apiKeyRow.hidden = false;
      throw Object.assign(new Error(error.message), error);
    }
    const result = await response.json();
    const roundTripMs = performance.now() - started;
    const [mask, original] = await Promise.all([
      decodeIndexPng(result.mask_png),
      loadOriginal(file),
    ]);
    if (controller !== state.request) return; // a newer image was chosen meanwhile
    showResult(file, result, roundTripMs, mask, original);
    setStatus(`Segmented ${file.name}.`);
  } catch (err) {
    if (err.name === "AbortError" || controller !== state.request) return;
    hideResult();
    showError(
      err.status !== undefined
        ? err
        : { status: 0, code: err.code || "network", message: err.message },
    );
    setStatus("");
  } finally {
    if (controller === state.request) {
      state.request = null;
      els.dropZone.dataset.state = "idle";
    }
  }
}

// ---- images -----------------------------------------------------------------------------

// The original image, on the pixel grid the service segmented. The service decodes the
// stored pixels and ignores EXIF orientation, while browsers always apply it (Chromium
// treats createImageBitmap's imageOrientation "none" as "from-image"), so a rotated phone
// photo would lie under the mask turned by 90 degrees: the orientation tag is reset first.
// The browser may not display every format the service reads (TIFF, for one); the mask is
// then shown on a neutral background instead of failing the whole result.
async function loadOriginal(file) {
  try {
    return await createImageBitmap(await withoutExifOrientation(file));
  } catch {
    return null;
  }
}

// ---- drawing ----------------------------------------------------------------------------

function draw() {
  const view = state.view;
  if (!view) return;
  const ctx = els.overlay.getContext("2d");
  const alpha = Number(els.opacity.value) / 100;
  ctx.imageSmoothingEnabled = false;
  ctx.globalAlpha = 1;
  ctx.clearRect(0, 0, view.width, view.height);
  if (view.original) {
    ctx.drawImage(view.original, 0, 0);
  } else {
    ctx.fillStyle = "#808080";
    ctx.fillRect(0, 0, view.width, view.height);
  }
  ctx.globalAlpha = alpha;
  ctx.drawImage(view.maskCanvas, 0, 0);
  ctx.globalAlpha = 1;
  els.overlay.dataset.opacity = els.opacity.value;
}

function showResult(file, result, roundTripMs, mask, original) {
  const { width, height } = result;
  if (mask.width !== width || mask.height !== height) {
    throw maskError(
      `The mask is ${mask.width}×${mask.height} px but the response says ${width}×${height}.`,
    );
  }
  const coloured = colourMask(mask, state.palette);
  checkCounts(coloured.counts, result.classes || []);
  // Scaling an original of another size under the mask would misplace every class.
  if (original && (original.width !== width || original.height !== height)) original = null;

  state.view = { width, height, original, maskCanvas: coloured.canvas, indices: mask.indices };
  els.overlay.width = width;
  els.overlay.height = height;
  // Small images are scaled up for viewing; keep their pixels square rather than blurred.
  els.overlay.classList.toggle("pixelated", width < 480);
  els.overlay.dataset.width = String(width);
  els.overlay.dataset.height = String(height);
  draw();

  const note = original ? "" : " (the browser cannot show this image as decoded; mask only)";
  els.imageInfo.textContent = `${file.name} · ${width}×${height} px${note}`;
  els.pixelInfo.textContent = "";
  showLatency(result, roundTripMs);
  showLegend(result.classes || []);
  els.opacity.disabled = false;
  els.result.hidden = false;
  els.emptyState.hidden = true;
  els.overlay.dataset.ready = "true";
}

// The server's pixel counts must match the decoded mask; a mismatch would mean the page
// shows classes the model did not predict.
function checkCounts(counts, classes) {
  for (const cls of classes) {
    const seen = counts.get(cls.index) || 0;
    if (seen !== cls.pixels) {
      throw maskError(
        `The decoded mask has ${seen} pixels of class "${cls.name}" (index ${cls.index}) ` +
          `but the server counted ${cls.pixels}.`,
      );
    }
  }
}

function hideResult() {
  state.view = null;
  els.result.hidden = true;
  els.emptyState.hidden = false;
  els.opacity.disabled = true;
  els.overlay.dataset.ready = "false";
}

// ---- text -------------------------------------------------------------------------------

function formatMs(ms) {
  return ms >= 100 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`;
}

function formatBytes(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(bytes % (1 << 20) ? 1 : 0)} MiB`;
  if (bytes >= 1 << 10) return `${Math.round(bytes / (1 << 10))} KiB`;
  return `${bytes} bytes`;
}

function showInfo(info) {
  $("model-name").textContent = info.model || "–";
  $("model-backend").textContent = info.backend || "–";
  $("model-task").textContent = info.task || "–";
  $("model-classes").textContent = String((info.classes || []).length);
  $("model-version").textContent = info.pixelseg_version || "–";
  $("model-info").dataset.ready = "true";
  els.apiKeyRow.hidden = !info.api_key_required && els.apiKeyRow.hidden;

  const limits = info.limits || {};
  const types = limits.content_types || [];
  if (types.length) els.fileInput.accept = types.join(",");
  const parts = [];
  if (types.length) parts.push(types.map((t) => t.replace(/^image\//, "").toUpperCase()).join(", "));
  if (limits.max_upload_bytes) parts.push(`up to ${formatBytes(limits.max_upload_bytes)}`);
  if (limits.max_pixels) parts.push(`${Number((limits.max_pixels / 1e6).toFixed(1))} megapixels`);
  // Non-breaking spaces keep "20 MiB" and "40 megapixels" on one line each.
  els.limits.textContent = parts.map((part) => part.replaceAll(" ", "\u00a0")).join(" · ");
}

function showLatency(result, roundTripMs) {
  els.latencyServer.textContent =
    typeof result.latency_ms === "number" ? formatMs(result.latency_ms) : "–";
  els.latencyServer.dataset.ms = String(result.latency_ms);
  els.latencyRoundTrip.textContent = formatMs(roundTripMs);
  els.latencyRoundTrip.dataset.ms = roundTripMs.toFixed(3);
  els.batchSize.textContent = result.batch_size ? String(result.batch_size) : "–";
}

function showLegend(classes) {
  const sorted = [...classes].sort((a, b) => b.share - a.share || a.index - b.index);
  const items = sorted.map((cls) => {
    const [r, g, b] = (state.info.colors || [])[cls.index] || cls.color || [0, 0, 0];
    const percent = 100 * cls.share;
    const item = document.createElement("li");
    item.className = "legend-item";
    item.dataset.class = cls.name;
    item.dataset.index = String(cls.index);
    item.dataset.share = String(cls.share);
    item.dataset.pixels = String(cls.pixels);
    item.style.setProperty("--swatch", `rgb(${r} ${g} ${b})`);
    item.style.setProperty("--share", `${percent}%`);

    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    const name = document.createElement("span");
    name.className = "legend-name";
    name.textContent = cls.name;
    const share = document.createElement("span");
    share.className = "legend-share";
    share.textContent = `${percent.toFixed(1)}%`;
    share.title = `${cls.pixels.toLocaleString()} pixels`;
    const bar = document.createElement("span");
    bar.className = "legend-bar";
    bar.setAttribute("aria-hidden", "true");
    item.append(swatch, name, share, bar);
    return item;
  });
  els.legend.replaceChildren(...items);
}

function setStatus(text) {
  els.status.textContent = text;
}

function showError({ status, code, message }) {
  els.errorTitle.textContent = status ? `Error ${status}: ${code}` : `Error: ${code}`;
  els.errorMessage.textContent = message;
  els.error.dataset.code = code;
  els.error.dataset.status = String(status || 0);
  els.error.hidden = false;
}

function clearError() {
  els.error.hidden = true;
  els.errorTitle.textContent = "";
  els.errorMessage.textContent = "";
  delete els.error.dataset.code;
  delete els.error.dataset.status;
}

// ---- events -----------------------------------------------------------------------------

function pixelUnder(event) {
  const view = state.view;
  if (!view) return null;
  const rect = els.overlay.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * view.width);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * view.height);
  if (x < 0 || y < 0 || x >= view.width || y >= view.height) return null;
  return { x, y, index: view.indices[y * view.width + x] };
}

function describePixel(event) {
  const pixel = pixelUnder(event);
  if (!pixel) {
    els.pixelInfo.textContent = "";
    return;
  }
  const info = state.info;
  const name =
    pixel.index === info.ignore_index
      ? "ignored"
      : (info.classes || [])[pixel.index] || `class ${pixel.index}`;
  els.pixelInfo.textContent = `x ${pixel.x}, y ${pixel.y}: ${name}`;
}

function bindEvents() {
  els.fileInput.addEventListener("change", () => {
    const [file] = els.fileInput.files;
    // Reset so that choosing the same file again still fires "change".
    segment(file).finally(() => {
      els.fileInput.value = "";
    });
  });

  els.opacity.addEventListener("input", () => {
    els.opacityValue.textContent = `${els.opacity.value}%`;
    draw();
  });

  for (const type of ["dragenter", "dragover"]) {
    els.dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      els.dropZone.classList.add("dragging");
    });
  }
  els.dropZone.addEventListener("dragleave", (event) => {
    if (!els.dropZone.contains(event.relatedTarget)) els.dropZone.classList.remove("dragging");
  });
  els.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    els.dropZone.classList.remove("dragging");
    const [file] = event.dataTransfer.files;
    segment(file);
  });
  // A file dropped next to the zone would otherwise replace the page with the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }

  els.overlay.addEventListener("mousemove", describePixel);
  els.overlay.addEventListener("mouseleave", () => {
    els.pixelInfo.textContent = "";
  });
  // Entering a key (re)loads the model information, which also checks the key.
  els.apiKeyRow.addEventListener("submit", (event) => {
    event.preventDefault();
    loadInfo();
  });
  els.apiKey.addEventListener("change", () => loadInfo());
}

bindEvents();
loadInfo();
