// What both pages share: building DOM safely, the admin key, calling the API, following a job's events.
// Every piece of data reaches the page through textContent or an attribute, never as HTML.

export const STATUSES = ["pending", "queued", "scheduled", "started", "finished", "failed", "canceled"];
export const TERMINAL = new Set(["finished", "failed", "canceled"]);
const KEY_STORAGE = "audiokit.adminKey";

/** An element with attributes and children; strings become text nodes, so markup in them stays text. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** A task's dotted name that may break after each dot on a narrow screen. */
export function taskName(task) {
  const name = el("span", { class: "task" });
  String(task)
    .split(".")
    .forEach((part, index, parts) => {
      name.append(index < parts.length - 1 ? `${part}.` : part);
      if (index < parts.length - 1) name.append(el("wbr"));
    });
  return name;
}

/** The admin key of this tab: kept in sessionStorage only, gone when the tab closes. */
export const adminKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set: (key) => sessionStorage.setItem(KEY_STORAGE, key),
  forget: () => sessionStorage.removeItem(KEY_STORAGE),
};

/** Raised for a 401: no admin key, or a wrong one. */
export class KeyRefused extends Error {}

/** The `detail` of an error answer, in words. */
export function detailOf(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((problem) => String(problem.msg || problem)).join("; ");
  return `the server answered ${status}`;
}

/**
 * Calls the API; `admin` sends the admin key as `X-API-Key`.
 * Resolves to {status, body, response}; a 401 rejects with KeyRefused.
 */
export async function api(path, { method = "GET", body = undefined, admin = false } = {}) {
  const headers = { Accept: "application/json" };
  if (admin) {
    const key = adminKey.get();
    if (!key) throw new KeyRefused("enter the admin key first");
    headers["X-API-Key"] = key;
  }
  const response = await fetch(path, { method, body, headers, credentials: "same-origin" });
  let parsed = null;
  if ((response.headers.get("content-type") || "").includes("application/json")) {
    parsed = await response.json().catch(() => null);
  }
  if (response.status === 401) throw new KeyRefused(detailOf(parsed, 401));
  return { status: response.status, body: parsed, response };
}

/**
 * Follows a job's server-sent events (/jobs/{id}/events: `status`, `progress`, `log`) until a terminal status.
 * Returns a function that stops following. Log lines are handed over once each (`seenLogs`: the
 * `seq`s already handed over), even when the browser reconnects and the server starts again from
 * the first line.
 */
export function follow(url, seenLogs, { onStatus, onProgress, onLog, onLost }) {
  const source = new EventSource(url);
  const read = (event) => {
    try {
      return JSON.parse(event.data);
    } catch {
      return null;
    }
  };
  const logOnce = (line) => {
    if (!line || seenLogs.has(line.seq)) return;
    seenLogs.add(line.seq);
    onLog(line);
  };
  source.addEventListener("status", (event) => {
    const body = read(event);
    if (!body) return;
    if (TERMINAL.has(body.status)) source.close(); // the server ends the stream: do not reconnect
    // A job's status (GET /jobs/{id}) carries its recent log lines: all a late follower gets of an ended job.
    if (Array.isArray(body.logs)) body.logs.forEach(logOnce);
    onStatus(body);
  });
  source.addEventListener("progress", (event) => {
    const body = read(event);
    if (body) onProgress(body);
  });
  source.addEventListener("log", (event) => logOnce(read(event)));
  source.addEventListener("error", () => {
    // EventSource retries by itself; once it has given up (e.g. a 404) the stream is closed for good.
    if (source.readyState === EventSource.CLOSED && onLost) onLost();
  });
  return () => source.close();
}

/** A time from the API as the reader's local time (the ISO text when it cannot be read). */
export function localTime(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? String(iso) : moment.toLocaleString();
}

/** A status in words, with its first letter capitalised. */
export function statusWord(status) {
  const text = String(status || "unknown");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Wires the admin-key form of a page: save to sessionStorage, forget, and tell `onChange`. */
export function setupKeyForm(onChange = () => {}) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("admin-key");
  const forget = document.getElementById("forget-key");
  const state = document.getElementById("key-state");
  const box = document.getElementById("key-box");
  const show = () => {
    state.textContent = adminKey.get() ? "An admin key is set for this tab." : "No admin key is set.";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      state.textContent = "Type the admin key first.";
      input.focus();
      return;
    }
    adminKey.set(key);
    input.value = "";
    show();
    if (box) box.open = false;
    onChange();
  });
  forget.addEventListener("click", () => {
    adminKey.forget();
    show();
    onChange();
  });
  show();
  return {
    /** Opens the form and says why (e.g. a refused key). */
    ask(reason) {
      if (box) box.open = true;
      state.textContent = reason;
      input.focus();
    },
  };
}
