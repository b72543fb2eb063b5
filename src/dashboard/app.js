// The Tollgate dashboard: reads the admin API with the admin token kept in sessionStorage.
// Every value from the API goes into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "tollgate-admin-token";
const COLOURS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const HOUR = 3600000;
const DAY = 86400000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let keys = [];
let keyNames = new Map();
let lastUsed = new Map();

// ---- formats ----------------------------------------------------------------------------

// The one money format of the page (the CLI's and the alerts' too): exact, from integer
// nano-dollars, cents at least and every further digit that is not zero, never rounded:
// $8.00, $0.000374, $1,234.56789.
function formatUsd(nanos) {
  let n = BigInt(Math.round(Number(nanos || 0)));
  const negative = n < 0n;
  if (negative) n = -n;
  const whole = (n / 1000000000n).toLocaleString("en");
  let fraction = (n % 1000000000n).toString().padStart(9, "0").replace(/0+$/, "");
  if (fraction.length < 2) fraction = fraction.padEnd(2, "0");
  return `${negative ? "-" : ""}$${whole}.${fraction}`;
}

const usdToNanos = (usd) => Math.round(Number(usd || 0) * 1e9);
const count = (n) => Number(n || 0).toLocaleString("en");
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 16);
const keyLabel = (id) => (id ? keyNames.get(id) || id.slice(0, 12) : "–");

function groupName(dimension, value) {
  if (dimension === "key") return keyLabel(value);
  return value || "(none)";
}

// ---- the page's pieces ------------------------------------------------------------------

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, {
    ...options,
    headers: { "authorization": `Bearer ${token}`, "content-type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell === undefined || cell === null ? "" : String(cell);
    tr.append(td);
  }
  return tr;
}

// A table body's empty state: one row across every column.
function emptyRow(table, message) {
  const td = element("td", message, "empty");
  td.colSpan = table.querySelectorAll("thead th").length;
  const tr = document.createElement("tr");
  tr.append(td);
  return tr;
}

function svgNode(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Runs a section's loader; a failure shows in that section, the others keep working.
async function section(errorId, load) {
  $(errorId).textContent = "";
  try {
    await load();
  } catch (error) {
    if (error.status === 401) throw error;
    $(errorId).textContent = `Could not load: ${error.message}`;
  }
}

// ---- usage: totals, chart, breakdown ----------------------------------------------------

// The period shown: hourly buckets under three days, daily ones beyond.
function period() {
  const days = Number($("range").value);
  const hourly = days < 3;
  const step = hourly ? HOUR : DAY;
  const now = Date.now();
  // The usage API counts whole hours and rounds `to` down: ask up to the next hour so the
  // current one is included.
  const to = now - (now % HOUR) + HOUR;
  const from = hourly ? to - days * DAY : now - (now % DAY) - (days - 1) * DAY;
  const buckets = [];
  for (let t = from; t < to; t += step) buckets.push(bucketName(t, hourly));
  return { days, hourly, from, to, buckets, unit: hourly ? "hour" : "day" };
}

function bucketName(ms, hourly) {
  const iso = new Date(ms).toISOString();
  return hourly ? `${iso.slice(0, 13)}:00Z` : iso.slice(0, 10);
}

async function loadUsage() {
  const span = period();
  const dimension = $("dimension").value;
  const measure = $("measure").value;
  const range = `from=${span.from}&to=${span.to}`;
  const [totals, byTime, byGroup] = await Promise.all([
    api(`/admin/usage?${range}`),
    api(`/admin/usage?group_by=${span.unit},${dimension}&${range}`),
    api(`/admin/usage?group_by=${dimension}&${range}`),
  ]);
  const total = totals.data[0] || {};
  $("total-cost").textContent = formatUsd(total.cost_nanos);
  $("total-requests").textContent = count(total.requests);
  $("total-tokens").textContent = count(Number(total.prompt_tokens || 0) + Number(total.completion_tokens || 0));
  $("total-errors").textContent = count(total.errors);

  const per = span.hourly ? "hour" : "day";
  $("chart-title").textContent = `${measure === "cost" ? "Spend" : "Requests"} per ${per} by ${dimension}`;
  $("breakdown-name").textContent = dimension;
  drawChart(byTime.data, span, dimension, measure);

  const table = $("breakdown");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const field = dimension === "key" ? "key_id" : dimension === "user" ? "user_id" : "model";
  const rows = [...byGroup.data].sort((a, b) => (b.cost_nanos || 0) - (a.cost_nanos || 0));
  for (const r of rows) {
    body.append(row([groupName(dimension, r[field]), count(r.requests), count(r.errors),
      count(r.prompt_tokens), count(r.completion_tokens), formatUsd(r.cost_nanos)]));
  }
  if (rows.length === 0) body.append(emptyRow(table, "No requests in this period."));
}

function drawChart(data, span, dimension, measure) {
  const field = dimension === "key" ? "key_id" : dimension === "user" ? "user_id" : "model";
  const value = (r) => Number(measure === "cost" ? r.cost_nanos || 0 : r.requests || 0);
  const label = (v) => (measure === "cost" ? formatUsd(v) : count(v));
  const totals = new Map();
  for (const r of data) totals.set(r[field] || "", (totals.get(r[field] || "") || 0) + value(r));
  const groups = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a)).slice(0, COLOURS.length);
  const cells = new Map();
  for (const r of data) {
    const group = r[field] || "";
    if (!groups.includes(group)) continue;
    const key = `${r[span.unit]}|${group}`;
    cells.set(key, (cells.get(key) || 0) + value(r));
  }
  const bucketTotals = span.buckets.map((b) => groups.reduce((t, g) => t + (cells.get(`${b}|${g}`) || 0), 0));
  const max = Math.max(...bucketTotals, 0);

  const width = 900, height = 220, left = 96, bottom = 44, top = 28;
  const svg = svgNode("svg", { viewBox: `0 0 ${width} ${height + bottom + top}`, class: "chart" });
  const plot = width - left - 8;
  const y = (v) => top + height - (max > 0 ? (v / max) * height : 0);
  // The y axis: zero, half and the top, labelled in the measure's unit.
  for (const fraction of [0, 0.5, 1]) {
    const v = max * fraction;
    svg.append(svgNode("line", { x1: left, x2: width - 8, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgNode("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, label(v)));
  }
  svg.append(svgNode("text", { x: left, y: 12, "text-anchor": "start", class: "axis-title" },
    measure === "cost" ? "spend (USD)" : "requests"));
  const band = plot / span.buckets.length;
  const every = Math.ceil(span.buckets.length / 12);
  span.buckets.forEach((bucket, i) => {
    let top_ = y(0);
    groups.forEach((group, g) => {
      const v = cells.get(`${bucket}|${group}`) || 0;
      if (v <= 0) return;
      const h = Math.max(1, y(0) - y(v));
      top_ -= h;
      const rect = svgNode("rect", { x: left + i * band + band * 0.15, y: top_, width: band * 0.7, height: h,
        fill: COLOURS[g], class: "bar" });
      rect.append(svgNode("title", {}, `${bucket} ${groupName(dimension, group)}: ${label(v)}`));
      svg.append(rect);
    });
    if (i % every === 0) {
      const text = span.hourly ? bucket.slice(11, 16) : bucket.slice(5);
      svg.append(svgNode("text", { x: left + i * band + band / 2, y: top + height + 16, "text-anchor": "middle", class: "tick" }, text));
    }
  });
  svg.append(svgNode("text", { x: left + plot / 2, y: top + height + 38, "text-anchor": "middle", class: "axis-title" },
    span.hourly ? "hour (UTC)" : "day (UTC)"));
  if (max === 0) {
    svg.append(svgNode("text", { x: left + plot / 2, y: top + height / 2, "text-anchor": "middle", class: "empty" },
      "No requests in this period."));
  }
  $("chart").replaceChildren(svg);

  const legend = $("legend");
  legend.replaceChildren();
  groups.forEach((group, g) => {
    const item = element("li", groupName(dimension, group));
    item.style.setProperty("--swatch", COLOURS[g]);
    legend.append(item);
  });
}

// ---- keys -------------------------------------------------------------------------------

// When each key was last used: the last hour with requests in the past two days, else the last
// day with requests in the past 90.
async function loadLastUsed() {
  const now = Date.now();
  const to = now - (now % HOUR) + HOUR;
  const [days, hours] = await Promise.all([
    api(`/admin/usage?group_by=key,day&from=${to - 90 * DAY}&to=${to}`),
    api(`/admin/usage?group_by=key,hour&from=${to - 2 * DAY}&to=${to}`),
  ]);
  lastUsed = new Map();
  for (const r of days.data) {
    if (r.key_id && (!lastUsed.has(r.key_id) || lastUsed.get(r.key_id) < r.day)) lastUsed.set(r.key_id, r.day);
  }
  for (const r of hours.data) {
    const shown = r.hour.slice(0, 16).replace("T", " ");
    const known = lastUsed.get(r.key_id);
    if (r.key_id && (!known || known.length === 10 || known < shown)) lastUsed.set(r.key_id, shown);
  }
}

function budgetText(budget) {
  return budget ? `${formatUsd(usdToNanos(budget.max_usd))} / ${budget.period}` : "none";
}

// Spend against the key's budget: a bar and the figures.
function spendCell(key) {
  const spent = key.spend ? key.spend.spent_nanos : 0;
  const budget = key.budgets && key.budgets.key;
  if (!budget) return element("span", formatUsd(spent));
  const limit = usdToNanos(budget.max_usd);
  const share = limit > 0 ? Math.min(1, spent / limit) : 1;
  const box = element("span", null, "spend");
  const bar = element("span", null, share >= 1 ? "bar full" : share >= (budget.alert_at ?? 0.8) ? "bar high" : "bar");
  bar.style.setProperty("--share", `${(share * 100).toFixed(1)}%`);
  bar.title = `${(share * 100).toFixed(1)}% of the budget`;
  box.append(bar, element("span", `${formatUsd(spent)} of ${formatUsd(limit)}`));
  return box;
}

function keyState(key, now) {
  if (key.revoked_at_ms !== null && key.revoked_at_ms !== undefined) return "revoked";
  if (key.expires_at_ms !== null && key.expires_at_ms !== undefined && key.expires_at_ms <= now) return "expired";
  return "active";
}

async function loadKeys() {
  const page = await api("/admin/keys?limit=500");
  keys = page.data;
  keyNames = new Map(keys.map((k) => [k.id, k.name]));
  await loadLastUsed();
  const table = $("keys");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const now = Date.now();
  for (const key of keys) {
    const state = keyState(key, now);
    let action = element("span", "");
    if (state !== "revoked") {
      action = element("button", "Revoke", "danger");
      action.type = "button";
      action.dataset.keyId = key.id;
      action.addEventListener("click", () => revoke(key));
    }
    const name = element("button", key.name, "link");
    name.type = "button";
    name.addEventListener("click", () => showKey(key));
    const tr = row([name, `${key.prefix}…`, key.models.length ? key.models.join(", ") : "all",
      budgetText(key.budgets && key.budgets.key), spendCell(key),
      key.expires_at_ms ? when(key.expires_at_ms) : "never", lastUsed.get(key.id) || "never", state, action]);
    tr.dataset.keyId = key.id;
    if (state !== "active") tr.className = state;
    body.append(tr);
  }
  if (keys.length === 0) body.append(emptyRow(table, "No keys yet: create one above."));
}

async function createKey(event) {
  event.preventDefault();
  $("keys-error").textContent = "";
  const models = $("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  const body = { name: $("key-name").value.trim(), models };
  const budget = parseFloat($("key-budget").value);
  if (!Number.isNaN(budget) && budget > 0) {
    body.budgets = { key: { max_usd: budget, period: "month", alert_at: 0.8 } };
  }
  try {
    const created = await api("/admin/keys", { method: "POST", body: JSON.stringify(body) });
    $("new-secret-value").textContent = created.key;
    $("new-secret").hidden = false;
    $("create-key").reset();
    await loadKeys();
  } catch (error) {
    $("keys-error").textContent = error.message;
  }
}

async function revoke(key) {
  if (!window.confirm(`Revoke the key "${key.name}"? Callers using it are refused at once.`)) return;
  try {
    await api(`/admin/keys/${encodeURIComponent(key.id)}/revoke`, { method: "POST" });
    await loadKeys();
  } catch (error) {
    $("keys-error").textContent = error.message;
  }
}

// ---- one key: its settings, users and models --------------------------------------------

async function showKey(key) {
  $("key-page").hidden = false;
  $("key-title").textContent = `Key: ${key.name}`;
  const facts = $("key-facts");
  facts.replaceChildren();
  const rules = key.rules.map((r) => `${r.scope} ${r.route}: ${r.requests ?? r.tokens} ${r.requests ? "requests" : "tokens"} / ${r.per}`);
  for (const [term, value] of [
    ["id", key.id], ["prefix", `tg-${key.prefix}…`], ["owner", key.owner || "–"], ["state", keyState(key, Date.now())],
    ["models", key.models.length ? key.models.join(", ") : "all"], ["routes", key.routes.length ? key.routes.join(", ") : "–"],
    ["budget", budgetText(key.budgets.key)], ["budget per user", budgetText(key.budgets.user)],
    ["spent this window", formatUsd(key.spend ? key.spend.spent_nanos : 0)], ["rules", rules.length ? rules.join("; ") : "the defaults"],
    ["created", when(key.created_at_ms)], ["expires", key.expires_at_ms ? when(key.expires_at_ms) : "never"],
    ["last used", lastUsed.get(key.id) || "never"],
  ]) {
    facts.append(element("dt", term), element("dd", value));
  }
  $("key-page").dataset.keyId = key.id;
  await section("key-error", async () => {
    const span = period();
    const range = `from=${span.from}&to=${span.to}`;
    const [users, models] = await Promise.all([
      api(`/admin/usage?group_by=key,user&${range}`),
      api(`/admin/usage?group_by=key,model&${range}`),
    ]);
    for (const [tableId, data, field] of [["key-users", users.data, "user_id"], ["key-models-used", models.data, "model"]]) {
      const table = $(tableId);
      const body = table.querySelector("tbody");
      body.replaceChildren();
      const rows = data.filter((r) => r.key_id === key.id).sort((a, b) => (b.cost_nanos || 0) - (a.cost_nanos || 0));
      for (const r of rows) body.append(row([r[field] || "(none)", count(r.requests), count(r.errors), formatUsd(r.cost_nanos)]));
      if (rows.length === 0) body.append(emptyRow(table, "No requests in this period."));
    }
  });
  $("key-page").scrollIntoView();
}

// ---- recent requests --------------------------------------------------------------------

async function loadRequests() {
  const page = await api("/admin/requests?limit=50");
  const table = $("requests");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const r of page.data) {
    const tokens = (r.usage && (r.usage.prompt_tokens || 0) + (r.usage.completion_tokens || 0)) || 0;
    const tr = row([when(r.created_at_ms), keyLabel(r.key_id), r.user_id || "–", r.route,
      r.model_requested || "–", r.status, r.cache_status || "–", count(tokens),
      r.cost_nanos !== null && r.cost_nanos !== undefined ? formatUsd(r.cost_nanos) : tokens > 0 ? "unpriced" : "–",
      r.latency_ms]);
    tr.dataset.requestId = r.request_id;
    if (r.status >= 400) tr.className = "failed";
    body.append(tr);
  }
  if (page.data.length === 0) body.append(emptyRow(table, "No requests yet."));
}

// ---- start ------------------------------------------------------------------------------

async function refresh() {
  try {
    await section("keys-error", loadKeys);
    await Promise.all([section("usage-error", loadUsage), section("requests-error", loadRequests)]);
    document.body.dataset.loaded = "true";
  } catch (error) {
    signOut("The admin token was not accepted.");
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("app").hidden = true;
  $("controls").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  delete document.body.dataset.loaded;
}

function signedIn() {
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("controls").hidden = false;
  return refresh();
}

if (typeof document !== "undefined") {
  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      signedIn();
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("refresh").addEventListener("click", refresh);
    for (const id of ["range", "dimension", "measure"]) {
      $(id).addEventListener("change", () => section("usage-error", loadUsage).catch(() => signOut("The admin token was not accepted.")));
    }
    $("create-key").addEventListener("submit", createKey);
    $("key-close").addEventListener("click", () => { $("key-page").hidden = true; });
    if (sessionStorage.getItem(TOKEN_KEY)) signedIn();
  });
}

// For the formatting tests (tests/dashboard/money.test.mjs), which load this file in Node.
if (typeof module !== "undefined") module.exports = { formatUsd, bucketName };
