// The console: a client of the management API (/api/v1) only, with the session cookie the
// login set; changes carry the session's CSRF token. Pages are routed by the URL's hash and
// kept live by the server's event stream (/api/v1/watch).
import { overview, appPage } from "./pages.js";
import { appForm } from "./forms.js";
import { jobsPage, runPage } from "./jobs.js";

let csrf = null;

/// A JSON API call; a refusal throws an Error carrying the answer.
export async function api(method, path, body, ifMatch) {
  const headers = {};
  if (ifMatch) headers["If-Match"] = `"${ifMatch}"`;
  if (method !== "GET") {
    if (csrf === null) {
      csrf = (await (await fetch("/api/v1/session")).json()).csrf;
    }
    headers["X-CSRF-Token"] = csrf;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { location.reload(); throw new Error("logged out"); }
  const text = await response.text();
  let data;
  try { data = JSON.parse(text); } catch { data = { text }; }
  if (!response.ok) {
    const error = new Error(data.error || `${response.status}`);
    error.answer = data;
    error.status = response.status;
    throw error;
  }
  return data;
}

/// The latest state from the event stream, and who wants to hear of it.
export const live = { state: null, listeners: new Set() };

function connect() {
  const source = new EventSource("/api/v1/watch");
  const dot = document.getElementById("live");
  source.addEventListener("state", (event) => {
    live.state = JSON.parse(event.data);
    dot.classList.add("on");
    for (const listener of live.listeners) listener(live.state);
  });
  source.onerror = () => dot.classList.remove("on");
}

/// Escapes text for HTML.
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/// `3m 12s` since an RFC 3339 time.
export function age(since) {
  if (!since) return "-";
  let s = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (s >= size) { parts.push(Math.floor(s / size) + unit); s %= size; }
    if (parts.length === 2) return parts.join(" ");
  }
  parts.push(s + "s");
  return parts.slice(0, 2).join(" ");
}

/// One word for where an app stands, from its live state.
export function appWord(app) {
  if (!app) return "loading";
  if (app.config_error) return "config-error";
  if (app.latest_ready && app.latest_ready === app.revision) return app.ready > 0 ? "ready" : "idle";
  const latest = (app.revisions || []).find((r) => r.name === app.revision);
  if (latest && /failed/.test(latest.state)) return "failed";
  return "deploying";
}

export function badge(word) {
  return `<span class="state ${esc(word)}">${esc(word)}</span>`;
}

let leave = null;

async function route() {
  if (leave) { leave(); leave = null; }
  live.listeners.clear();
  const page = document.getElementById("page");
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) leave = await overview(page);
    else if (parts[0] === "new") leave = await appForm(page, null);
    else if (parts[0] === "apps" && parts[2] === "edit") leave = await appForm(page, parts[1]);
    else if (parts[0] === "apps") leave = await appPage(page, parts[1]);
    else if (parts[0] === "jobs") leave = await jobsPage(page);
    else if (parts[0] === "jobruns") leave = await runPage(page, parts[1]);
    else page.innerHTML = `<h1>Not found</h1><p><a href="#/">Overview</a></p>`;
  } catch (error) {
    page.innerHTML = `<h1>${esc(error.message)}</h1><p><a href="#/">Overview</a></p>`;
  }
  if (live.state) for (const listener of live.listeners) listener(live.state);
}

window.addEventListener("hashchange", route);
connect();
route();
