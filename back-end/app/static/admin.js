// The admin view: job counts per task and status (GET /jobs/summary), the job list with filters
// (GET /jobs), and one job followed live (/jobs/{id}/events) with cancel and retry.
import {
  KeyRefused,
  STATUSES,
  TERMINAL,
  adminKey,
  api,
  detailOf,
  el,
  follow,
  localTime,
  setupKeyForm,
  taskName,
} from "/static/common.js";

const FILTERS = ["task", "status", "queue"];
const byId = (id) => document.getElementById(id);
const initial = new URLSearchParams(location.search);
// Jobs per page: `?limit=` in the page's URL (1-200, as GET /jobs takes), else 50.
const PAGE_SIZE = Math.min(200, Math.max(1, Number.parseInt(initial.get("limit") || "50", 10) || 50));

let nextCursor = null;
let selected = null; // {id, stop, seenLogs}
const keyForm = setupKeyForm(() => reload());

function badge(status) {
  return el("span", { class: `badge status-${status}`, text: status });
}

function refused(error) {
  if (!(error instanceof KeyRefused)) return false;
  byId("summary-rows").replaceChildren();
  byId("job-rows").replaceChildren();
  byId("more").hidden = true;
  keyForm.ask(adminKey.get() ? `The admin key was refused: ${error.message}.` : "Enter the admin key to see the jobs.");
  return true;
}

// --- the summary --------------------------------------------------------------------------------

/** Loads the counts; false when the admin key was refused. */
async function loadSummary() {
  const state = byId("summary-state");
  state.textContent = "Loading…";
  let answer;
  try {
    answer = await api("/jobs/summary", { admin: true });
  } catch (error) {
    const wasRefused = refused(error);
    state.textContent = wasRefused ? "" : `Could not load the summary: ${error.message}`;
    return !wasRefused;
  }
  if (answer.status !== 200) {
    state.textContent = `Could not load the summary: ${detailOf(answer.body, answer.status)}`;
    return true;
  }
  const counts = new Map(); // task → status → count
  for (const item of answer.body.items) {
    if (!counts.has(item.task)) counts.set(item.task, new Map());
    counts.get(item.task).set(item.status, item.count);
  }
  const rows = [];
  for (const [task, perStatus] of counts) {
    const cells = STATUSES.map((status) => {
      const count = perStatus.get(status) || 0;
      if (count === 0) return el("td", { class: "zero", text: "0" });
      const show = el("button", {
        type: "button",
        class: "link",
        "aria-label": `${count} ${status} jobs of ${task}: list them`,
        text: String(count),
      });
      show.addEventListener("click", () => applyFilters({ task, status, queue: "" }));
      return el("td", {}, show);
    });
    const total = [...perStatus.values()].reduce((sum, n) => sum + n, 0);
    rows.push(el("tr", {}, el("th", { scope: "row" }, taskName(task)), ...cells, el("td", { text: String(total) })));
  }
  byId("summary-rows").replaceChildren(...rows);
  byId("known-tasks").replaceChildren(...[...counts.keys()].map((task) => el("option", { value: task })));
  state.textContent = rows.length
    ? `${answer.body.total} jobs in all, updated ${new Date().toLocaleTimeString()}.`
    : "No jobs yet.";
  return true;
}

// --- the list -----------------------------------------------------------------------------------

function currentFilters() {
  return Object.fromEntries(FILTERS.map((name) => [name, byId(`filter-${name}`).value.trim()]));
}

function applyFilters(filters) {
  for (const name of FILTERS) byId(`filter-${name}`).value = filters[name] || "";
  const query = new URLSearchParams(Object.entries(filters).filter(([, value]) => value));
  if (initial.has("limit")) query.set("limit", String(PAGE_SIZE));
  history.replaceState(null, "", query.toString() ? `?${query}` : location.pathname);
  loadJobs(true);
}

function jobRow(job) {
  const open = el("button", {
    type: "button",
    class: "link mono",
    "aria-label": `Follow job ${job.id}`,
    text: job.id.slice(0, 12),
  });
  open.addEventListener("click", () => select(job.id));
  return el(
    "tr",
    { "data-id": job.id, "data-status": job.status },
    el("td", {}, open),
    el("td", {}, taskName(job.task)),
    el("td", {}, badge(job.status)),
    el("td", { text: job.queue }),
    el("td", { class: "num", text: String(job.attempts) }),
    el("td", { class: "num", text: `${job.progress}%` }),
    el("td", {}, el("time", { datetime: job.created_at, text: localTime(job.created_at) })),
    el("td", { class: "wrap", text: job.error || "" }),
  );
}

async function loadJobs(reset) {
  const state = byId("jobs-state");
  const rows = byId("job-rows");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of Object.entries(currentFilters())) if (value) query.set(name, value);
  if (!reset && nextCursor) query.set("cursor", nextCursor);
  state.textContent = "Loading…";
  let answer;
  try {
    answer = await api(`/jobs?${query}`, { admin: true });
  } catch (error) {
    state.textContent = refused(error) ? "" : `Could not load the jobs: ${error.message}`;
    return;
  }
  if (answer.status !== 200) {
    state.textContent = `Could not load the jobs: ${detailOf(answer.body, answer.status)}`;
    return;
  }
  const fresh = answer.body.items.map(jobRow);
  if (reset) rows.replaceChildren(...fresh);
  else rows.append(...fresh);
  nextCursor = answer.body.next_cursor;
  byId("more").hidden = !nextCursor;
  const shown = rows.children.length;
  state.textContent = shown === 0 ? "No job matches." : `${shown} job${shown === 1 ? "" : "s"} shown, newest first.`;
}

// --- one job, live ------------------------------------------------------------------------------

function showJob(job) {
  const facts = [
    ["Id", job.id],
    ["Task", job.task],
    ["Status", job.status],
    ["Queue", job.queue],
    ["Mode", job.mode],
    ["Attempts", job.attempts],
    ["Place in line", job.position],
    ["Created", localTime(job.created_at)],
    ["Scheduled for", localTime(job.scheduled_at)],
    ["Started", localTime(job.started_at)],
    ["Finished", localTime(job.finished_at)],
  ];
  const items = [];
  for (const [name, value] of facts) {
    if (value === null || value === undefined || value === "") continue;
    items.push(el("div", {}, el("dt", { text: name }), el("dd", { text: String(value) })));
  }
  byId("job-facts").replaceChildren(...items);
  byId("job-panel").dataset.status = job.status;
  byId("job-state").textContent = job.error ? `${job.status}: ${job.error}` : job.status;
  byId("job-cancel").hidden = TERMINAL.has(job.status);
  byId("job-retry").hidden = job.status !== "failed";
  byId("job-result").textContent = job.result === null || job.result === undefined ? "—" : JSON.stringify(job.result, null, 2);
  if (typeof job.progress === "number") showProgress(job.progress);
  const row = document.querySelector(`#job-rows tr[data-id="${CSS.escape(job.id)}"]`);
  if (row) row.replaceWith(jobRow(job));
}

function showProgress(value) {
  const pct = Math.max(0, Math.min(100, Number(value) || 0));
  byId("job-progress").value = pct;
  byId("job-percent").textContent = `${pct}%`;
}

function select(jobId) {
  if (selected) selected.stop();
  const panel = byId("job-panel");
  panel.hidden = false;
  byId("job-heading").textContent = `Job ${jobId}`;
  byId("job-log").replaceChildren();
  byId("job-problem").textContent = "";
  selected = { id: jobId, seenLogs: new Set(), stop: () => {} };
  watch();
  byId("job-heading").scrollIntoView({ block: "start" });
}

function watch() {
  const current = selected;
  current.stop();
  current.stop = follow(`/jobs/${encodeURIComponent(current.id)}/events`, current.seenLogs, {
    onStatus: showJob,
    onProgress: (body) => showProgress(body.progress),
    onLog: (line) =>
      byId("job-log").append(el("li", {}, el("time", { datetime: line.at, text: localTime(line.at) }), " ", line.message)),
    onLost: () => {
      byId("job-problem").textContent = "The job's event stream closed; select the job again to follow it.";
    },
  });
}

async function act(method, action) {
  if (!selected) return;
  const problem = byId("job-problem");
  problem.textContent = "";
  try {
    const answer = await api(`/jobs/${encodeURIComponent(selected.id)}/${action}`, { method, admin: true });
    if (answer.status !== 202) {
      problem.textContent = `Could not ${action}: ${detailOf(answer.body, answer.status)}`;
      return;
    }
  } catch (error) {
    if (!refused(error)) problem.textContent = `Could not ${action}: ${error.message}`;
    return;
  }
  watch(); // a retried job runs again; a canceled one says so, and the stream ends
  loadSummary();
}

// --- start --------------------------------------------------------------------------------------

async function reload() {
  if (!adminKey.get()) {
    refused(new KeyRefused("no key"));
    return;
  }
  if (await loadSummary()) loadJobs(true); // a refused key is asked for again after one request, not two
}

const columns = byId("summary-columns");
for (const status of STATUSES) columns.append(el("th", { scope: "col", text: status }));
columns.append(el("th", { scope: "col", text: "total" }));
const statusFilter = byId("filter-status");
for (const status of STATUSES) statusFilter.append(el("option", { value: status, text: status }));
for (const name of FILTERS) byId(`filter-${name}`).value = initial.get(name) || "";

byId("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters(currentFilters());
});
byId("filters").addEventListener("reset", () => setTimeout(() => applyFilters({}), 0));
byId("refresh").addEventListener("click", () => reload());
byId("more").addEventListener("click", () => loadJobs(false));
byId("job-cancel").addEventListener("click", () => act("DELETE", "cancel"));
byId("job-retry").addEventListener("click", () => act("POST", "retry"));
reload();
