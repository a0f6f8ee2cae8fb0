// Turnout's dashboard: the live parts, with no build step. A job page follows the job's event
// stream (the API's server-sent events) and an environment page tails its log. Everything is
// written with textContent, never as HTML.
"use strict";

function followJob(el) {
  const events = new EventSource(el.dataset.events);
  const output = document.getElementById("job-output");
  const step = (index) => document.getElementById("step-" + index);
  let replayed = false;
  events.addEventListener("output", (e) => {
    if (!replayed) { output.textContent = ""; replayed = true; }
    output.textContent += JSON.parse(e.data).line + "\n";
    output.scrollTop = output.scrollHeight;
  });
  events.addEventListener("step", (e) => {
    const d = JSON.parse(e.data);
    const row = step(d.index);
    if (!row) return;
    const state = row.querySelector(".step-state span");
    state.textContent = d.step.state;
    state.className = "state " + d.step.state;
    row.querySelector(".step-detail").textContent = d.step.detail;
    const p = d.step.progress;
    row.querySelector(".step-progress").textContent =
      p ? p.done + (p.total != null ? " / " + p.total : "") + " " + p.unit : "";
    row.querySelector(".step-time").textContent =
      d.step.duration_ms != null ? d.step.duration_ms + " ms" : "";
    const jobState = document.getElementById("job-state");
    if (jobState.textContent === "queued") { jobState.textContent = "running"; jobState.className = "state running"; }
  });
  events.addEventListener("end", (e) => {
    events.close();
    const job = JSON.parse(e.data).job;
    const jobState = document.getElementById("job-state");
    jobState.textContent = job.state;
    jobState.className = "state " + job.state;
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.remove();
    if (job.error) {
      const err = document.getElementById("job-error");
      err.textContent = job.error;
      err.hidden = false;
    }
    if (job.url) {
      const url = document.getElementById("job-url");
      url.textContent = "Live at ";
      const a = document.createElement("a");
      a.href = job.url;
      a.textContent = job.url;
      url.appendChild(a);
      url.hidden = false;
    }
    document.body.dataset.jobEnded = job.state;
  });
}

async function tailLog(pre) {
  const state = document.getElementById("logs-state");
  try {
    const res = await fetch(pre.dataset.follow, { credentials: "same-origin" });
    if (!res.ok || !res.body) return;
    const reader = res.body.getReader();
    const text = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += (pre.textContent && !pre.textContent.endsWith("\n") ? "\n" : "") + text.decode(value, { stream: true });
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (err) {
    if (state) state.textContent = "The live tail stopped (" + err + "); reload the page to resume.";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const job = document.getElementById("job");
  if (job && job.dataset.events) followJob(job);
  const logs = document.getElementById("logs");
  if (logs && logs.dataset.follow) tailLog(logs);
});
