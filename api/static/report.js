// Lumière dashboard, part two: previews (played alone and side by side, then the whole film
// from one) and each job's quality report. Uses app.js's $, api, key, jobs and summary.
"use strict";

const LOW_CONFIDENCE = 0.85;  // worker/report.py: below it a made frame is worth a look
const clips = new Map();  // job id -> presigned URL of its result, once asked for

// A succeeded preview's result in its card's player (asked for once).
function showClip(job, video) {
  if (clips.has(job.id)) return;
  clips.set(job.id, null);
  api(`/v1/jobs/${job.id}/result?redirect=false`).then((body) => {
    clips.set(job.id, body.url);
    video.src = body.url;
    video.hidden = false;
  }).catch(() => clips.delete(job.id));
}

// The same settings on the whole film: a new job from the preview's upload.
function restoreWhole(job) {
  const { preview_start, preview_seconds, ...options } = job.options;
  return api("/v1/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...options, source_job: job.id }),
  });
}

// Previews of the film previewed last, side by side, when there are two or more.
function showComparison(listed) {
  const done = listed.filter((j) => isPreview(j) && j.status === "succeeded" && clips.get(j.id));
  const section = $("#compare-section");
  if (!done.length) { section.hidden = true; return; }
  const film = (j) => `${j.input.filename}|${j.input.size}`;
  const same = done.filter((j) => film(j) === film(done[0]));
  section.hidden = same.length < 2;
  $(".film", section).textContent = done[0].input.filename;
  const box = $(".videos", section);
  if (box.dataset.ids === same.map((j) => j.id).join()) return;
  box.dataset.ids = same.map((j) => j.id).join();
  box.replaceChildren(...same.map((j) => {
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    Object.assign(video, { src: clips.get(j.id), muted: true, loop: true, playsInline: true });
    video.dataset.id = j.id;
    const caption = document.createElement("figcaption");
    caption.textContent = summary(j);
    figure.append(video, caption);
    return figure;
  }));
}

// Play every compared preview from the start, the others kept in step with the first.
$("#play-together").addEventListener("click", () => {
  const videos = [...document.querySelectorAll("#compare-section video")];
  videos.forEach((v) => { v.currentTime = 0; v.play(); });
  const [lead, ...rest] = videos;
  if (!lead || lead.dataset.synced) return;
  lead.dataset.synced = "1";
  lead.addEventListener("timeupdate", () => rest.forEach((v) => {
    if (Math.abs(v.currentTime - lead.currentTime) > 0.08) v.currentTime = lead.currentTime;
  }));
});

function seconds(t) {
  return `${t.toFixed(2)} s`;
}

function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}

// The report's facts in words: cuts, cadence, repeats, the least sure moments.
function facts(report) {
  const cuts = report.cuts.length
    ? `${report.cuts.length} cut${report.cuts.length > 1 ? "s" : ""}: ${report.cuts.map(seconds).join(", ")}`
    : "no cuts";
  const cadence = report.cadence.patterns.length
    ? `cadence ${report.cadence.patterns.join(", ")} (from ${report.cadence.original_fps.join(", ")} fps): ${report.cadence.repeats_dropped.length} repeated frames dropped`
    : "no repeated frames";
  const made = report.confidence.length;
  const unsure = report.low_confidence.length;
  const frames = made ? `${made} frames made by interpolation, ${unsure} moment${unsure === 1 ? "" : "s"} to check` : "no frames made by interpolation";
  return [cuts, cadence, frames];
}

// A series over time as a polyline (values 0-1), with the cuts as lines and an optional
// threshold (the confidence below which a frame is listed).
function plot(svg, points, cuts, duration, threshold = null) {
  const ns = "http://www.w3.org/2000/svg";
  const x = (t) => (600 * t) / Math.max(duration, 1e-6);
  const y = (c) => 110 - 100 * c;
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(ns, "line");
    Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v));
    if (cls) l.setAttribute("class", cls);
    return l;
  };
  const path = document.createElementNS(ns, "polyline");
  path.setAttribute("points", points.map(([t, v]) => `${x(t)},${y(v)}`).join(" "));
  svg.replaceChildren(
    ...(threshold == null ? [] : [line(0, y(threshold), 600, y(threshold))]),
    ...cuts.map((t) => line(x(t), 0, x(t), 120, "cut")),
    path,
  );
}

function figure(src, caption) {
  const node = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  const text = document.createElement("figcaption");
  text.textContent = caption;
  node.append(img, text);
  return node;
}

function stageRows(stages) {
  return Object.entries(stages).filter(([, v]) => v && typeof v === "object" && "seconds" in v)
    .map(([name, v]) => {
      const model = v.model ? `${v.model} (${Object.values(v.files || {}).map((h) => (h || "").slice(0, 12)).join(", ")})` : "";
      return cells([name, v.seconds, v.fps ?? "—", model]);
    });
}

function cells(values) {
  const row = document.createElement("tr");
  values.forEach((value) => {
    const td = document.createElement("td");
    td.textContent = value;
    row.append(td);
  });
  return row;
}

function shotRows(shots) {
  const sure = (v) => (v == null ? "—" : `${Math.round(v * 100)} %`);
  return shots.map((s) => cells([seconds(s.start), seconds(s.end), s.frames, s.repeats_dropped,
    `${s.flicker_before.toFixed(2)} → ${s.flicker.toFixed(2)}`, s.confidence == null ? "—" : `${sure(s.confidence)} (${sure(s.least_confidence)})`]));
}

// The job's report, in the panel above the list.
async function openReport(job) {
  const report = await api(`/v1/jobs/${job.id}/report`);
  const panel = $("#report");
  $(".report-title", panel).textContent = `Report: ${job.input.filename}`;
  const devices = `ran on ${report.stages.devices.join(", ") || "?"}, encoded with ${report.stages.encoders.join(", ") || "?"}`;
  const repaired = repairs(job);  // app.js: what repair found and did, in words
  $(".facts", panel).replaceChildren(...[...facts(report), ...(repaired ? [repaired] : []), devices].map(item));
  const duration = (job.output && job.output.duration) || Math.max(1, ...report.confidence.map((p) => p.time));
  const confidence = report.confidence.map((p) => [p.time, p.confidence]);
  plot($(".confidence", panel), confidence, report.cuts, duration, LOW_CONFIDENCE);
  plot($(".brightness", panel), report.brightness.map((p) => [p.time, p.mean]), report.cuts, duration);
  $(".moments", panel).replaceChildren(...report.low_confidence.map((m) =>
    figure(m.thumbnail, `${seconds(m.time)} · ${Math.round(m.confidence * 100)} % agree`)));
  $(".shots tbody", panel).replaceChildren(...shotRows(report.shots || []));
  $(".stages tbody", panel).replaceChildren(...stageRows(report.stages));
  const stills = job.has_preview
    ? await Promise.all(["before", "after"].map((w) => api(`/v1/jobs/${job.id}/preview/${w}?redirect=false`)))
    : [];
  $(".sheet", panel).replaceChildren(...stills.map((s, i) => figure(s.url, i ? "restored" : "source")));
  panel.hidden = false;
  panel.scrollIntoView({ behavior: "smooth" });
}

$("#close-report").addEventListener("click", () => { $("#report").hidden = true; });
