// Polls each job's JSON status until it finishes, and shows what it says.
"use strict";

const POLL_INTERVAL_MS = 300;

function element(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function show(row, job) {
  const status = row.querySelector(".status");
  status.textContent = job.status;
  status.dataset.status = job.status;

  // The statuses seen so far, e.g. READY → RUNNING → SUCCESSFUL.
  const trail = row.querySelector(".trail");
  if (trail.dataset.last !== job.status) {
    trail.dataset.last = job.status;
    trail.textContent += (trail.textContent ? " → " : "") + job.status;
  }

  if (job.status === "READY" && job.run_after) {
    const at = new Date(job.run_after).toLocaleTimeString();
    row.querySelector(".count").textContent = `starts at ${at}`;
  }
  // Progress is what the task last saved in its result's metadata. With none
  // (not yet; or ever, as results of ImmediateBackend and django-tasks-db have
  // no metadata) the bar shows no numbers: only that the job runs
  // (indeterminate), and it goes once the job ends.
  const bar = row.querySelector("progress");
  if (job.progress) {
    bar.max = job.progress.total;
    bar.value = job.progress.done;
    row.querySelector(".count").textContent = `${job.progress.done} / ${job.progress.total}`;
  } else if (job.finished) {
    bar.hidden = true;
  } else if (job.status === "RUNNING") {
    bar.removeAttribute("value");
  }

  const outcome = row.querySelector(".outcome");
  if (job.status === "SUCCESSFUL") {
    outcome.replaceChildren(element("code", JSON.stringify(job.return_value), "return-value"));
  } else if (job.status === "FAILED") {
    const lines = job.traceback.trim().split("\n");
    const details = element("details", "", "error");
    details.append(element("summary", lines[lines.length - 1]));
    details.append(element("pre", job.traceback, "traceback"));
    outcome.replaceChildren(details);
  } else if (job.status === "FORGOTTEN") {
    outcome.replaceChildren(element("span", job.note, "detail"));
  }
  row.querySelector(".worker").textContent = job.worker_id && `worker ${job.worker_id}`;
}

async function poll(row) {
  try {
    const response = await fetch(row.dataset.statusUrl);
    if (response.ok) {
      // Under several server processes, any one of them may answer.
      const servedBy = response.headers.get("X-Served-By");
      row.querySelector(".served-by").textContent = servedBy && `answered by process ${servedBy}`;
      const job = await response.json();
      show(row, job);
      if (job.finished) return;
    }
  } catch (error) {
    // The server may be restarting: try again shortly.
  }
  setTimeout(() => poll(row), POLL_INTERVAL_MS);
}

document.querySelectorAll("tr[data-status-url]").forEach(poll);
