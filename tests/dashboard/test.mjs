// The dashboard in a real browser (Debian's Chromium, driven by playwright-core).
//
// Run by tests/it/dashboard.rs, which starts a gateway, sends traffic through it and sets:
//   TOLLGATE_URL      the gateway's base URL
//   ADMIN_TOKEN       its admin token
//   EXPECT_MODEL      a model the traffic used (must appear in the breakdown)
//   EXPECT_REQUEST_ID a request id of that traffic (must appear in recent requests)
//   EXPECT_USER       an end user of that traffic (must appear when grouped by user)
//   SCREENSHOT_DIR    where to write the screenshots (optional)
// Exits non-zero on the first failed check.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const base = process.env.TOLLGATE_URL;
const token = process.env.ADMIN_TOKEN;
const shots = process.env.SCREENSHOT_DIR;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error") problems.push(`console: ${message.text()}`);
});
page.on("dialog", (dialog) => dialog.accept());

async function shot(name) {
  if (shots) await page.screenshot({ path: path.join(shots, name), fullPage: true });
}

try {
  // Signing in: a wrong token is refused, the right one opens the dashboard.
  await page.goto(`${base}/dashboard`);
  await page.fill("#token", "not-the-token");
  await page.click("#sign-in-form button");
  await page.waitForSelector("#sign-in-error:has-text('not accepted')");
  problems.length = 0; // the browser logs the refused token's 401, as it should
  await page.fill("#token", token);
  await page.click("#sign-in-form button");
  await page.waitForSelector("body[data-loaded='true']");

  // The traffic the test sent is there: totals, bars, the model, the request, the user.
  assert.notEqual(await page.textContent("#total-requests"), "0");
  assert.ok((await page.locator("svg.chart rect.bar").count()) > 0, "the chart has bars");
  const breakdown = await page.textContent("#breakdown tbody");
  assert.ok(breakdown.includes(process.env.EXPECT_MODEL), `breakdown: ${breakdown}`);
  await page.waitForSelector(`#requests tr[data-request-id='${process.env.EXPECT_REQUEST_ID}']`);
  await shot("dashboard.png");

  await page.selectOption("#dimension", "user");
  await page.waitForSelector(`#breakdown tbody td:has-text('${process.env.EXPECT_USER}')`);
  await page.selectOption("#measure", "requests");
  await page.waitForSelector("#chart-title:has-text('Requests per day by user')");

  // A key created here works at once; revoked here, it is refused.
  await page.fill("#key-name", "made-in-the-browser");
  await page.fill("#key-models", "gpt-4o-mini");
  await page.fill("#key-budget", "5");
  await page.click("#create-key button");
  await page.waitForSelector("#new-secret:not([hidden])");
  const secret = (await page.textContent("#new-secret-value")).trim();
  assert.match(secret, /^tg-[0-9A-Za-z]{20,}$/);
  const call = () => fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { "authorization": `Bearer ${secret}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  assert.equal((await call()).status, 200, "the new key works");
  const created = page.locator("#keys tbody tr", { hasText: "made-in-the-browser" });
  await created.waitFor();
  await shot("dashboard-keys.png");
  await created.locator("button.danger").click();
  await page.locator("#keys tbody tr.revoked", { hasText: "made-in-the-browser" }).waitFor();
  assert.equal((await call()).status, 401, "the revoked key is refused");

  assert.deepEqual(problems, [], "no script errors or CSP violations");
  console.log("dashboard: all checks passed");
} finally {
  await browser.close();
}
