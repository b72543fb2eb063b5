// The Tollgate dashboard: reads the admin API with the admin token kept in sessionStorage.
// Every value from the API goes into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "tollgate-admin-token";
const COLOURS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const $ = (id) => document.getElementById(id);

let keyNames = new Map();

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
    tr.append(cell instanceof Node ? wrap(cell) : element("td", cell));
  }
  return tr;
}

function wrap(node) {
  const td = document.createElement("td");
  td.append(node);
  return td;
}

const usd = (nanos) => (Number(nanos || 0) / 1e9).toFixed(nanos && nanos < 10000000 ? 6 : 2);
const count = (n) => Number(n || 0).toLocaleString("en");
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
const keyLabel = (id) => (id ? keyNames.get(id) || id.slice(0, 8) : "–");

function groupName(dimension, value) {
  if (dimension === "key") return keyLabel(value);
  return value || "(none)";
}

// ---- usage: totals, chart, breakdown ---------------------------------------------------

async function loadUsage() {
  const days = Number($("range").value);
  const dimension = $("dimension").value;
  const measure = $("measure").value;
  // The usage API counts whole hours and rounds `to` down: ask up to the next hour so the
  // current one is included.
  const now = Date.now();
  const to = now + 3600000;
  const from = now - days * 86400000;
  const totals = await api(`/admin/usage?group_by=day&from=${from}&to=${to}`);
  const byDay = await api(`/admin/usage?group_by=day,${dimension}&from=${from}&to=${to}`);
  const byGroup = await api(`/admin/usage?group_by=${dimension}&from=${from}&to=${to}`);

  const sum = (field) => totals.data.reduce((total, r) => total + Number(r[field] || 0), 0);
  $("total-cost").textContent = `$${usd(sum("cost_nanos"))}`;
  $("total-requests").textContent = count(sum("requests"));
  $("total-tokens").textContent = count(sum("prompt_tokens") + sum("completion_tokens"));
  $("total-errors").textContent = count(sum("errors"));

  $("chart-title").textContent = `${measure === "cost" ? "Spend" : "Requests"} per day by ${dimension}`;
  $("breakdown-name").textContent = dimension;
  drawChart(byDay.data, dimension, measure, days, now);

  const body = $("breakdown").querySelector("tbody");
  body.replaceChildren();
  const field = dimension === "key" ? "key_id" : dimension === "user" ? "user_id" : "model";
  const rows = [...byGroup.data].sort((a, b) => (b.cost_nanos || 0) - (a.cost_nanos || 0));
  for (const r of rows) {
    body.append(row([groupName(dimension, r[field]), count(r.requests), count(r.errors),
      count(r.prompt_tokens), count(r.completion_tokens), usd(r.cost_nanos)]));
  }
  if (rows.length === 0) body.append(row(["no requests in this period", "", "", "", "", ""]));
}

function drawChart(data, dimension, measure, days, now) {
  const field = dimension === "key" ? "key_id" : dimension === "user" ? "user_id" : "model";
  const value = (r) => Number(measure === "cost" ? r.cost_nanos || 0 : r.requests || 0);
  const dayNames = [];
  for (let i = days - 1; i >= 0; i--) dayNames.push(new Date(now - i * 86400000).toISOString().slice(0, 10));
  const totals = new Map();
  for (const r of data) totals.set(r[field] || "", (totals.get(r[field] || "") || 0) + value(r));
  const groups = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a)).slice(0, COLOURS.length);
  const cells = new Map();
  for (const r of data) {
    const group = r[field] || "";
    if (!groups.includes(group)) continue;
    const key = `${r.day}|${group}`;
    cells.set(key, (cells.get(key) || 0) + value(r));
  }
  const dayTotals = dayNames.map((d) => groups.reduce((t, g) => t + (cells.get(`${d}|${g}`) || 0), 0));
  const max = Math.max(1, ...dayTotals);

  const width = 900, height = 240, pad = 30;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + pad}`);
  svg.setAttribute("class", "chart");
  const band = (width - pad) / dayNames.length;
  dayNames.forEach((day, i) => {
    let y = height;
    groups.forEach((group, g) => {
      const v = cells.get(`${day}|${group}`) || 0;
      if (v <= 0) return;
      const h = Math.max(1, (v / max) * (height - 10));
      y -= h;
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("x", pad + i * band + band * 0.15);
      rect.setAttribute("y", y);
      rect.setAttribute("width", band * 0.7);
      rect.setAttribute("height", h);
      rect.setAttribute("fill", COLOURS[g]);
      rect.setAttribute("class", "bar");
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${day} ${groupName(dimension, group)}: ${measure === "cost" ? "$" + usd(v) : count(v)}`;
      rect.append(title);
      svg.append(rect);
    });
    if (dayNames.length <= 10 || i % Math.ceil(dayNames.length / 10) === 0) {
      const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
      label.setAttribute("x", pad + i * band + band / 2);
      label.setAttribute("y", height + 18);
      label.setAttribute("text-anchor", "middle");
      label.textContent = day.slice(5);
      svg.append(label);
    }
  });
  const top = document.createElementNS("http://www.w3.org/2000/svg", "text");
  top.setAttribute("x", 2);
  top.setAttribute("y", 12);
  top.textContent = measure === "cost" ? `$${usd(max)}` : count(max);
  svg.append(top);
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

async function loadKeys() {
  const page = await api("/admin/keys?limit=500");
  keyNames = new Map(page.data.map((k) => [k.id, k.name]));
  const body = $("keys").querySelector("tbody");
  body.replaceChildren();
  for (const key of page.data) {
    const revoked = key.revoked_at_ms !== null && key.revoked_at_ms !== undefined;
    let action = element("span", "");
    if (!revoked) {
      action = element("button", "Revoke", "danger");
      action.type = "button";
      action.dataset.keyId = key.id;
      action.addEventListener("click", () => revoke(key));
    }
    const tr = row([key.name, `${key.prefix}…`, key.models.length ? key.models.join(", ") : "all",
      key.spend ? key.spend.spent_usd : "0", when(key.created_at_ms), revoked ? "revoked" : "active", action]);
    tr.dataset.keyId = key.id;
    if (revoked) tr.className = "revoked";
    body.append(tr);
  }
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

// ---- recent requests --------------------------------------------------------------------

async function loadRequests() {
  const page = await api("/admin/requests?limit=50");
  const body = $("requests").querySelector("tbody");
  body.replaceChildren();
  for (const r of page.data) {
    const tokens = (r.usage && (r.usage.prompt_tokens || 0) + (r.usage.completion_tokens || 0)) || 0;
    const tr = row([when(r.created_at_ms), keyLabel(r.key_id), r.user_id || "–", r.route,
      r.model_requested || "–", r.status, r.cache_status || "–", count(tokens),
      r.cost_nanos !== null && r.cost_nanos !== undefined ? usd(r.cost_nanos) : tokens > 0 ? "unpriced" : "–",
      r.latency_ms]);
    tr.dataset.requestId = r.request_id;
    if (r.status >= 400) tr.className = "failed";
    body.append(tr);
  }
}

// ---- start ------------------------------------------------------------------------------

async function refresh() {
  try {
    await loadKeys();
    await Promise.all([loadUsage(), loadRequests()]);
    document.body.dataset.loaded = "true";
  } catch (error) {
    if (error.status === 401) return signOut("The admin token was not accepted.");
    $("keys-error").textContent = error.message;
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

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    signedIn();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh").addEventListener("click", refresh);
  for (const id of ["range", "dimension", "measure"]) $(id).addEventListener("change", loadUsage);
  $("create-key").addEventListener("submit", createKey);
  if (sessionStorage.getItem(TOKEN_KEY)) signedIn();
});
