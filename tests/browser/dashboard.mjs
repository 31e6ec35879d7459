// Real-browser test of the Vigil dashboard: Debian's chromium driven by playwright-core
// (no browser is ever downloaded). Run by crates/dashboard/tests/dashboard.rs, which
// starts the server with test data; by hand:
//   VIGIL_URL=http://127.0.0.1:8080 VIGIL_USERNAME=u VIGIL_PASSWORD=p \
//   VIGIL_SCREENSHOT=/tmp/patient.png node tests/browser/dashboard.mjs
// Optional: VIGIL_SCREENSHOT_WORKLIST=/tmp/worklist.png, VIGIL_CHROMIUM=/usr/bin/chromium.

import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`error: environment variable ${name} is required`);
    process.exit(2);
  }
  return v;
};
const base = env("VIGIL_URL").replace(/\/$/, "");
const username = env("VIGIL_USERNAME");
const password = env("VIGIL_PASSWORD");
const screenshot = env("VIGIL_SCREENSHOT");
const worklistShot = process.env.VIGIL_SCREENSHOT_WORKLIST;
const executablePath = process.env.VIGIL_CHROMIUM ?? "/usr/bin/chromium";

const BAND_RANK = { high: 4, medium: 3, "low-medium": 2, low: 1, none: 0 };

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}
function step(msg) {
  console.log(`ok - ${msg}`);
}

const userDataDir = mkdtempSync(join(tmpdir(), "vigil-chromium-"));
let context;
let page;
const jsErrors = [];
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 900 },
    timezoneId: "UTC",
    locale: "en-GB",
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  page.on("pageerror", (e) => jsErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") jsErrors.push(`console error: ${m.text()}`);
  });

  // 1. Without a session the server serves the login page.
  await page.goto(`${base}/`);
  await page.getByLabel("Username").waitFor();
  step("login page shown without a session");

  // A wrong password gives a clear error and no session.
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(`${password}-wrong`);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong username or password" }).waitFor();
  step("wrong password rejected with a message");
  // That 401 is expected; do not count the browser's console line about it.
  jsErrors.length = 0;

  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();

  // 2. Worklist, sorted by risk.
  await page.locator("table.worklist tbody tr[data-patient-id]").first().waitFor();
  const rows = await page.$$eval("table.worklist tbody tr[data-patient-id]", (trs) =>
    trs.map((tr) => ({
      id: tr.dataset.patientId,
      band: (tr.className.match(/risk-([a-z-]+)/) ?? [])[1] ?? "none",
      score: Number(tr.querySelector(".badge strong")?.textContent ?? "-1"),
      name: tr.querySelector(".pname")?.textContent ?? "",
    })),
  );
  check(rows.length >= 3, `worklist has patients (got ${rows.length})`);
  for (let i = 1; i < rows.length; i++) {
    const a = rows[i - 1];
    const b = rows[i];
    const ok = BAND_RANK[a.band] > BAND_RANK[b.band] || (BAND_RANK[a.band] === BAND_RANK[b.band] && a.score >= b.score);
    check(ok, `worklist sorted by risk: ${a.name} (${a.band} ${a.score}) before ${b.name} (${b.band} ${b.score})`);
  }
  check(rows[0].band === "high", `highest-risk patient first (got ${rows[0].band})`);
  step(`worklist shows ${rows.length} patients sorted by risk: ${rows.map((r) => `${r.name} ${r.band}`).join(", ")}`);

  await page.locator("#live.on").waitFor();
  step("live indicator on (SSE connected)");
  const openAlerts = await page.locator(".alerts-panel .alert-item").count();
  check(openAlerts >= 1, "alerts panel lists open alerts");
  step(`alerts panel lists ${openAlerts} open alerts`);
  if (worklistShot) {
    await page.screenshot({ path: worklistShot, fullPage: true });
  }

  // Live update: another client acknowledges the last open alert through the API; this
  // page learns of it over SSE and re-renders without any user action.
  const items = page.locator(".alerts-panel .alert-item");
  const otherId = await items.last().getAttribute("data-alert-id");
  const resp = await context.request.post(`${base}/api/alerts/${encodeURIComponent(otherId)}/ack`, {
    headers: { "X-Requested-With": "vigil" },
    data: { note: "acknowledged by another client" },
  });
  check(resp.status() === 200, `API acknowledgement answered ${resp.status()}`);
  await page.locator(`.alerts-panel .alert-item[data-alert-id="${otherId}"]`).waitFor({ state: "detached" });
  check((await items.count()) === openAlerts - 1, "alerts panel updated live");
  step(`live update: alert ${otherId} acknowledged elsewhere disappeared from the panel`);

  // 3. Open the high-risk patient.
  const target = rows[0];
  await page.locator(`tr[data-patient-id="${target.id}"] .pname a`).click();
  await page.waitForURL(`**/patients/${encodeURIComponent(target.id)}`);
  await page.locator("#patient-name").waitFor();
  const heading = await page.locator("#patient-name").textContent();
  check(heading.includes(target.name), `patient page heading names ${target.name}`);
  step(`patient page for ${target.name}`);

  // 4. Charts: SVGs with data points, BP with two series, NEWS2 with band backgrounds.
  const charts = await page.$$eval("figure.chart-card", (figs) =>
    figs.map((f) => ({
      vital: f.dataset.vital,
      svg: !!f.querySelector("svg.chart"),
      points: f.querySelectorAll("svg.chart circle").length,
      series: f.querySelectorAll("svg.chart path.series").length,
      bands: f.querySelectorAll("svg.chart rect.band").length,
    })),
  );
  check(charts.length >= 4, `several charts drawn (got ${charts.length})`);
  for (const c of charts) check(c.svg && c.points > 0, `chart ${c.vital} has an SVG with points`);
  const bp = charts.find((c) => c.vital === "blood-pressure");
  check(bp && bp.series === 2, "blood-pressure chart shows systolic and diastolic");
  const news = charts.find((c) => c.vital === "news2");
  check(news && news.bands === 3, "NEWS2 chart has band backgrounds");
  step(`charts: ${charts.map((c) => `${c.vital} (${c.points} points)`).join(", ")}`);

  // 5. Acknowledge an open alert with a note.
  const openRow = page.locator("table.alerts-table tbody tr", { has: page.getByRole("button", { name: /Acknowledge/ }) }).first();
  const alertId = await openRow.getAttribute("data-alert-id");
  check(alertId, "an open alert with an Acknowledge button");
  await openRow.getByRole("button", { name: /Acknowledge/ }).click();
  const dialog = page.getByRole("dialog", { name: "Acknowledge alert" });
  await dialog.waitFor();
  await dialog.getByLabel(/Note/).fill("Phoned patient; repeat observations in 1 h");
  await dialog.getByRole("button", { name: "Acknowledge" }).click();
  await dialog.waitFor({ state: "hidden" });
  const acked = page.locator(`tr[data-alert-id="${alertId}"]`);
  await acked.locator(".status-acknowledged").waitFor();
  const ackText = await acked.innerText();
  check(ackText.includes("Phoned patient"), "acknowledgement note shown");
  check((await acked.getByRole("button").count()) === 0, "acknowledged alert has no button");
  step(`alert ${alertId} acknowledged: ${ackText.replace(/\s+/g, " ").trim()}`);

  await page.mouse.move(0, 0);
  // Top of the page, so the sticky header is where it belongs in the full-page shot.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(300); // let the toast finish sliding in
  await page.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot saved to ${screenshot}`);

  // 6. The mapping debugger: paste a payload, run it, see the measurements.
  await page.getByRole("link", { name: "Mapping debugger" }).click();
  await page.getByRole("heading", { name: "Mapping debugger" }).waitFor();
  await page.getByLabel(/Device payload/).fill("{not json");
  await page.getByRole("button", { name: "Run test" }).click();
  await page.locator("#mapping-result .error-box").waitFor();
  step("mapping debugger rejects a payload that is not JSON");
  await page.getByLabel(/Device payload/).fill(JSON.stringify({ deviceid: "cuff-1", heartrate: 83 }));
  await page.getByRole("button", { name: "Run test" }).click();
  const measured = page.locator("#mapping-result table.measurements tbody tr");
  await measured.first().waitFor();
  const rowText = await measured.first().innerText();
  check(rowText.includes("heartrate") && rowText.includes("hr = 83"), `measurement row shows the pasted value: ${rowText}`);
  const shown = await page.locator("#mapping-result").innerText();
  check(shown.includes("1 Observation(s) that would be written"), "observations summarised");
  check(shown.includes("has no FHIR template"), "mapping warnings shown");
  step(`mapping debugger: ${rowText.replace(/\s+/g, " ").trim()}`);
  if (process.env.VIGIL_SCREENSHOT_MAPPING) {
    await page.screenshot({ path: process.env.VIGIL_SCREENSHOT_MAPPING, fullPage: true });
  }

  // 7. An expired session sends the user back to the login page with a notice.
  await context.clearCookies();
  await page.getByRole("button", { name: "Run test" }).click();
  await page.getByText("Your session has expired").waitFor();
  await page.getByLabel("Username").waitFor();
  step("expired session returns to the login page with a notice");
  if (process.env.VIGIL_SCREENSHOT_LOGIN) {
    await page.screenshot({ path: process.env.VIGIL_SCREENSHOT_LOGIN });
  }
  // The 401 that revealed the expiry (and the event stream's) are expected console lines.
  const unexpected = jsErrors.filter((e) => !/401/.test(e));
  jsErrors.length = 0;
  jsErrors.push(...unexpected);

  check(jsErrors.length === 0, `no JavaScript errors:\n${jsErrors.join("\n")}`);
  step("no JavaScript or CSP errors");
  console.log("browser test passed");
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  if (jsErrors.length) console.error(jsErrors.join("\n"));
  if (page) {
    await page.screenshot({ path: `${screenshot}.failure.png`, fullPage: true }).catch(() => {});
    console.error(`failure screenshot: ${screenshot}.failure.png`);
  }
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
