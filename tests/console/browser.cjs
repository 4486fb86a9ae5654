// The console in a real browser: Debian's Chromium driven by playwright-core, against the real
// `kinetic up` that tests/console.rs started. Every page gets an axe-core check (no serious or
// critical violations) and a screenshot. Exits non-zero, saying what failed, on the first failure.
//
// axe-core is evaluated through the browser's debugging protocol, which the console's
// Content-Security-Policy (no inline script) does not govern; the pages run under that policy.
//
// Environment: KINETIC_ADMIN (admin listener URL), KINETIC_INGRESS (broker URL),
// TOKEN_VIEWER, TOKEN_OPERATOR, TOKEN_ADMIN, EVENT_ID (an event that is dead-lettered),
// SCREENSHOTS (a directory), CHROMIUM (the browser binary). Modules from NODE_PATH.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const admin = process.env.KINETIC_ADMIN;
const ingress = process.env.KINETIC_INGRESS;
const shots = process.env.SCREENSHOTS;
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const deadline = (ms) => Date.now() + ms;

function fail(message) {
  throw new Error(message);
}

async function check(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const run = await axe.run(document, { resultTypes: ["violations"] });
    return run.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 3) }));
  });
  const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (serious.length) {
    fail(`${name}: accessibility violations: ${JSON.stringify(serious, null, 1)}`);
  }
  console.log(`ok ${name} (axe: ${result.length} minor)`);
}

async function login(context, token) {
  const page = await context.newPage();
  await page.goto(`${admin}/console`);
  if (!/\/console\/login(\?.*)?$/.test(page.url())) fail(`not sent to the login form: ${page.url()}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${admin}/console`), page.click("button[type=submit]")]);
  return page;
}

async function post(url, event) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/cloudevents+json" },
    body: JSON.stringify({ specversion: "1.0", source: "/browser", ...event }),
  });
  if (response.status !== 202) fail(`POST ${url}: ${response.status} ${await response.text()}`);
}

async function until(what, ms, probe) {
  const end = deadline(ms);
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    // Log in (a wrong token first), as the operator.
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const first = await context.newPage();
    await first.goto(`${admin}/console/login`);
    await check(first, "login");
    await first.fill("#token", "kinetic_not-a-known-token");
    await first.click("button[type=submit]");
    await first.waitForURL(/expired=1/);
    if (!(await first.textContent("[role=alert]")).includes("does not know that token")) fail("no message for an unknown token");
    await first.close();
    const page = await login(context, process.env.TOKEN_OPERATOR);
    const headers = (await page.request.get(`${admin}/console`)).headers();
    if (!(headers["content-security-policy"] || "").includes("frame-ancestors 'none'") || headers["x-frame-options"] !== "DENY") fail(`the console may be framed: ${JSON.stringify(headers)}`);
    if (!(await page.textContent("header")).includes("(operator)")) fail("the header does not show the role");

    // The broker's rate moves after events are sent (the overview refreshes itself).
    const rate = () => page.textContent("#brokers [data-metric=ingress-rate]");
    for (let i = 0; i < 40; i++) await post(ingress, { id: `rate-${i}`, type: "com.example.ping" });
    const moved = await until("the broker's rate to move", 20000, async () => {
      const text = (await rate()).trim();
      return Number(text) > 0 ? text : null;
    });
    console.log(`ok broker rate ${moved}/s`);
    await check(page, "overview");

    // An event by id: which triggers match it, its failed attempts, the retry, its dead letter.
    const id = process.env.EVENT_ID;
    await page.goto(`${admin}/console/events?id=${encodeURIComponent(id)}`);
    const history = await page.textContent("main");
    for (const want of [
      "Accepted by broker default/default",
      "Trigger default/failing ✓ matches",
      "Trigger default/hello ✗ does not match: filter.attributes: `type` is `com.example.order`, the filter wants `com.example.hello`",
      "Attempt to default/failing: HTTP 500",
      "Retry 2 for default/failing scheduled at",
      "Dead-lettered for default/failing",
      "2 attempt(s) failed",
      "\"total\": 3",
      "Dead-lettered at",
    ]) {
      if (!history.includes(want)) fail(`the event's page lacks "${want}": ${history}`);
    }
    await check(page, "event");

    // Replay it: the dead letters page says so, and the event's page shows the replay delivered.
    await Promise.all([page.waitForURL(/replayed=1/), page.click("section.letter button[type=submit]")]);
    if (!(await page.textContent("[role=status]")).includes("1 replayed")) fail("no confirmation of the replay");
    await check(page, "dead-letters");
    await until("the replay to be delivered", 20000, async () => {
      await page.goto(`${admin}/console/events?id=${encodeURIComponent(id)}`);
      const text = await page.textContent("main");
      return text.includes("Replayed at") && text.includes("Attempt to default/failing: HTTP 200") ? text : null;
    });
    await check(page, "event-replayed");
    console.log("REPLAYED");

    // The function goes 0 → 1 → 0 on the graph.
    await page.goto(`${admin}/console`);
    await post(ingress, { id: "wake-1", type: "com.example.hello" });
    const ready = () => page.getAttribute("#services svg.instances", "data-ready");
    await until("the function to reach 1 ready instance on the graph", 30000, async () => (await ready() || "").split(",").some((v) => Number(v) >= 1));
    await check(page, "overview-scaled-up");
    const series = await until("the function to go back to 0 on the graph", 90000, async () => {
      const values = (await ready() || "").split(",").map(Number);
      const up = values.findIndex((v) => v >= 1);
      return up >= 0 && values[values.length - 1] === 0 && values.slice(0, up).includes(0) ? values : null;
    });
    console.log(`ok function graph ${series.join(",")}`);
    await check(page, "overview-scaled-down");
    await page.goto(`${admin}/console/events?id=wake-1`);
    const woke = await page.textContent("main");
    if (!/Served by function revision hello-00001, instance \d+ \(a cold start/.test(woke)) fail(`the woken event does not show its cold start: ${woke}`);
    await check(page, "event-cold-start");

    // Resources, with their YAML.
    await page.goto(`${admin}/console/resources`);
    if (!(await page.textContent("main")).includes("default/failing")) fail("resources page lacks the trigger");
    if (await page.$("#yaml")) fail("an operator is offered apply");
    await check(page, "resources");
    await context.close();

    // An admin applies pasted YAML, with the errors `kinetic apply` gives.
    const adminContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const adminPage = await login(adminContext, process.env.TOKEN_ADMIN);
    await adminPage.goto(`${admin}/console/resources`);
    await adminPage.fill("#yaml", "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: bad}\nspec:\n  broker: default\n");
    await adminPage.click("form.apply button[type=submit]");
    const refusedApply = await adminPage.textContent("[role=alert]");
    if (!refusedApply.includes("pasted YAML, document 1, Trigger default/bad: spec: missing field `subscriber` (hint: add the field)")) fail(`apply error: ${refusedApply}`);
    await check(adminPage, "resources-apply-error");
    await adminPage.fill("#yaml", "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: extra}\n");
    await adminPage.click("form.apply button[type=submit]");
    if (!(await adminPage.textContent("[role=status]")).includes("Broker default/extra created")) fail("the applied broker is not confirmed");
    await adminContext.close();

    // A viewer sees the dead letters but is refused replay.
    const viewerContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const viewer = await login(viewerContext, process.env.TOKEN_VIEWER);
    await viewer.goto(`${admin}/console/dead-letters`);
    if (await viewer.$("button:has-text('Replay')")) fail("a viewer is offered replay");
    const refused = await viewer.evaluate(async () => {
      const response = await fetch("/console/dead-letters/replay", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "all=1",
      });
      return { status: response.status, text: await response.text() };
    });
    if (refused.status !== 403 || !refused.text.includes("operator")) fail(`a viewer's replay was not refused: ${refused.status}`);
    await viewer.setContent(refused.text);
    await check(viewer, "refused");
    await viewerContext.close();

    // Without JavaScript the read-only pages work.
    const plain = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
    const nojs = await login(plain, process.env.TOKEN_VIEWER);
    for (const [url, want] of [["/console", "Brokers"], ["/console/dead-letters", "default/failing"], [`/console/events?id=${encodeURIComponent(id)}`, "Dead-lettered at"], ["/console/resources", "Trigger"]]) {
      await nojs.goto(`${admin}${url}`);
      if (!(await nojs.textContent("main")).includes(want)) fail(`${url} without JavaScript lacks "${want}"`);
    }
    await nojs.screenshot({ path: path.join(shots, "overview-no-javascript.png"), fullPage: true });
    console.log("ok without JavaScript");
    await plain.close();
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(`FAILED: ${error.message}`);
  process.exit(1);
});
