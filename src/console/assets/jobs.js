// Jobs: definitions with their runs, and one run as a grid of its indices coloured by
// state, with attempts, exit codes and each index's log.
import { api, live, esc, badge } from "./console.js";
import { followLog } from "./pages.js";

export async function jobsPage(page) {
  const jobs = (await api("GET", "/api/v1/jobs")).jobs;
  page.innerHTML = `<h1>Jobs</h1>` + (jobs.length === 0 ? `<p class="muted">No jobs. Create one with
    <code>tidegate job create</code> or a file in <code>jobs_dir</code>.</p>` : "") +
    jobs.map((j) => `<div class="card" style="margin-bottom:1em">
      <h2 style="margin-top:0">${esc(j.name)} <span class="muted">project ${esc(j.project)} · ${esc(j.array_size ?? "?")} indices
        ${j.schedule ? ` · schedule <code>${esc(j.schedule.cron)}</code>` : ""}</span></h2>
      ${j.config_error ? `<div class="banner">${esc(j.config_error.join("; "))}</div>` : ""}
      <div class="actions"><button class="submit" data-job="${esc(j.name)}">Submit a run</button></div>
      <table><thead><tr><th>Run</th><th>State</th><th>Succeeded</th><th>Submitted</th><th>Finished</th></tr></thead>
      <tbody data-runs="${esc(j.name)}">${rows(j.runs)}</tbody></table></div>`).join("");
  page.querySelectorAll("button.submit").forEach((button) => button.addEventListener("click", async () => {
    const run = await api("POST", "/api/v1/jobruns", { job: button.dataset.job });
    location.hash = `#/jobruns/${encodeURIComponent(run.name)}`;
  }));
  live.listeners.add((state) => {
    for (const body of page.querySelectorAll("tbody[data-runs]")) {
      const mine = state.jobruns.filter((r) => r.job === body.dataset.runs);
      if (mine.length) body.innerHTML = rows(mine);
    }
  });
  return null;
}

function rows(runs) {
  return runs.map((r) => `<tr><td><a href="#/jobruns/${encodeURIComponent(r.name)}">${esc(r.name)}</a></td>
    <td>${badge(r.state)}</td><td>${esc(r.counts?.succeeded ?? 0)}/${esc(r.array_size)}</td>
    <td class="mono">${esc(r.submitted_at)}</td><td class="mono">${esc(r.finished_at ?? "-")}</td></tr>`).join("")
    || `<tr><td colspan="5" class="muted">no runs</td></tr>`;
}

/// One run: its indices as cells; a click shows that index's attempts and log.
export async function runPage(page, name) {
  const path = `/api/v1/jobruns/${encodeURIComponent(name)}`;
  let stop = null;
  const draw = async () => {
    const run = await api("GET", path);
    page.querySelector("#summary").innerHTML = `${badge(run.state)} ${esc(Object.entries(run.counts).map(([k, v]) => `${v} ${k}`).join(", "))}
      <span class="muted">· submitted ${esc(run.submitted_at)}${run.finished_at ? ` · finished ${esc(run.finished_at)}` : ""}</span>
      ${run.message ? `<div class="banner">${esc(run.message)}</div>` : ""}`;
    page.querySelector("#cells").innerHTML = run.indices.map((i) => `<div class="cell ${esc(i.state)}" data-index="${i.index}"
      title="index ${i.index}: ${esc(i.state)}, ${i.attempts.length} attempt(s)">${i.index}</div>`).join("");
    page.querySelector("#cancel").hidden = !["pending", "running"].includes(run.state);
    return run;
  };
  page.innerHTML = `<h1>Run ${esc(name)}</h1><p id="summary"></p>
    <div class="actions"><button class="danger" id="cancel">Cancel</button>
      <button class="secondary" id="resubmit">Run again</button></div>
    <h2>Indices</h2><div class="cells" id="cells"></div>
    <div id="detail"></div>`;
  let run = await draw();
  page.querySelector("#cancel").addEventListener("click", async () => { await api("DELETE", path); run = await draw(); });
  page.querySelector("#resubmit").addEventListener("click", async () => {
    const next = await api("POST", `${path}/resubmit`);
    location.hash = `#/jobruns/${encodeURIComponent(next.name)}`;
  });
  page.querySelector("#cells").addEventListener("click", (event) => {
    const cell = event.target.closest(".cell");
    if (!cell) return;
    const index = Number(cell.dataset.index);
    const record = run.indices.find((i) => i.index === index);
    if (stop) stop();
    page.querySelector("#detail").innerHTML = `<h2>Index ${index}</h2>
      <table><thead><tr><th>Attempt</th><th>Started</th><th>Ended</th><th>Exit</th><th>Reason</th></tr></thead><tbody>
      ${record.attempts.map((a) => `<tr><td>${a.number}</td><td class="mono">${esc(a.started_at)}</td><td class="mono">${esc(a.ended_at ?? "-")}</td>
        <td>${esc(a.exit_code ?? "-")}</td><td>${esc(a.reason ?? "-")}</td></tr>`).join("") || `<tr><td colspan="5" class="muted">not started</td></tr>`}
      </tbody></table><h2>Log</h2><pre class="log" id="index-log"></pre>`;
    stop = followLog(page.querySelector("#index-log"), `${path}/logs?index=${index}&follow=true`);
  });
  live.listeners.add(async (state) => {
    const summary = state.jobruns.find((r) => r.name === name);
    if (summary && (summary.state !== run.state || JSON.stringify(summary.counts) !== JSON.stringify(run.counts))) {
      run = await draw();
    }
  });
  return () => { if (stop) stop(); };
}
