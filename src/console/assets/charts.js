// Small SVG line charts of the last 15 minutes (points from /api/v1/apps/{name}/stats and
// the event stream), and sparklines for the overview.

const COLORS = ["#16a34a", "#2563eb", "#d97706", "#dc2626", "#7c3aed"];

/// An SVG of `series` ([{name, values: [[t, v|null]...]}]) over the last `span` ms.
export function lineChart(series, { span = 15 * 60 * 1000, height = 120, dots = false } = {}) {
  const width = 600;
  const now = Date.now();
  const all = series.flatMap((s) => s.values.filter(([, v]) => v !== null && v !== undefined));
  const max = Math.max(1e-9, ...all.map(([, v]) => v));
  const x = (t) => ((t - (now - span)) / span) * width;
  const y = (v) => height - 4 - (v / max) * (height - 16);
  const shapes = series.map((s, i) => {
    const color = COLORS[i % COLORS.length];
    const points = s.values.filter(([, v]) => v !== null && v !== undefined);
    if (dots) {
      // A zero-length line with round caps: a dot that stays round in a stretched drawing.
      return points.map(([t, v]) => `<path d="M${x(t).toFixed(1)},${y(v).toFixed(1)}l0,0" stroke="${color}" stroke-width="6" stroke-linecap="round" vector-effect="non-scaling-stroke"/>`).join("");
    }
    const d = points.map(([t, v], k) => `${k ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    return d ? `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.5" vector-effect="non-scaling-stroke"/>` : "";
  });
  // The scale's top as text beside the drawing: text inside a stretched SVG would stretch.
  const top = all.length ? formatMax(max) : "no data yet";
  return `<div class="chart-max">${top}</div><svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none">` +
    `<line x1="0" y1="${height - 4}" x2="${width}" y2="${height - 4}" stroke="#e4e7ec"/>` +
    shapes.join("") + `</svg>`;
}

export function legend(names) {
  return `<div class="legend">` + names.map((n, i) =>
    `<span style="color:${COLORS[i % COLORS.length]}">■ ${n}</span>`).join("") + `</div>`;
}

/// A tiny line of requests/s for the overview.
export function sparkline(values) {
  const width = 120, height = 24;
  const max = Math.max(1e-9, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const d = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join("");
  return `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><path d="${d}" fill="none" stroke="#2563eb" stroke-width="1.2"/></svg>`;
}

function formatMax(v) {
  if (v < 1e-6) return "0";
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

/// The five charts of an app page from its points.
export function appCharts(points) {
  const col = (f) => points.map((p) => [p.t, f(p)]);
  const card = (title, body) => `<div class="card chart"><h3>${title}</h3>${body}</div>`;
  return [
    card("Requests/s by status", lineChart([
      { values: col((p) => p.rps[0]) }, { values: col((p) => p.rps[1]) },
      { values: col((p) => p.rps[2]) }, { values: col((p) => p.rps[3]) },
    ]) + legend(["2xx", "3xx", "4xx", "5xx"])),
    card("Latency (ms)", lineChart([{ values: col((p) => p.p50_ms) }, { values: col((p) => p.p99_ms) }]) +
      legend(["p50", "p99"])),
    card("In flight", lineChart([{ values: col((p) => p.in_flight) }]) + legend(["requests"])),
    card("Instances", lineChart([{ values: col((p) => p.desired) }, { values: col((p) => p.ready) }]) +
      legend(["desired", "ready"])),
    card("Cold starts (ms)", lineChart([{ values: col((p) => p.cold_start_ms) }], { dots: true }) +
      legend(["duration"])),
  ].join("");
}
