// The overview and the app page.
import { api, live, esc, age, appWord, badge } from "./console.js";
import { appCharts, sparkline } from "./charts.js";

const SECRET = /(SECRET|TOKEN|PASSWORD|PASSWD|PASS|KEY|CREDENTIAL|PRIVATE|AUTH)/i;

/// Projects with their apps (status, URL, instances, requests/s, sparkline) and jobs.
export async function overview(page) {
  const [projects, apps, jobs] = await Promise.all([
    api("GET", "/api/v1/projects"), api("GET", "/api/v1/apps"), api("GET", "/api/v1/jobs"),
  ]);
  const byName = new Map(apps.apps.map((a) => [a.name, a]));
  const sparks = new Map();
  await Promise.all(apps.apps.map(async (a) => {
    try {
      const stats = await api("GET", `/api/v1/apps/${encodeURIComponent(a.name)}/stats`);
      sparks.set(a.name, stats.points.slice(-60).map((p) => p.rps.reduce((x, y) => x + y, 0)));
    } catch { sparks.set(a.name, []); }
  }));
  const jobsOf = (project) => jobs.jobs.filter((j) => j.project === project);
  page.innerHTML = `<h1>Overview</h1>` + (projects.projects.length === 0
    ? `<p class="muted">No projects yet. <a href="#/new">Create an app</a>.</p>` : "") +
    projects.projects.map((p) => `
      <h2>Project ${esc(p.name)}</h2>
      <table class="apps"><thead><tr><th>App</th><th>Status</th><th>URL</th><th>Instances</th>
        <th>Requests/s</th><th>Last minute</th></tr></thead><tbody>
      ${p.apps.map((name) => {
        const a = byName.get(name) || { name };
        return `<tr data-app="${esc(name)}"><td><a href="#/apps/${encodeURIComponent(name)}">${esc(name)}</a></td>
          <td class="status">${badge(a.config_error ? "config-error" : "loading")}</td>
          <td>${a.url ? `<a href="${esc(a.url)}" target="_blank" rel="noopener">${esc(a.url)}</a>` : "-"}</td>
          <td class="instances">-</td><td class="rps">-</td><td class="spark"></td></tr>`;
      }).join("") || `<tr><td colspan="6" class="muted">no apps</td></tr>`}
      </tbody></table>
      ${jobsOf(p.name).length ? `<table class="jobs"><thead><tr><th>Job</th><th>Indices</th><th>Schedule</th><th>Last run</th><th>State</th></tr></thead><tbody>
        ${jobsOf(p.name).map((j) => `<tr><td><a href="#/jobs">${esc(j.name)}</a></td><td>${esc(j.array_size ?? "-")}</td>
          <td>${esc(j.schedule?.cron ?? "-")}</td>
          <td>${j.runs[0] ? `<a href="#/jobruns/${encodeURIComponent(j.runs[0].name)}">${esc(j.runs[0].name)}</a>` : "-"}</td>
          <td>${j.runs[0] ? badge(j.runs[0].state) : "-"}</td></tr>`).join("")}</tbody></table>` : ""}
    `).join("");
  live.listeners.add((state) => {
    for (const app of state.apps) {
      const row = page.querySelector(`tr[data-app="${CSS.escape(app.name)}"]`);
      if (!row) continue;
      row.querySelector(".status").innerHTML = badge(appWord(app));
      row.querySelector(".instances").textContent = `${app.ready}/${app.desired}`;
      const rps = app.point ? app.point.rps.reduce((x, y) => x + y, 0) : 0;
      row.querySelector(".rps").textContent = rps.toFixed(1);
      const spark = sparks.get(app.name) || [];
      if (app.point && spark.lastT !== app.point.t) {
        spark.push(rps);
        if (spark.length > 60) spark.shift();
        spark.lastT = app.point.t;
        sparks.set(app.name, spark);
      }
      row.querySelector(".spark").innerHTML = sparkline(spark);
    }
  });
  return null;
}

/// One app: URL, status, charts, revisions, instances, env, scale, events and its log.
export async function appPage(page, name) {
  const path = `/api/v1/apps/${encodeURIComponent(name)}`;
  const [app, events, stats] = await Promise.all([
    api("GET", path), api("GET", `${path}/events`), api("GET", `${path}/stats`),
  ]);
  const spec = app.spec || {};
  const run = spec.run || spec.container || {};
  const env = Object.entries(run.env || {});
  const points = stats.points;
  page.innerHTML = `
    <h1>${esc(name)} <span id="word">${badge(appWord(null))}</span></h1>
    <p><a href="${esc(app.url)}" target="_blank" rel="noopener" id="url">${esc(app.url)}</a>
      <span class="muted">project ${esc(app.project)} · ${esc(spec.runtime || "process")} · file ${esc(app.file)}</span></p>
    ${app.config_error ? `<div class="banner">The file is rejected: ${esc(app.config_error.join("; "))}</div>` : ""}
    <div class="actions"><a href="#/apps/${encodeURIComponent(name)}/edit"><button class="secondary">Edit</button></a>
      <button class="danger" id="delete">Delete</button></div>
    <div class="grid" id="charts">${appCharts(points)}</div>
    <h2>Revisions</h2><table><thead><tr><th>Revision</th><th>State</th><th>Traffic</th><th>Tags</th><th>Ready</th><th>Last error</th></tr></thead><tbody id="revisions"></tbody></table>
    <h2>Instances</h2><table><thead><tr><th>ID</th><th>Revision</th><th>State</th><th>In flight</th><th>Age</th></tr></thead><tbody id="instances"></tbody></table>
    <div class="row">
      <div><h2>Environment</h2><dl class="kv" id="env-list">${env.map(([k, v]) => `<dt class="mono">${esc(k)}</dt><dd class="mono">${SECRET.test(k)
        ? `<span class="secret" data-value="${esc(v)}" title="click to show">••••••••</span>` : esc(v)}</dd>`).join("") || `<dd class="muted">none</dd>`}</dl></div>
      <div><h2>Scale</h2><dl class="kv">${Object.entries(spec.scale || {}).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("") || `<dd class="muted">defaults</dd>`}
        <dt>visibility</dt><dd>${esc(spec.visibility || "public")}</dd></dl></div>
    </div>
    <h2>Events</h2><table><thead><tr><th>Time</th><th>Reason</th><th>Message</th></tr></thead><tbody>
      ${events.events.slice(-20).reverse().map((e) => `<tr><td class="mono">${esc(e.time)}</td><td>${esc(e.reason)}</td><td>${esc(e.message)}</td></tr>`).join("") || `<tr><td colspan="3" class="muted">none yet</td></tr>`}
    </tbody></table>
    <h2>Log</h2><pre class="log" id="log"></pre>`;
  page.querySelectorAll(".secret").forEach((el) => el.addEventListener("click", () => {
    el.textContent = el.dataset.value; el.classList.remove("secret");
  }));
  page.querySelector("#delete").addEventListener("click", async () => {
    if (!confirm(`Delete app ${name}? Its instances stop and its file goes.`)) return;
    await api("DELETE", path);
    location.hash = "#/";
  });
  const render = (state) => {
    const current = state.apps.find((a) => a.name === name);
    if (!current) return;
    page.querySelector("#word").innerHTML = badge(appWord(current));
    const traffic = new Map((app.status?.traffic || []).map((t) => [t.revision, t.percent]));
    page.querySelector("#revisions").innerHTML = current.revisions.map((r) => `<tr><td class="mono">${esc(r.name)}</td>
      <td>${badge(r.state)}</td><td>${esc(r.percent ?? traffic.get(r.name) ?? 0)}%</td><td>${esc((r.tags || []).join(", ") || "-")}</td>
      <td>${esc(r.ready ?? 0)}/${esc(r.desired ?? 0)}</td><td>${esc(r.last_error || "-")}</td></tr>`).join("");
    page.querySelector("#instances").innerHTML = current.instances.map((i) => `<tr><td class="mono">${esc(i.id)}</td>
      <td class="mono">${esc(i.revision)}</td><td>${badge(i.state)}</td><td>${esc(i.in_flight)}</td><td>${esc(age(i.started_at))}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">none: it starts on the first request</td></tr>`;
    if (current.point && (!points.length || points[points.length - 1].t !== current.point.t)) {
      points.push(current.point);
      if (points.length > 900) points.shift();
      page.querySelector("#charts").innerHTML = appCharts(points);
    }
  };
  live.listeners.add(render);
  return followLog(page.querySelector("#log"), `${path}/logs?follow=true&tail=200`);
}

/// Streams a followed log into `pre`; returns what stops it.
export function followLog(pre, url) {
  const abort = new AbortController();
  (async () => {
    try {
      const response = await fetch(url, { signal: abort.signal, credentials: "same-origin" });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent += decoder.decode(value, { stream: true });
        const lines = pre.textContent.split("\n");
        if (lines.length > 1000) pre.textContent = lines.slice(-1000).join("\n");
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
    } catch { /* left the page */ }
  })();
  return () => abort.abort();
}
