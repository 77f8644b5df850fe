// The upload page: each dropped or chosen file is uploaded (POST /audio) and followed over
// server-sent events (/jobs/{id}/events) to its result table and waveform image.
import {
  KeyRefused,
  TERMINAL,
  api,
  detailOf,
  el,
  follow,
  localTime,
  setupKeyForm,
  statusWord,
} from "/static/common.js";

const WAVEFORM_TRIES = 120; // about two minutes at the server's Retry-After of 1 s
// Result fields in reading order, with their units; any other field follows, as the server named it.
const RESULT_FIELDS = [
  ["duration_s", "Duration", "s"],
  ["sample_rate", "Sample rate", "Hz"],
  ["channels", "Channels", ""],
  ["rms_dbfs", "RMS level", "dBFS"],
  ["peak_dbfs", "Peak level", "dBFS"],
  ["silence_ratio", "Silence", "ratio"],
  ["clipping_ratio", "Clipping", "ratio"],
  ["zero_crossing_rate", "Zero-crossing rate", ""],
  ["spectral_centroid_hz", "Spectral centroid", "Hz"],
  ["dominant_frequency_hz", "Dominant frequency", "Hz"],
  ["f0_median_hz", "Median pitch (f0)", "Hz"],
  ["format", "Format", ""],
  ["subtype", "Encoding", ""],
];

let cardCount = 0;
const keyForm = setupKeyForm();

function formatValue(value, unit) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    const shown = Number.isInteger(value) ? String(value) : value.toFixed(3).replace(/\.?0+$/, "");
    return unit && unit !== "ratio" ? `${shown} ${unit}` : shown;
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function waitWords(position, waitS) {
  const place = position === 0 ? "next in line" : `${position} ahead in line`;
  return typeof waitS === "number" && waitS > 0 ? `${place}, about ${Math.ceil(waitS)} s` : place;
}

function resultTable(result) {
  const body = el("tbody");
  const known = new Set();
  for (const [name, label, unit] of RESULT_FIELDS) {
    if (!(name in result)) continue;
    known.add(name);
    body.append(el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: formatValue(result[name], unit) })));
  }
  for (const [name, value] of Object.entries(result)) {
    if (known.has(name)) continue;
    body.append(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: formatValue(value, "") })));
  }
  return el("table", { class: "result" }, el("caption", { text: "Result" }), body);
}

/** One upload: its card on the page and everything that updates it. */
class Upload {
  constructor(file, options) {
    cardCount += 1;
    const n = cardCount;
    this.file = file;
    this.options = options;
    this.id = null;
    this.stop = null;
    this.lastAnnounced = -1;
    this.status = null;
    this.seenLogs = new Set(); // log lines already shown, by seq: a retry's stream starts from the first line
    this.heading = el("h3", { id: `upload-${n}-name`, class: "file-name", text: file.name });
    this.meta = el("p", { class: "meta" });
    this.state = el("p", { class: "state", role: "status", "aria-live": "polite", text: "Uploading…" });
    this.bar = el("progress", { id: `upload-${n}-progress`, max: "100", value: "0" });
    this.percent = el("span", { class: "percent", "aria-hidden": "true", text: "0%" });
    this.problem = el("p", { class: "problem", role: "alert" });
    this.cancelButton = el("button", { type: "button", class: "danger", hidden: true, text: "Cancel" });
    this.retryButton = el("button", { type: "button", hidden: true, text: "Retry" });
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.retryButton.addEventListener("click", () => this.retry());
    this.log = el("ol", { class: "log", "aria-label": "Log lines" });
    this.outcome = el("div", { class: "outcome" });
    this.card = el(
      "article",
      { class: "upload", "aria-labelledby": this.heading.id, "data-status": "uploading" },
      this.heading,
      this.meta,
      this.state,
      el(
        "div",
        { class: "progress-row" },
        el("label", { for: this.bar.id, text: "Progress" }),
        this.bar,
        this.percent,
      ),
      el("div", { class: "actions" }, this.cancelButton, this.retryButton),
      this.problem,
      el("details", { class: "log-box" }, el("summary", { text: "Log" }), this.log),
      this.outcome,
    );
  }

  async start() {
    const form = new FormData();
    form.append("file", this.file, this.file.name);
    form.append("priority", this.options.priority);
    if (this.options.scheduledAt) form.append("scheduled_at", this.options.scheduledAt);
    let answer;
    try {
      answer = await api("/audio", { method: "POST", body: form });
    } catch (error) {
      this.fail(`The upload did not reach the server: ${error.message}`);
      return;
    }
    if (answer.status !== 200 && answer.status !== 202) {
      this.fail(`Not accepted: ${detailOf(answer.body, answer.status)}`);
      return;
    }
    this.id = answer.body.id;
    this.meta.textContent = `id ${this.id} · queue ${answer.body.queue} · ${answer.body.mode}`;
    this.card.dataset.id = this.id;
    this.show({ status: answer.body.status, attempts: 0, progress: 0 });
    this.watch();
  }

  fail(message) {
    this.card.dataset.status = "refused";
    this.state.textContent = "Not uploaded";
    this.problem.textContent = message;
  }

  watch() {
    if (this.stop) this.stop();
    this.stop = follow(`/jobs/${encodeURIComponent(this.id)}/events`, this.seenLogs, {
      onStatus: (body) => this.show(body),
      onProgress: (body) => this.progress(body.progress),
      onLog: (line) => this.log.append(el("li", {}, el("time", { datetime: line.at, text: localTime(line.at) }), " ", line.message)),
      onLost: () => {
        this.problem.textContent = "Lost the connection to the server; reload the page to follow this upload again.";
      },
    });
  }

  progress(value, announce = true) {
    const pct = Math.max(0, Math.min(100, Number(value) || 0));
    this.bar.value = pct;
    this.percent.textContent = `${pct}%`;
    // The status line is a live region: it says every tenth, not every step.
    const step = Math.floor(pct / 10) * 10;
    if (announce && this.status === "started" && step !== this.lastAnnounced) {
      this.state.textContent = `Analysing: ${step}%`;
    }
    this.lastAnnounced = step;
  }

  /** Shows a job's state (GET /jobs/{id}'s body, or the start of one). */
  show(job) {
    const status = job.status;
    this.status = status;
    this.card.dataset.status = status;
    this.cancelButton.hidden = TERMINAL.has(status);
    this.retryButton.hidden = status !== "failed";
    const attempt = job.attempts > 1 ? ` (attempt ${job.attempts})` : "";
    if (status === "queued" && typeof job.position === "number") {
      this.state.textContent = `Queued${attempt}: ${waitWords(job.position, job.estimated_wait_s)}`;
    } else if (status === "scheduled" && job.scheduled_at) {
      this.state.textContent = `Scheduled for ${localTime(job.scheduled_at)}${attempt}`;
    } else if (status === "failed") {
      this.state.textContent = `Failed${attempt}: ${job.error || "no reason given"}`;
    } else {
      this.state.textContent = `${statusWord(status)}${attempt}`;
    }
    if (typeof job.progress === "number") this.progress(job.progress, false);
    if (status === "finished" && job.result && !this.outcome.hasChildNodes()) {
      this.outcome.append(resultTable(job.result));
      this.loadWaveform();
    }
  }

  async loadWaveform() {
    const figure = el("figure", { class: "waveform" });
    const caption = el("figcaption", { role: "status", text: "Drawing the waveform…" });
    figure.append(caption);
    this.outcome.append(figure);
    const url = `/audio/${encodeURIComponent(this.id)}/waveform.png`;
    for (let attempt = 0; attempt < WAVEFORM_TRIES; attempt += 1) {
      let response;
      try {
        response = await fetch(url, { headers: { Accept: "image/png, application/json" } });
      } catch (error) {
        caption.textContent = `The waveform could not be fetched: ${error.message}`;
        return;
      }
      if (response.status === 200) {
        const image = el("img", { alt: `Waveform of ${this.file.name}`, src: URL.createObjectURL(await response.blob()) });
        figure.prepend(image);
        caption.textContent = "Waveform";
        return;
      }
      if (response.status !== 202) {
        const body = await response.json().catch(() => null);
        caption.textContent = `No waveform: ${detailOf(body, response.status)}`;
        return;
      }
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
    caption.textContent = "The waveform is taking long; reload the page later.";
  }

  async cancel() {
    await this.act(`/jobs/${encodeURIComponent(this.id)}/cancel`, "DELETE", "cancel");
  }

  async retry() {
    const done = await this.act(`/jobs/${encodeURIComponent(this.id)}/retry`, "POST", "retry");
    if (done) {
      this.outcome.replaceChildren();
      this.watch();
    }
  }

  /** Calls an admin endpoint for this job; true when the server took the request. */
  async act(path, method, what) {
    this.problem.textContent = "";
    try {
      const answer = await api(path, { method, admin: true });
      if (answer.status === 202) {
        this.show({ status: answer.body.status, attempts: 0 });
        return true;
      }
      this.problem.textContent = `Could not ${what}: ${detailOf(answer.body, answer.status)}`;
    } catch (error) {
      if (error instanceof KeyRefused) {
        this.problem.textContent = `Could not ${what}: ${error.message}.`;
        keyForm.ask(`To ${what} an upload, enter the admin key.`);
      } else {
        this.problem.textContent = `Could not ${what}: ${error.message}`;
      }
    }
    return false;
  }
}

function currentOptions() {
  const priority = document.getElementById("priority").value;
  const when = document.getElementById("scheduled-at").value;
  if (!when) return { priority, scheduledAt: null };
  const moment = new Date(when); // datetime-local: the reader's local time
  if (Number.isNaN(moment.getTime())) return null;
  return { priority, scheduledAt: moment.toISOString() };
}

function uploadAll(files) {
  const problem = document.getElementById("upload-problem");
  problem.textContent = "";
  if (!files || files.length === 0) return;
  const options = currentOptions();
  if (options === null) {
    problem.textContent = "The time to run at is not a valid date and time.";
    return;
  }
  const list = document.getElementById("uploads");
  document.getElementById("no-uploads").hidden = true;
  for (const file of files) {
    const upload = new Upload(file, options);
    list.prepend(el("li", {}, upload.card));
    upload.start();
  }
}

const input = document.getElementById("file-input");
const zone = document.getElementById("drop-zone");
input.addEventListener("change", () => {
  uploadAll(Array.from(input.files));
  input.value = ""; // the same file may be chosen again
});
for (const type of ["dragenter", "dragover"]) {
  zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "dragend"]) zone.addEventListener(type, () => zone.classList.remove("dragging"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("dragging");
  uploadAll(Array.from(event.dataTransfer.files));
});
// A file dropped beside the zone must not make the browser leave the page to open it.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());
