// Vigil care-team dashboard: worklist, patient page, alerts, live updates.
// Plain ES modules; every DOM node is built with textContent (never innerHTML) so data
// from the server cannot inject markup.

import { timeChart, fmtNumber } from "/assets/charts.js";

const main = document.getElementById("main");
const liveEl = document.getElementById("live");
const liveText = document.getElementById("live-text");
const statusEl = document.getElementById("status");
const userEl = document.getElementById("user-name");

// ---------- helpers ----------

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      credentials: "same-origin",
      ...options,
      headers: { "X-Requested-With": "vigil", Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
    });
  } catch {
    throw new ApiError(0, "Cannot reach the Vigil server. Check your connection; the page retries on the next update.");
  }
  if (resp.status === 401) {
    sessionExpired();
    throw new ApiError(401, "Your session has expired.");
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, body?.error ?? `The server answered ${resp.status}.`);
  }
  return body;
}

function sessionExpired() {
  // The server serves the login page at any path without a session.
  location.replace("/?expired=1");
}

function announce(msg) {
  statusEl.textContent = "";
  // A fresh text node makes screen readers announce repeated messages too.
  setTimeout(() => (statusEl.textContent = msg), 30);
  statusEl.classList.add("show");
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => statusEl.classList.remove("show"), 4000);
}

function rel(iso) {
  if (!iso) return "";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function abs(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso ?? "";
  return new Date(t).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function timeEl(iso, relative = true) {
  return h("time", { datetime: iso, title: abs(iso), "data-rel": relative }, relative ? rel(iso) : abs(iso));
}

function age(birth) {
  if (!birth) return null;
  const m = /^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?/.exec(birth);
  if (!m) return null;
  const now = new Date();
  let a = now.getFullYear() - Number(m[1]);
  const mo = Number(m[2] ?? 1) - 1;
  const d = Number(m[3] ?? 1);
  if (now.getMonth() < mo || (now.getMonth() === mo && now.getDate() < d)) a -= 1;
  return a;
}

const GENDER = { male: "M", female: "F", other: "Other", unknown: "Unknown" };

function demographics(row) {
  const parts = [];
  const a = age(row.birth_date);
  if (a !== null) parts.push(`${a} y`);
  if (row.gender) parts.push(GENDER[row.gender] ?? row.gender);
  return parts.join(" · ") || "—";
}

const BAND_LABEL = { high: "High", medium: "Medium", "low-medium": "Low–medium", low: "Low" };

function bandBadge(score, band, { large = false } = {}) {
  if (score === undefined || score === null) {
    return h("span", { class: `badge band-none${large ? " large" : ""}` }, "No score");
  }
  const label = BAND_LABEL[band] ?? band;
  return h(
    "span",
    { class: `badge band-${band}${large ? " large" : ""}`, "aria-label": `NEWS2 ${score}, ${label} risk` },
    h("strong", {}, String(score)),
    " ",
    label,
  );
}

const SHORT = {
  "heart-rate": "HR",
  "respiratory-rate": "RR",
  spo2: "SpO₂",
  "blood-pressure": "BP",
  temperature: "Temp",
  weight: "Wt",
  glucose: "Gluc",
  "oxygen-flow": "O₂",
  consciousness: "ACVPU",
};
const MISSING_SHORT = { "respiratory-rate": "RR", "heart-rate": "HR", spo2: "SpO₂", "blood-pressure": "BP", temperature: "temperature", consciousness: "consciousness", "oxygen-flow": "supplemental O₂" };

function partialNote(risk) {
  if (!risk?.partial) return null;
  const miss = (risk.missing ?? []).map((m) => MISSING_SHORT[m] ?? m).join(", ");
  return h("div", { class: "partial" }, `partial — missing ${miss || "parameters"}`);
}

// Decimals shown per vital: temperature keeps its tenth even when whole (37.0 °C).
const DIGITS = { temperature: 1, "heart-rate": 0, "respiratory-rate": 0, spo2: 0, "blood-pressure": 0 };

function fmtVital(vital, v, v2) {
  const d = DIGITS[vital];
  return v2 !== null && v2 !== undefined ? `${fmtNumber(v, d)}/${fmtNumber(v2, d)}` : fmtNumber(v, d);
}

function vitalValue(v) {
  return fmtVital(v.vital, v.value, v.value2);
}

function link(href, ...children) {
  return h("a", { href, "data-link": true }, ...children);
}

// ---------- acknowledge dialog ----------

const dialog = document.getElementById("ack-dialog");
const ackForm = document.getElementById("ack-form");
const ackSummary = document.getElementById("ack-summary");
const ackNote = document.getElementById("ack-note");
const ackError = document.getElementById("ack-error");
const ackSubmit = document.getElementById("ack-submit");
let ackAlert = null;
let ackReturnFocus = null;

function openAck(alert) {
  ackAlert = alert;
  ackReturnFocus = document.activeElement;
  ackSummary.textContent = `${alert.patient_name}: ${alert.reason} (NEWS2 ${alert.score}, ${BAND_LABEL[alert.band] ?? alert.band}), opened ${rel(alert.opened_at)}.`;
  ackNote.value = "";
  ackError.hidden = true;
  ackSubmit.disabled = false;
  dialog.showModal();
  ackNote.focus();
}

document.getElementById("ack-cancel").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => ackReturnFocus?.focus?.());
ackForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!ackAlert) return;
  ackSubmit.disabled = true;
  try {
    const note = ackNote.value.trim();
    const a = await api(`/api/alerts/${encodeURIComponent(ackAlert.id)}/ack`, {
      method: "POST",
      body: JSON.stringify(note ? { note } : {}),
    });
    dialog.close();
    announce(`Alert for ${a.patient_name} acknowledged.`);
    refresh();
  } catch (e) {
    ackError.textContent = e.status === 409 ? `Already handled: ${e.message}` : e.message;
    ackError.hidden = false;
    ackSubmit.disabled = false;
    if (e.status === 409 || e.status === 404) refresh();
  }
});

function ackButton(alert, label = "Acknowledge") {
  return h(
    "button",
    { type: "button", class: "btn small primary", onclick: () => openAck(alert), "aria-label": `Acknowledge alert for ${alert.patient_name}` },
    label,
  );
}

// ---------- worklist ----------

let view = null; // { kind: "worklist" } | { kind: "patient", id, range }

function errorBox(e) {
  return h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Could not load data. "), e.message);
}

async function renderWorklist() {
  const [wl, al] = await Promise.all([api("/api/worklist"), api("/api/alerts?status=open")]);
  if (view?.kind !== "worklist") return;
  document.title = "Worklist · Vigil";
  const patients = wl.patients;
  const table = h(
    "table",
    { class: "worklist", "aria-describedby": "worklist-caption" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Patient"),
        h("th", { scope: "col" }, "NEWS2"),
        h("th", { scope: "col" }, "Latest vitals"),
        h("th", { scope: "col", class: "num" }, "Open alerts"),
        h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Flag")),
      ),
    ),
    h(
      "tbody",
      {},
      patients.length === 0
        ? h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No patients on your teams' worklists."))
        : patients.map((p) =>
            h(
              "tr",
              { "data-patient-id": p.patient_id, class: p.risk ? `risk-${p.risk.band}` : "risk-none" },
              h("td", {}, h("div", { class: "pname" }, link(`/patients/${encodeURIComponent(p.patient_id)}`, p.name)), h("div", { class: "muted" }, demographics(p))),
              h("td", { class: "score" }, bandBadge(p.risk?.score, p.risk?.band), partialNote(p.risk), p.risk ? h("div", { class: "muted small" }, timeEl(p.risk.time)) : null),
              h(
                "td",
                {},
                h(
                  "ul",
                  { class: "vitals" },
                  p.latest.map((v) =>
                    h(
                      "li",
                      { title: `${v.label}, ${abs(v.time)}` },
                      h("span", { class: "vlabel" }, SHORT[v.vital] ?? v.label),
                      " ",
                      h("span", { class: "vvalue" }, vitalValue(v)),
                      " ",
                      h("span", { class: "vunit" }, v.unit),
                      " ",
                      h("span", { class: "vtime" }, rel(v.time)),
                    ),
                  ),
                ),
              ),
              h("td", { class: "num" }, p.open_alerts > 0 ? h("span", { class: "count alert", "aria-label": `${p.open_alerts} open alerts` }, String(p.open_alerts)) : h("span", { class: "muted" }, "0")),
              h("td", {}, p.flag_active ? h("span", { class: "flag", title: "Active clinical flag", role: "img", "aria-label": "Active clinical flag" }, "⚑") : null),
            ),
          ),
    ),
  );
  const alertsPanel = h(
    "section",
    { class: "panel alerts-panel", "aria-labelledby": "alerts-title" },
    h("h2", { id: "alerts-title" }, "Open alerts ", h("span", { class: "count" + (al.alerts.length ? " alert" : "") }, String(al.alerts.length))),
    al.alerts.length === 0
      ? h("p", { class: "muted empty" }, "No open alerts.")
      : h(
          "ul",
          { class: "alert-list" },
          al.alerts.map((a) =>
            h(
              "li",
              { class: `alert-item band-edge-${a.band}`, "data-alert-id": a.id },
              h("div", { class: "alert-head" }, link(`/patients/${encodeURIComponent(a.patient_id)}`, a.patient_name), bandBadge(a.score, a.band)),
              h("div", { class: "alert-reason" }, a.reason),
              h("div", { class: "alert-foot" }, h("span", { class: "muted small" }, "Opened ", timeEl(a.opened_at)), ackButton(a)),
            ),
          ),
        ),
  );
  main.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Worklist"),
      h("p", { id: "worklist-caption", class: "muted" }, `${patients.length} patient${patients.length === 1 ? "" : "s"}, highest risk first · updated ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`),
    ),
    h("div", { class: "worklist-layout" }, h("section", { class: "panel table-panel", "aria-label": "Patients" }, table), alertsPanel),
  );
}

// ---------- patient page ----------

const RANGES = [
  { key: "24h", label: "24 h", ms: 24 * 3600e3 },
  { key: "72h", label: "3 days", ms: 72 * 3600e3 },
  { key: "7d", label: "7 days", ms: 7 * 24 * 3600e3 },
];

// Normal ranges: the readings that score 0 in NEWS2 (RCP 2017), where NEWS2 scores them.
const NORMAL = {
  "heart-rate": [51, 90],
  "respiratory-rate": [12, 20],
  spo2: [96, 100],
  temperature: [36.1, 38.0],
  "blood-pressure": [111, 219],
};

const VITAL_ORDER = ["respiratory-rate", "spo2", "blood-pressure", "heart-rate", "temperature", "oxygen-flow", "glucose", "weight"];

function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status[0].toUpperCase() + status.slice(1));
}

async function renderPatient() {
  const { id } = view;
  const range = RANGES.find((r) => r.key === view.range) ?? RANGES[1];
  const wallNow = Date.now();
  let t0 = wallNow - range.ms;
  let p;
  try {
    p = await api(`/api/patients/${encodeURIComponent(id)}?since=${Math.floor(t0)}`);
  } catch (e) {
    if (e.status === 404) {
      if (view?.kind !== "patient" || view.id !== id) return;
      document.title = "Patient not found · Vigil";
      main.replaceChildren(
        h("p", {}, link("/", "← Worklist")),
        h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Patient not found. "), "The patient does not exist or is not on your teams' worklists."),
      );
      return;
    }
    throw e;
  }
  if (view?.kind !== "patient" || view.id !== id) return;
  // Devices (and the demo's simulated clock) can be ahead of this browser's clock: end
  // the time axis at the newest data when it is later than now.
  const newest = Math.max(
    0,
    ...p.series.flatMap((vs) => vs.points.map((pt) => Date.parse(pt.t))),
    ...p.scores.map((sc) => Date.parse(sc.t)),
  );
  const now = Math.max(wallNow, Number.isFinite(newest) ? newest : 0);
  t0 = now - range.ms;
  const s = p.summary;
  document.title = `${s.name} · Vigil`;

  const header = h(
    "section",
    { class: "panel patient-head", "aria-labelledby": "patient-name" },
    h(
      "div",
      { class: "who" },
      h("h1", { id: "patient-name" }, s.name, s.flag_active ? h("span", { class: "flag", title: "Active clinical flag", role: "img", "aria-label": "Active clinical flag" }, " ⚑") : null),
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, "Age"), h("dd", {}, age(s.birth_date) ?? "—")),
        h("div", {}, h("dt", {}, "Sex"), h("dd", {}, s.gender ? (GENDER[s.gender] ?? s.gender) : "—")),
        h("div", {}, h("dt", {}, "Born"), h("dd", {}, s.birth_date ?? "—")),
        h("div", {}, h("dt", {}, "Patient ID"), h("dd", {}, s.patient_id)),
        h("div", {}, h("dt", {}, "Open alerts"), h("dd", {}, String(s.open_alerts))),
      ),
    ),
    h(
      "div",
      { class: "current" },
      h("div", { class: "muted small" }, "Current NEWS2"),
      bandBadge(s.risk?.score, s.risk?.band, { large: true }),
      partialNote(s.risk),
      s.risk ? h("div", { class: "muted small" }, "scored ", timeEl(s.risk.time)) : null,
    ),
  );

  const rangeBar = h(
    "div",
    { class: "range", role: "group", "aria-label": "Time range" },
    RANGES.map((r) =>
      h(
        "button",
        {
          type: "button",
          class: "btn small" + (r.key === range.key ? " active" : ""),
          "aria-pressed": r.key === range.key ? "true" : "false",
          onclick: () => {
            view.range = r.key;
            refresh();
          },
        },
        r.label,
      ),
    ),
  );

  const alertRows = p.alerts
    .slice()
    .sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at))
    .map((a) =>
      h(
        "tr",
        { "data-alert-id": a.id },
        h("td", {}, timeEl(a.opened_at, false)),
        h("td", {}, bandBadge(a.score, a.band)),
        h("td", {}, a.reason),
        h("td", {}, statusBadge(a.status)),
        h(
          "td",
          {},
          a.acknowledged_by
            ? h("div", {}, `${a.acknowledged_by}, `, timeEl(a.acknowledged_at, false), a.note ? h("div", { class: "note" }, `“${a.note}”`) : null)
            : a.resolved_at
              ? h("div", { class: "muted" }, "Resolved ", timeEl(a.resolved_at, false))
              : h("span", { class: "muted" }, "—"),
        ),
        h("td", { class: "actions" }, a.status === "open" ? ackButton(a) : null),
      ),
    );
  const alertsSection = h(
    "section",
    { class: "panel", "aria-labelledby": "alert-history" },
    h("h2", { id: "alert-history" }, "Alerts"),
    alertRows.length === 0
      ? h("p", { class: "muted empty" }, "No alerts in this period.")
      : h(
          "table",
          { class: "alerts-table" },
          h("thead", {}, h("tr", {}, ["Opened", "NEWS2", "Reason", "Status", "Acknowledged", ""].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, alertRows),
        ),
  );

  const scorePoints = p.scores.map((sp) => ({ t: Date.parse(sp.t), v: sp.score }));
  const maxScore = Math.max(10, ...scorePoints.map((q) => q.v + 1));
  const news = h(
    "figure",
    { class: "panel chart-card wide", "data-vital": "news2" },
    h("figcaption", {}, h("span", { class: "ctitle" }, "NEWS2 score"), h("span", { class: "legend" }, h("i", { class: "sw band-low" }), "0–4 low ", h("i", { class: "sw band-medium" }), "5–6 medium ", h("i", { class: "sw band-high" }), "7+ high")),
    timeChart({
      title: "NEWS2 score",
      unit: "score",
      t0,
      t1: now,
      yMin: 0,
      yMax: maxScore,
      step: true,
      width: 1300,
      height: 260,
      bands: [
        { from: 0, to: 4.5, cls: "bg-low" },
        { from: 4.5, to: 6.5, cls: "bg-medium" },
        { from: 6.5, to: maxScore, cls: "bg-high" },
      ],
      lines: [{ name: "NEWS2", cls: "s-score", points: scorePoints }],
    }),
  );

  const series = p.series.slice().sort((a, b) => {
    const ia = VITAL_ORDER.indexOf(a.vital);
    const ib = VITAL_ORDER.indexOf(b.vital);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });
  const charts = series.map((vs) => {
    const pts = vs.points.map((q) => ({ t: Date.parse(q.t), v: q.v, v2: q.v2 }));
    const bp = vs.vital === "blood-pressure";
    const lines = bp
      ? [
          { name: "Systolic", cls: "s-sys", points: pts },
          { name: "Diastolic", cls: "s-dia", points: pts.filter((q) => q.v2 !== null && q.v2 !== undefined).map((q) => ({ t: q.t, v: q.v2 })) },
        ]
      : [{ name: vs.label, cls: "s-main", points: pts }];
    const last = vs.points[vs.points.length - 1];
    return h(
      "figure",
      { class: "panel chart-card", "data-vital": vs.vital },
      h(
        "figcaption",
        {},
        h("span", { class: "ctitle" }, vs.label),
        last ? h("span", { class: "clatest" }, h("strong", {}, fmtVital(vs.vital, last.v, last.v2)), ` ${vs.unit} · `, timeEl(last.t)) : null,
        bp ? h("span", { class: "legend" }, h("i", { class: "sw s-sys" }), "systolic ", h("i", { class: "sw s-dia" }), "diastolic") : null,
      ),
      timeChart({ title: vs.label, unit: vs.unit, t0, t1: now, lines, normal: NORMAL[vs.vital], normalInDomain: !bp, digits: DIGITS[vs.vital] }),
    );
  });

  main.replaceChildren(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, link("/", "← Worklist")),
    header,
    h("div", { class: "section-head" }, h("h2", {}, "Trends"), rangeBar),
    h("div", { class: "charts" }, news, charts.length ? charts : h("p", { class: "muted" }, "No vital-sign readings in this period.")),
    alertsSection,
  );
}

// ---------- mapping debugger ----------

function parseJsonField(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `${what} is not valid JSON: ${e.message}`);
  }
}

function mappingErrorList(errors) {
  return h(
    "ul",
    { class: "errors" },
    errors.map((e) => {
      let where = "";
      if (e.line !== undefined) where = ` (${e.template} templates, ${e.path}, line ${e.line}:${e.column})`;
      else if (e.location?.path) where = ` (${e.location.path}${e.location.expression ? `: ${e.location.expression}` : ""})`;
      return h("li", {}, h("strong", {}, e.kind ?? "Template error"), ": ", e.message, where);
    }),
  );
}

function renderMappingResult(out, target) {
  const parts = [];
  if (out.templateErrors) {
    parts.push(h("section", {}, h("h3", {}, "Template errors"), mappingErrorList(out.templateErrors)));
  }
  for (const r of out.results ?? []) {
    const ms = r.measurements ?? [];
    const rows = ms.map((m) =>
      h(
        "tr",
        {},
        h("td", {}, m.type),
        h("td", {}, m.occurrenceTime),
        h("td", {}, m.deviceId),
        h("td", {}, m.patientId ?? "—"),
        h("td", {}, (m.properties ?? []).map((p) => `${p.name} = ${p.value}`).join(", ")),
      ),
    );
    parts.push(
      h(
        "section",
        { class: "mapping-payload" },
        h("h3", {}, `${r.payload}: ${ms.length} measurement(s)`),
        ms.length
          ? h(
              "table",
              { class: "measurements" },
              h("thead", {}, h("tr", {}, ["Type", "Time", "Device", "Patient", "Values"].map((c) => h("th", { scope: "col" }, c)))),
              h("tbody", {}, rows),
            )
          : null,
        r.errors?.length ? mappingErrorList(r.errors) : null,
        r.observations
          ? h(
              "details",
              {},
              h("summary", {}, `${r.observations.length} Observation(s) that would be written`),
              h("pre", {}, JSON.stringify(r.observations, null, 2)),
            )
          : null,
      ),
    );
  }
  if (out.warnings?.length) {
    parts.push(h("section", {}, h("h3", {}, "Warnings"), h("ul", {}, out.warnings.map((w) => h("li", {}, w)))));
  }
  target.replaceChildren(
    h("p", { class: out.ok ? "ok" : "error", role: "status" }, out.ok ? "No errors." : "There were errors."),
    ...parts,
  );
}

function renderMapping() {
  document.title = "Mapping debugger · Vigil";
  const payload = h("textarea", { id: "mapping-payload", rows: 10, spellcheck: "false", required: true, placeholder: '{"deviceid": "...", "heartrate": 78, ...}' });
  const device = h("textarea", { id: "mapping-device", rows: 8, spellcheck: "false" });
  const fhir = h("textarea", { id: "mapping-fhir", rows: 8, spellcheck: "false" });
  const result = h("div", { id: "mapping-result", class: "mapping-result", "aria-live": "polite" });
  const run = h("button", { type: "submit", class: "btn primary", id: "mapping-run" }, "Run test");
  const form = h(
    "form",
    { class: "mapping-form" },
    h("label", { for: "mapping-payload" }, "Device payload (JSON; a message body or an envelope with Body)"),
    payload,
    h(
      "details",
      {},
      h("summary", {}, "Templates (optional: the ones in force are used otherwise)"),
      h("label", { for: "mapping-device" }, "Device mapping (devicecontent.json)"),
      device,
      h("label", { for: "mapping-fhir" }, "FHIR mapping (fhirmapping.json)"),
      fhir,
    ),
    h("div", {}, run),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    run.disabled = true;
    try {
      const request = { payloads: [parseJsonField(payload.value, "The payload")] };
      // Template texts go as text so error positions refer to what was pasted.
      if (device.value.trim()) request.deviceTemplates = device.value;
      if (fhir.value.trim()) request.fhirTemplates = fhir.value;
      const out = await api("/api/templates/test", { method: "POST", body: JSON.stringify(request) });
      renderMappingResult(out, result);
    } catch (e) {
      if (e.status !== 401) result.replaceChildren(errorBox(e));
    } finally {
      run.disabled = false;
    }
  });
  main.replaceChildren(
    h("h1", {}, "Mapping debugger"),
    h("p", { class: "muted" }, "Runs a device payload through the MedTech templates and shows the measurements and Observations it would produce. Nothing is stored."),
    form,
    result,
  );
}

// ---------- routing, refresh, live updates ----------

function route() {
  const m = /^\/patients\/([^/]+)\/?$/.exec(location.pathname);
  const prevRange = view?.range;
  view = m
    ? { kind: "patient", id: decodeURIComponent(m[1]), range: prevRange ?? "72h" }
    : /^\/mapping\/?$/.test(location.pathname)
      ? { kind: "mapping" }
      : { kind: "worklist" };
  main.replaceChildren(h("p", { class: "loading", role: "status" }, "Loading…"));
  refresh({ focus: true });
}

let refreshing = null;
let again = false;

async function refresh({ focus = false } = {}) {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    try {
      // Keep focus and scroll where they were: a live re-render must not move the user.
      const scroll = window.scrollY;
      const activeKey = document.activeElement?.closest?.("[data-alert-id],[data-patient-id]")?.dataset;
      if (view.kind === "mapping") {
        // The form holds what the user typed: built once, never re-rendered by updates.
        if (focus) renderMapping();
      } else if (view.kind === "worklist") await renderWorklist();
      else await renderPatient();
      if (focus) main.focus({ preventScroll: true });
      else window.scrollTo(0, scroll);
      if (activeKey && !focus && !dialog.open) {
        const sel = activeKey.alertId ? `[data-alert-id="${CSS.escape(activeKey.alertId)}"]` : `[data-patient-id="${CSS.escape(activeKey.patientId)}"]`;
        main.querySelector(sel)?.querySelector("a,button")?.focus({ preventScroll: true });
      }
    } catch (e) {
      if (e.status !== 401) main.replaceChildren(errorBox(e));
    }
  })();
  await refreshing;
  refreshing = null;
  if (again) {
    again = false;
    refresh();
  }
}

let debounce = null;
function scheduleRefresh() {
  clearTimeout(debounce);
  debounce = setTimeout(() => refresh(), 400);
}

function setLive(state, text) {
  liveEl.className = `live ${state}`;
  liveText.textContent = text;
}

function connectEvents() {
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => setLive("on", "Live"));
  es.addEventListener("update", (ev) => {
    let u;
    try {
      u = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (view.kind === "mapping") return;
    if (view.kind === "worklist" || u.kind === "resync" || u.patient_id === view.id) scheduleRefresh();
  });
  es.addEventListener("error", async () => {
    setLive("off", "Reconnecting…");
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. 401): find out whether the session is gone.
      try {
        await api("/api/me");
        setTimeout(connectEvents, 5000);
      } catch (e) {
        if (e.status !== 401) setTimeout(connectEvents, 5000);
      }
    }
  });
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest?.("a[data-link]");
  if (!a || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  if (a.getAttribute("href") !== location.pathname) history.pushState({}, "", a.getAttribute("href"));
  route();
});
window.addEventListener("popstate", route);

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("/api/logout", { method: "POST" });
  } finally {
    location.replace("/");
  }
});

// Relative times ("5 min ago") go stale; refresh them every minute.
setInterval(() => {
  for (const t of main.querySelectorAll("time[data-rel]")) t.textContent = rel(t.getAttribute("datetime"));
}, 60000);

(async () => {
  try {
    const me = await api("/api/me");
    userEl.textContent = me.user.display_name;
    userEl.title = `${me.user.username} · ${me.user.role === "admin" ? "Administrator" : "Care team: " + (me.user.teams.join(", ") || "none")}`;
  } catch {
    return;
  }
  route();
  connectEvents();
})();
