// SVG time-series charts, drawn by hand (no chart library, no CDN).

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

// "Nice" tick step for a value range (1, 2, 2.5 or 5 times a power of ten).
function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const pow = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * pow >= raw) return m * pow;
  }
  return 10 * pow;
}

function valueTicks(min, max, count = 5) {
  const step = niceStep(max - min, count);
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
    ticks.push(Math.round(v * 1000) / 1000);
  }
  return ticks;
}

const HOUR = 3600e3;
const TIME_STEPS = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR, 48 * HOUR, 7 * 24 * HOUR];

function timeTicks(t0, t1, count = 6) {
  const step = TIME_STEPS.find((s) => (t1 - t0) / s <= count) ?? TIME_STEPS[TIME_STEPS.length - 1];
  // Align ticks to local midnight plus whole steps, so labels read 00:00, 06:00, ...
  const start = new Date(t0);
  start.setHours(0, 0, 0, 0);
  let t = start.getTime();
  while (t < t0) t += step;
  const ticks = [];
  for (; t <= t1; t += step) ticks.push({ t, day: step >= 24 * HOUR });
  return ticks;
}

function timeLabel(t, dayOnly) {
  const d = new Date(t);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  const isMidnight = d.getHours() === 0 && d.getMinutes() === 0;
  if (dayOnly || isMidnight) {
    return d.toLocaleDateString([], { weekday: "short", day: "numeric" });
  }
  return hm;
}

export function fmtNumber(v, fixed) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (fixed !== undefined) return v.toFixed(fixed);
  const abs = Math.abs(v);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  return Number(v.toFixed(digits)).toString();
}

/**
 * Draws a time-series chart.
 * opts: { title, unit, t0, t1, lines: [{ name, cls, points: [{t, v}] }],
 *         bands: [{ from, to, cls, label }], normal: [lo, hi], normalInDomain, yMin, yMax,
 *         step, width, height, digits }
 */
export function timeChart(opts) {
  const width = opts.width ?? 640;
  const height = opts.height ?? 220;
  const m = { top: 14, right: 16, bottom: 30, left: 48 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;

  const all = opts.lines.flatMap((l) => l.points.map((p) => p.v));
  // The normal range widens the axis only when asked, so a wide range (BP up to 219)
  // does not squash the readings.
  const ctx = opts.normalInDomain === false ? [] : (opts.normal ?? []);
  let lo = opts.yMin ?? Math.min(...all, ...ctx);
  let hi = opts.yMax ?? Math.max(...all, ...ctx);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (hi - lo < 1e-9) {
    lo -= 1;
    hi += 1;
  }
  if (opts.yMin === undefined || opts.yMax === undefined) {
    const pad = (hi - lo) * 0.1;
    if (opts.yMin === undefined) lo -= pad;
    if (opts.yMax === undefined) hi += pad;
  }
  const yt = valueTicks(lo, hi);
  if (opts.yMin === undefined) lo = Math.min(lo, yt[0]);
  if (opts.yMax === undefined) hi = Math.max(hi, yt[yt.length - 1]);

  const { t0, t1 } = opts;
  const x = (t) => m.left + ((t - t0) / Math.max(1, t1 - t0)) * iw;
  const y = (v) => m.top + ih - ((v - lo) / (hi - lo)) * ih;

  const count = opts.lines.reduce((n, l) => n + l.points.length, 0);
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": `${opts.title} chart, ${count} readings${opts.unit ? ", in " + opts.unit : ""}`,
    preserveAspectRatio: "xMidYMid meet",
  });
  const defs = el("defs");
  const clipId = `clip-${Math.random().toString(36).slice(2)}`;
  const clip = el("clipPath", { id: clipId });
  clip.append(el("rect", { x: m.left, y: m.top, width: iw, height: ih }));
  defs.append(clip);
  svg.append(defs);

  // Background bands (NEWS2 risk) and the normal range of a vital.
  for (const b of opts.bands ?? []) {
    const top = y(Math.min(b.to, hi));
    const bottom = y(Math.max(b.from, lo));
    if (bottom <= top) continue;
    svg.append(el("rect", { x: m.left, y: top, width: iw, height: bottom - top, class: `band ${b.cls}` }));
    if (b.label) {
      svg.append(el("text", { x: m.left + iw - 4, y: top + 11, class: "band-label", "text-anchor": "end" }, b.label));
    }
  }
  if (opts.normal) {
    const [nlo, nhi] = opts.normal;
    const top = y(Math.min(nhi, hi));
    const bottom = y(Math.max(nlo, lo));
    if (bottom > top) {
      svg.append(el("rect", { x: m.left, y: top, width: iw, height: bottom - top, class: "normal-range" }));
    }
  }

  const grid = el("g", { class: "grid", "aria-hidden": "true" });
  for (const v of yt) {
    if (v < lo - 1e-9 || v > hi + 1e-9) continue;
    grid.append(el("line", { x1: m.left, x2: m.left + iw, y1: y(v), y2: y(v) }));
    grid.append(el("text", { x: m.left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmtNumber(v)));
  }
  for (const tk of timeTicks(t0, t1)) {
    grid.append(el("line", { x1: x(tk.t), x2: x(tk.t), y1: m.top, y2: m.top + ih, class: "vgrid" }));
    grid.append(el("text", { x: x(tk.t), y: height - 10, "text-anchor": "middle", class: "tick" }, timeLabel(tk.t, tk.day)));
  }
  grid.append(el("line", { x1: m.left, x2: m.left + iw, y1: m.top + ih, y2: m.top + ih, class: "axis" }));
  if (opts.unit) {
    grid.append(el("text", { x: 4, y: m.top + 2, class: "unit", transform: `rotate(-90 4 ${m.top + 2})`, "text-anchor": "end", dy: "0.8em" }, opts.unit));
  }
  svg.append(grid);

  const plot = el("g", { "clip-path": `url(#${clipId})` });
  for (const line of opts.lines) {
    const pts = line.points.filter((p) => p.t >= t0 - HOUR && p.t <= t1 + HOUR);
    if (pts.length === 0) continue;
    let d = "";
    pts.forEach((p, i) => {
      const px = x(p.t).toFixed(1);
      const py = y(p.v).toFixed(1);
      if (i === 0) d += `M${px},${py}`;
      else if (opts.step) d += `H${px}V${py}`;
      else d += `L${px},${py}`;
    });
    if (opts.step) d += `H${x(Math.min(Date.now(), t1)).toFixed(1)}`;
    plot.append(el("path", { d, class: `series ${line.cls}` }));
    const dots = el("g", { class: `points ${line.cls}` });
    for (const p of pts) {
      const c = el("circle", { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: pts.length > 60 ? 2 : 3 });
      const when = new Date(p.t).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
      c.append(el("title", {}, `${line.name}: ${fmtNumber(p.v, opts.digits)}${opts.unit ? " " + opts.unit : ""} at ${when}`));
      dots.append(c);
    }
    plot.append(dots);
  }
  svg.append(plot);
  if (count === 0) {
    svg.append(el("text", { x: m.left + iw / 2, y: m.top + ih / 2, "text-anchor": "middle", class: "empty" }, "No readings in this period"));
  }
  return svg;
}
