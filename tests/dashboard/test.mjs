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

const admin = (route) => fetch(`${base}${route}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json());
const MONEY = /^-?\$[\d,]+\.\d{2,9}$/;

// Every money figure on the page, in the one format.
async function moneyEverywhere() {
  const figures = await page.$$eval(
    "#total-cost, #breakdown tbody td:nth-child(6):not(.empty), #requests tbody td:nth-child(9), .spend > span:last-child",
    (cells) => cells.map((c) => c.textContent.trim()),
  );
  const money = figures.flatMap((f) => f.split(" of ")).filter((f) => f !== "–" && f !== "unpriced");
  assert.ok(money.length >= 3, `money figures: ${figures}`);
  for (const figure of money) assert.match(figure, MONEY);
}

// Nothing sticks out of the page or a card at the current width (tables scroll inside).
async function fitsTheWidth(width) {
  const overflow = await page.evaluate(() => {
    const wide = [...document.querySelectorAll("body, .card, .tiles")]
      .filter((node) => node.scrollWidth > node.clientWidth + 1)
      .map((node) => `${node.tagName}.${node.className} ${node.scrollWidth} > ${node.clientWidth}`);
    return { page: document.documentElement.scrollWidth, wide };
  });
  assert.ok(overflow.page <= width, `the page is ${overflow.page} px wide at ${width}`);
  assert.deepEqual(overflow.wide, [], "no card overflows");
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
  // Labelled axes, one money format, and daily buckets for seven days.
  assert.equal(await page.locator("svg.chart .axis-title").count(), 2);
  assert.ok((await page.textContent("svg.chart")).includes("day (UTC)"));
  await moneyEverywhere();
  await fitsTheWidth(1280);
  await shot("dashboard.png");

  // 24 hours: hourly buckets (the traffic is in this hour's bar).
  await page.selectOption("#range", "1");
  await page.waitForSelector("#chart-title:has-text('Spend per hour by model')");
  const hours = await page.$$eval("svg.chart rect.bar title", (titles) => titles.map((t) => t.textContent));
  assert.ok(hours.length > 0 && hours.every((t) => /^\d{4}-\d\d-\d\dT\d\d:00Z /.test(t)), `bars: ${hours}`);
  assert.ok((await page.textContent("svg.chart")).includes("hour (UTC)"));

  // The traffic's key: last used, and its own page with its users and models.
  const records = await admin("/admin/requests?limit=50");
  const keyId = records.data.find((r) => r.request_id === process.env.EXPECT_REQUEST_ID).key_id;
  const keyRow = page.locator(`#keys tbody tr[data-key-id='${keyId}']`);
  assert.notEqual((await keyRow.locator("td:nth-child(7)").textContent()).trim(), "never", "last used");
  await keyRow.locator("button.link").click();
  await page.waitForSelector("#key-page:not([hidden])");
  await page.waitForSelector(`#key-users tbody td:has-text('${process.env.EXPECT_USER}')`);
  await page.waitForSelector(`#key-models-used tbody td:has-text('${process.env.EXPECT_MODEL}')`);
  assert.ok((await page.textContent("#key-facts")).includes(keyId));

  // At a phone's width the page still fits: tables scroll inside their cards.
  await page.setViewportSize({ width: 420, height: 900 });
  await fitsTheWidth(420);
  await shot("dashboard-420.png");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click("#key-close");

  await page.selectOption("#dimension", "user");
  await page.waitForSelector(`#breakdown tbody td:has-text('${process.env.EXPECT_USER}')`);
  await page.selectOption("#measure", "requests");
  await page.waitForSelector("#chart-title:has-text('Requests per hour by user')");

  // A key created here works at once; revoked here, it is refused.
  await page.fill("#key-name", "made-in-the-browser");
  await page.fill("#key-models", "gpt-4o-mini");
  await page.fill("#key-budget", "5");
  await page.click("#create-key button");
  await page.waitForSelector("#new-secret:not([hidden])");
  const secret = (await page.textContent("#new-secret-value")).trim();
  assert.match(secret, /^tg-[0-9A-Za-z]{20,}$/);
  // Its budget, its spend against it, no expiry, never used; its page says it has no traffic.
  const fresh = page.locator("#keys tbody tr", { hasText: "made-in-the-browser" });
  await fresh.waitFor();
  assert.equal((await fresh.locator("td:nth-child(4)").textContent()).trim(), "$5.00 / month");
  assert.equal(await fresh.locator(".spend .bar").count(), 1);
  assert.equal((await fresh.locator("td:nth-child(6)").textContent()).trim(), "never");
  assert.equal((await fresh.locator("td:nth-child(7)").textContent()).trim(), "never");
  await fresh.locator("button.link").click();
  await page.waitForSelector("#key-users td.empty:has-text('No requests in this period.')");
  await page.click("#key-close");
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

  // A section that cannot load says so, and the others still show.
  await page.route("**/admin/requests*", (route) => route.fulfill({
    status: 503, contentType: "application/json",
    body: JSON.stringify({ error: { message: "The gateway's database is unavailable." } }),
  }));
  await page.click("#refresh");
  await page.waitForSelector("#requests-error:has-text('Could not load')");
  assert.notEqual(await page.textContent("#total-requests"), "0");
  await page.unroute("**/admin/requests*");
  // The browser logs the refused fetch, as it should.
  for (let i = problems.length - 1; i >= 0; i--) if (problems[i].includes("503")) problems.splice(i, 1);

  assert.deepEqual(problems, [], "no script errors or CSP violations");
  console.log("dashboard: all checks passed");
} finally {
  await browser.close();
}
