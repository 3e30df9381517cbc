// Lumière dashboard: upload with progress, live job list, actions. No framework, no build.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
let key = localStorage.getItem("lumiere-key") || "";
const stillsLoaded = new Set();
const jobs = new Map();  // id -> the job as last listed

function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${key}` };
  return fetch(path, { ...options, headers }).then(async (response) => {
    if (response.status === 204) return null;
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || body.title || response.statusText);
    return body;
  });
}

function show(signedIn) {
  $("#login").hidden = signedIn;
  $("#submit").hidden = !signedIn;
  $("#jobs-section").hidden = !signedIn;
}

$("#key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  key = $("#key-input").value.trim();
  try {
    await api("/v1/jobs?limit=1");
    localStorage.setItem("lumiere-key", key);
    $("#key-error").hidden = true;
    show(true);
    refresh();
  } catch (error) {
    $("#key-error").textContent = error.message;
    $("#key-error").hidden = false;
  }
});

$("#forget-key").addEventListener("click", () => {
  localStorage.removeItem("lumiere-key");
  key = "";
  show(false);
});

// Drag and drop onto the file field.
const drop = $("#drop");
["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  $("#file").files = event.dataTransfer.files;
  $("#file").dispatchEvent(new Event("change"));
});
$("#file").addEventListener("change", () => {
  const file = $("#file").files[0];
  $("#drop-text").textContent = file ? `${file.name} (${(file.size / 1e6).toFixed(1)} MB)` : "Drop a film here, or choose one";
});

// Send the form's film and options (``extra`` on top: a preview's stretch). XMLHttpRequest,
// not fetch: it reports upload progress.
function upload(formNode, extra = {}) {
  const form = new FormData();
  for (const [name, value] of new FormData(formNode)) {
    if (name === "file" || value === "" || (value instanceof File && !value.name)) continue;
    form.append(name, value);  // "audio" twice: the mode and the soundtrack file
  }
  for (const [name, value] of Object.entries(extra)) if (!form.has(name)) form.append(name, value);
  form.append("file", $("#file").files[0]);  // options first: the server validates as it streams
  const bar = $("#upload-progress");
  const status = $("#upload-status");
  const button = $("#upload-btn");
  bar.hidden = false;
  bar.value = 0;
  button.disabled = true;
  const request = new XMLHttpRequest();
  request.open("POST", "/v1/jobs");
  request.setRequestHeader("Authorization", `Bearer ${key}`);
  request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  request.onload = () => {
    button.disabled = false;
    const body = JSON.parse(request.responseText || "{}");
    if (request.status === 201) {
      bar.value = 1;
      status.textContent = `Uploaded: job ${body.id}`;
      formNode.reset();
      $("#drop-text").textContent = "Drop a film here, or choose one";
      refresh();
    } else {
      status.textContent = `Refused: ${body.detail || request.statusText}`;
    }
  };
  request.onerror = () => { button.disabled = false; status.textContent = "Upload failed: network error, try again."; };
  request.send(form);
}

$("#upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  upload(event.target);
});
$("#preview-btn").addEventListener("click", () => {
  const formNode = $("#upload-form");
  if (formNode.reportValidity()) upload(formNode, { preview_start: "auto", preview_seconds: "3" });
});

// What each stage means to someone waiting for a film.
const STAGES = {
  queued: "waiting for a worker",
  planning: "reading the film",
  processing: "restoring",
  joining: "joining the chunks and the sound",
  done: "done",
};

function describe(job) {
  const parts = [STAGES[job.stage] || job.stage];
  if (job.chunks_total && job.stage === "processing") parts.push(`${job.chunks_done} of ${job.chunks_total} chunks done`);
  if (job.frames_total) parts.push(`frames ${job.frames_done}/${job.frames_total}`);
  parts.push(`${Math.round(job.progress * 100)} %`);
  if (job.queue_position != null) parts.push(`queued: ${ordinal(job.queue_position)} in line`);
  if (job.eta_seconds != null && !FINAL.has(job.status)) parts.push(`ETA ${duration(job.eta_seconds)}`);
  return parts.join(" · ");
}

function ordinal(n) {
  if (n === 1) return "next";
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
  return `${n}${suffix}`;
}

function duration(seconds) {
  const s = Math.ceil(seconds);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

// The options a job was given, in a line: "×2 · faithful · motion · 60 fps · auto · sound: keep".
function summary(job) {
  const o = job.options;
  const size = o.width || o.height ? `${o.width || "auto"}×${o.height || "auto"}` : `×${o.scale}`;
  const parts = [size, o.upscaler, o.fps ? `${o.interpolator} · ${o.fps} fps` : "source timing"];
  parts.push(o.codec || o.output_preset, `sound: ${o.audio}`);
  const stretch = isPreview(job) && ((job.input.probe || {}).preview || {});
  if (stretch) {
    const from = stretch.start != null ? `${stretch.start} s` : o.preview_start || "auto";
    parts.unshift(`preview of ${stretch.seconds || o.preview_seconds || 3} s from ${from}`);
  }
  parts.push(`id ${job.id.slice(0, 8)}`);
  return parts.join(" · ");
}

// What repair found in the film and did (decided once, from a sample, when it was planned):
// "Repair: deflickered, dust removed — found grain 1.2 · flicker 4.1 · …".
function repairs(job) {
  const probe = job.input.probe || {};
  const plan = probe.repair;
  if (!plan) return "";
  const found = plan.found;
  const done = [];
  if (plan.deinterlace) done.push(`deinterlaced (${plan.deinterlace})`);
  if (plan.deflicker) done.push("deflickered");
  if (plan.degrain) done.push(`degrained (σ ${plan.degrain.toFixed(1)})`);
  if (plan.dust) done.push("dust removed");
  if (plan.stabilise) done.push("weave stabilised");
  const perMinute = Math.round(found.defects * (found.fps || probe.fps || 24) * 60);
  const seen = [`grain ${found.noise.toFixed(1)}`, `flicker ${found.flicker.toFixed(1)}`,
    `weave ${found.weave.toFixed(2)} px`, `~${perMinute} defects/min`,
    found.combed >= 0.5 ? `interlaced (${found.field_order})` : "progressive"];
  return `Repair: ${done.join(", ") || "nothing needed"} — found ${seen.join(" · ")}`;
}

function isPreview(job) {
  return job.options.preview_start != null || job.options.preview_seconds != null;
}

function render(job, node) {
  node.dataset.id = job.id;
  node.dataset.status = job.status;
  $(".name", node).textContent = job.input.filename || job.id;
  $(".when", node).textContent = new Date(job.created_at).toLocaleString();
  $(".options", node).textContent = summary(job);
  $(".status", node).textContent = job.status;
  $(".fill", node).style.width = `${Math.round(job.progress * 100)}%`;
  $(".detail", node).textContent = describe(job);
  $(".repair", node).textContent = repairs(job);
  $(".repair", node).hidden = !$(".repair", node).textContent;
  $(".error", node).hidden = !job.error || job.status === "cancelled";
  $(".error", node).textContent = job.error || "";
  $(".download", node).hidden = job.status !== "succeeded";
  $(".report", node).hidden = job.status !== "succeeded";
  $(".whole", node).hidden = !(isPreview(job) && job.status === "succeeded");
  if (isPreview(job) && job.status === "succeeded") showClip(job, $(".clip", node));
  $(".cancel", node).hidden = FINAL.has(job.status);
  $(".retry", node).hidden = !(job.retryable && (job.status === "failed" || job.status === "cancelled"));
  if (job.has_preview && !stillsLoaded.has(job.id)) {
    stillsLoaded.add(job.id);
    Promise.all(["before", "after"].map((which) =>
      api(`/v1/jobs/${job.id}/preview/${which}?redirect=false`))).then(([before, after]) => {
      $(".before", node).src = before.url;
      $(".after", node).src = after.url;
      $(".compare", node).hidden = false;
    }).catch(() => stillsLoaded.delete(job.id));
  }
}

function act(job, action) {
  if (action === "report") return openReport(jobs.get(job));
  if (action === "whole") return restoreWhole(jobs.get(job)).then(refresh);
  if (action === "download") {
    return api(`/v1/jobs/${job}/result?redirect=false`).then((body) => { window.location.href = body.url; });
  }
  if (action === "delete" && !confirm("Delete this job and its files?")) return Promise.resolve();
  const method = action === "delete" ? "DELETE" : "POST";
  const path = action === "delete" ? `/v1/jobs/${job}` : `/v1/jobs/${job}/${action}`;
  return api(path, { method }).then(refresh);
}

// The before/after wipe: the restored frame shows right of the handle, the source left.
$("#jobs").addEventListener("input", (event) => {
  if (!event.target.classList.contains("wipe")) return;
  const frames = $(".frames", event.target.closest(".compare"));
  frames.style.setProperty("--wipe", `${event.target.value}%`);
});

// Click the picture to look closer where you clicked (×3), click again to see it whole.
$("#jobs").addEventListener("click", (event) => {
  const frames = event.target.closest(".frames");
  if (!frames) return;
  const box = frames.getBoundingClientRect();
  frames.style.setProperty("--zx", `${((event.clientX - box.left) / box.width) * 100}%`);
  frames.style.setProperty("--zy", `${((event.clientY - box.top) / box.height) * 100}%`);
  frames.classList.toggle("zoomed");
});

$("#jobs").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  const node = event.target.closest(".job");
  if (!button || !node) return;
  const action = ["download", "cancel", "retry", "delete", "report", "whole"].find((name) => button.classList.contains(name));
  act(node.dataset.id, action).catch((error) => alert(error.message));
});

async function refresh() {
  if (!key) return;
  let page;
  try {
    page = await api("/v1/jobs?limit=50");
  } catch (error) {
    return;  // the next tick tries again
  }
  const list = $("#jobs");
  const seen = new Set();
  page.data.forEach((job, position) => {
    seen.add(job.id);
    jobs.set(job.id, job);
    let node = list.querySelector(`[data-id="${job.id}"]`);
    if (!node) {
      node = $("#job-template").content.firstElementChild.cloneNode(true);
    }
    render(job, node);
    if (list.children[position] !== node) list.insertBefore(node, list.children[position] || null);
  });
  [...list.children].forEach((node) => { if (!seen.has(node.dataset.id)) node.remove(); });
  $("#no-jobs").hidden = page.data.length > 0;
  showComparison(page.data);
}

// Once report.js (previews, reports) has loaded too.
document.addEventListener("DOMContentLoaded", () => {
  show(Boolean(key));
  refresh();
  setInterval(refresh, 1000);
});
