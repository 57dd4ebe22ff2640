// The create and edit forms of an app. What the API refuses comes back with the field it is
// about (`run.env.1BAD`, `scale.max_scale`), and is shown next to that field.
import { api, esc } from "./console.js";

/// Which form field an API issue's field belongs to.
function fieldOf(issue) {
  const f = issue.field || "";
  if (f === "name") return "name";
  if (f === "project") return "project";
  if (/^(run|container)\.command/.test(f)) return "command";
  if (/^container\.image/.test(f)) return "image";
  if (/^(run|container)\.(env|inherit_env)/.test(f)) return "env";
  if (/^(run|container)\.cpu/.test(f)) return "cpu";
  if (/^(run|container)\.memory/.test(f)) return "memory";
  if (/^scale\.min_scale/.test(f)) return "min_scale";
  if (/^scale\.max_scale/.test(f)) return "max_scale";
  if (/^scale\.concurrency/.test(f)) return "concurrency";
  if (/^visibility/.test(f)) return "visibility";
  if (/^traffic/.test(f)) return "traffic";
  return null;
}

const input = (id, label, value, attrs = "") => `<div><label for="${id}">${label}</label>
  <input id="${id}" name="${id}" value="${esc(value ?? "")}" ${attrs}><div class="error" data-for="${id}"></div></div>`;

/// The form for a new app (`name` null) or to edit `name`.
export async function appForm(page, name) {
  const projects = (await api("GET", "/api/v1/projects")).projects;
  const app = name ? await api("GET", `/api/v1/apps/${encodeURIComponent(name)}`) : null;
  const spec = app?.spec || {};
  const container = spec.runtime === "container";
  const run = (container ? spec.container : spec.run) || {};
  const scale = spec.scale || {};
  const env = Object.entries(run.env || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  const traffic = (spec.traffic || []).map((t) => `${t.revision}=${t.percent ?? 0}${t.tag ? "," + t.tag : ""}`).join("\n");
  page.innerHTML = `<h1>${name ? `Edit ${esc(name)}` : "Create an app"}</h1>
    <div class="banner" id="problem" hidden></div>
    <form class="edit" id="app-form" novalidate>
      <div class="row">${input("name", "Name", name, name ? "readonly" : "required placeholder=\"web\"")}
        <div><label for="project">Project</label><select id="project" name="project" ${name ? "disabled" : ""}>
          ${projects.map((p) => `<option ${p.name === (app?.project) ? "selected" : ""}>${esc(p.name)}</option>`).join("")}
          </select><input id="new-project" placeholder="or a new project" ${name ? "hidden" : ""}>
          <div class="error" data-for="project"></div></div></div>
      ${input("command", "Command (process app)", (run.command && !container) ? run.command.join(" ") : "", "placeholder=\"tidegate demo-app\"")}
      ${input("image", "Image (container app, instead of a command)", container ? run.image : "", "placeholder=\"registry.example.com/team/api:1.4\"")}
      <label for="env">Environment (NAME=VALUE per line)</label><textarea id="env" name="env">${esc(env)}</textarea>
      <div class="error" data-for="env"></div>
      <div><label for="visibility">Visibility</label><select id="visibility" name="visibility">
        ${["public", "project", "private"].map((v) => `<option ${v === (spec.visibility || "public") ? "selected" : ""}>${v}</option>`).join("")}
        </select><div class="error" data-for="visibility"></div></div>
      <div class="row">${input("min_scale", "Min scale", scale.min_scale, "type=number min=0")}
        ${input("max_scale", "Max scale", scale.max_scale, "type=number min=0")}
        ${input("concurrency", "Concurrency", scale.concurrency, "type=number min=0")}</div>
      <div class="row">${input("cpu", "CPU", run.cpu, "placeholder=\"0.5\"")}${input("memory", "Memory", run.memory, "placeholder=\"512M\"")}</div>
      ${name ? `<label for="traffic">Traffic (REVISION=PERCENT[,TAG] per line; empty: all to latest)</label>
        <textarea id="traffic" name="traffic">${esc(traffic)}</textarea><div class="error" data-for="traffic"></div>` : ""}
      <div class="actions"><button type="submit" id="save">${name ? "Save" : "Create"}</button>
        <a href="${name ? `#/apps/${encodeURIComponent(name)}` : "#/"}">Cancel</a></div>
    </form>`;
  const form = page.querySelector("#app-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    page.querySelectorAll(".error").forEach((e) => (e.textContent = ""));
    const problem = page.querySelector("#problem");
    problem.hidden = true;
    const value = (id) => form.querySelector(`#${id}`)?.value.trim() ?? "";
    const number = (id) => (value(id) === "" ? null : Number(value(id)));
    const envObject = {};
    for (const line of value("env").split("\n").map((l) => l.trim()).filter(Boolean)) {
      const at = line.indexOf("=");
      if (at < 0) { form.querySelector('[data-for="env"]').textContent = `${line}: expected NAME=VALUE`; return; }
      envObject[line.slice(0, at)] = line.slice(at + 1);
    }
    const image = value("image");
    const isContainer = name ? container : image !== "";
    const section = {};
    if (value("command")) section.command = value("command").split(/\s+/);
    if (isContainer && image) section.image = image;
    if (name) for (const key of Object.keys(run.env || {})) if (!(key in envObject)) envObject[key] = null;
    section.env = envObject;
    section.cpu = value("cpu") === "" ? null : Number(value("cpu"));
    section.memory = value("memory") || null;
    const body = {
      visibility: value("visibility"),
      scale: { min_scale: number("min_scale"), max_scale: number("max_scale"), concurrency: number("concurrency") },
      [isContainer ? "container" : "run"]: section,
    };
    if (name) {
      const lines = value("traffic").split("\n").map((l) => l.trim()).filter(Boolean);
      body.traffic = lines.length ? lines.map((line) => {
        const [target, tag] = line.split(",");
        const [revision, percent] = target.split("=");
        return tag ? { revision, percent: Number(percent || 0), tag } : { revision, percent: Number(percent) };
      }) : null;
    } else {
      const project = value("new-project") || value("project");
      body.name = value("name");
      body.project = project;
      if (isContainer) body.runtime = "container";
      for (const key of ["cpu", "memory"]) if (section[key] === null) delete section[key];
      for (const key of Object.keys(body.scale)) if (body.scale[key] === null) delete body.scale[key];
      if (!Object.keys(body.scale).length) delete body.scale;
      try {
        if (value("new-project") && !projects.some((p) => p.name === project)) {
          await api("POST", "/api/v1/projects", { name: project });
        }
      } catch (error) { return show(page, problem, error); }
    }
    try {
      if (name) await api("PATCH", `/api/v1/apps/${encodeURIComponent(name)}`, body, app.version);
      else await api("POST", "/api/v1/apps", body);
      location.hash = `#/apps/${encodeURIComponent(name || body.name)}`;
    } catch (error) { show(page, problem, error); }
  });
  return null;
}

/// Puts each issue of a refusal next to its field; the rest in the banner.
function show(page, banner, error) {
  const issues = error.answer?.issues || [];
  const unplaced = [];
  for (const issue of issues) {
    const field = fieldOf(issue);
    const slot = field && page.querySelector(`[data-for="${field}"]`);
    if (slot) slot.textContent += `${issue.field}: ${issue.message} `;
    else unplaced.push(`${issue.field ? issue.field + ": " : ""}${issue.message}`);
  }
  if (!issues.length) {
    const text = error.message || "refused";
    const slot = /project/.test(text) ? page.querySelector('[data-for="project"]') : null;
    if (slot) slot.textContent = text; else unplaced.push(text);
  }
  if (unplaced.length) { banner.textContent = unplaced.join("; "); banner.hidden = false; }
}
