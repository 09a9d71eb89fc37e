// Pylon's dashboard: reads this replica's API (same origin only) every two seconds and draws
// it with DOM nodes; text from the configuration is only ever set as text.
"use strict";

const REFRESH_MS = 2000;
const filters = { search: "", status: "" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(status) {
  return el("span", { class: "badge " + status }, status);
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

// Every page of a list: the API answers `per_page` records and names the next page in
// X-Next-Page (1 on the last page, as Traefik). At most 100 pages are read.
async function getAll(path, params) {
  const all = [];
  for (let page = 1; page <= 100;) {
    const search = new URLSearchParams(params);
    search.set("per_page", "500");
    search.set("page", String(page));
    const response = await fetch(path + "?" + search, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(path + ": " + response.status);
    all.push(...(await response.json()));
    const next = Number(response.headers.get("X-Next-Page") || "1");
    if (!(next > page)) break;
    page = next;
  }
  return all;
}

function fill(id, rows, columns) {
  const body = document.querySelector("#" + id + " tbody");
  const fresh = rows.length
    ? rows.map((row) => el("tr", { "data-name": row.name || row.id || row.main || "" }, ...row.cells))
    : [el("tr", {}, el("td", { class: "empty", colspan: String(columns) }, "none"))];
  body.replaceChildren(...fresh);
}

function withErrors(text, errors) {
  return [el("div", {}, text), ...(errors || []).map((e) => el("div", { class: "errors" }, e))];
}

function query() {
  const params = new URLSearchParams();
  if (filters.search) params.set("search", filters.search);
  if (filters.status) params.set("status", filters.status);
  return params;
}

function drawOverview(overview) {
  // The certificates served: warnings have under a third of their lifetime left, errors expired.
  const sections = ["routers", "services", "middlewares"].map((kind) => [kind, overview.http[kind]]);
  if (overview.certificates) sections.push(["certificates", overview.certificates]);
  const cards = sections.map(([kind, s]) => {
    return el("div", { class: "card", id: "overview-" + kind },
      el("h3", {}, kind),
      el("div", { class: "total" }, s.total),
      el("div", {}, el("span", { class: "badge " + (s.warnings ? "warning" : "none") }, s.warnings + " warnings"), " ",
        el("span", { class: "badge " + (s.errors ? "disabled" : "none") }, s.errors + " errors")));
  });
  document.getElementById("overview").replaceChildren(...cards);
}

function drawRouters(routers) {
  fill("routers", routers.map((r) => ({
    name: r.name,
    cells: [
      el("td", {}, badge(r.status)),
      el("td", {}, withErrors(r.name, r.error)),
      el("td", {}, el("code", {}, r.rule || "")),
      el("td", {}, (r.using || []).join(", ")),
      el("td", {}, r.service || ""),
      el("td", {}, (r.middlewares || []).join(", ")),
      el("td", {}, r.priorityStr || ""),
    ],
  })), 7);
}

function drawServices(services) {
  fill("services", services.map((s) => {
    const servers = Object.entries(s.serverStatus || {}).map(([url, state]) =>
      el("div", {}, el("span", { class: "badge " + state.toLowerCase() }, state), " ", url));
    const listed = ((s.loadBalancer || {}).servers || []).map((server) => el("div", {}, server.url || ""));
    return {
      name: s.name,
      cells: [
        el("td", {}, badge(s.status)),
        el("td", {}, withErrors(s.name, s.error)),
        el("td", {}, s.type || ""),
        el("td", {}, servers.length ? servers : listed),
        el("td", {}, (s.usedBy || []).join(", ")),
      ],
    };
  }), 5);
}

function drawMiddlewares(middlewares) {
  fill("middlewares", middlewares.map((m) => ({
    name: m.name,
    cells: [
      el("td", {}, badge(m.status)),
      el("td", {}, withErrors(m.name, m.error)),
      el("td", {}, m.type || ""),
      el("td", {}, (m.usedBy || []).join(", ")),
    ],
  })), 4);
}

function drawCluster(cluster) {
  fill("replicas", cluster.replicas.map((r) => ({
    id: r.id,
    cells: [
      el("td", {}, r.id, el("div", { class: "muted" }, r.holder || "")),
      el("td", {}, badge(r.status)),
      el("td", {}, r.version),
      el("td", {}, r.revision),
      el("td", {}, r.lastHeartbeat),
      el("td", {}, Object.entries(r.addresses || {}).map(([ep, a]) => el("div", {}, ep + " " + a))),
    ],
  })), 6);
  fill("certificates", cluster.certificates.map((c) => {
    // Traefik's rule of thumb: renew with a third of the lifetime left; under a week is urgent.
    let level = "";
    if (c.daysLeft !== null && c.daysLeft !== undefined) {
      if (c.daysLeft < 7) level = "days-error";
      else if (c.lifetimeDays && c.daysLeft < c.lifetimeDays / 3) level = "days-warning";
    }
    const order = c.order ? c.order.stage + " by " + c.order.holder + " since " + c.order.started : "";
    const failure = c.failure ? c.failure.failures + " (" + c.failure.error + "), retry at " + c.failure.retryAt : "";
    return {
      main: c.main,
      cells: [
        el("td", {}, c.main, el("div", { class: "muted" }, (c.names || []).slice(1).join(", "))),
        el("td", { class: "days-left " + level }, c.daysLeft === null ? "-" : c.daysLeft),
        el("td", {}, c.notAfter || "-"),
        el("td", {}, c.issuer || "-"),
        el("td", {}, c.lockedBy || ""),
        el("td", { class: "order" }, order),
        el("td", {}, failure),
      ],
    };
  }), 7);
}

function drawEvents(events) {
  fill("events", events.slice(0, 30).map((e) => ({
    cells: [
      el("td", {}, e.time),
      el("td", {}, e.kind),
      el("td", {}, Object.entries(e.fields || {}).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join("  ")),
    ],
  })), 3);
}

async function refresh() {
  const q = query();
  const [version, overview, routers, services, middlewares, cluster, events] = await Promise.all([
    getJSON("../api/version"),
    getJSON("../api/overview"),
    getAll("../api/http/routers", q),
    getAll("../api/http/services", q),
    getAll("../api/http/middlewares", q),
    getJSON("../api/pylon/cluster"),
    getJSON("../api/pylon/events"),
  ]);
  document.getElementById("version").textContent = "v" + version.Version;
  drawOverview(overview);
  drawRouters(routers);
  drawServices(services);
  drawMiddlewares(middlewares);
  drawCluster(cluster);
  drawEvents(events);
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

function loop() {
  refresh().catch((err) => {
    document.getElementById("updated").textContent = "cannot reach the API: " + err.message;
  }).finally(() => setTimeout(loop, REFRESH_MS));
}

document.getElementById("search").addEventListener("input", (e) => { filters.search = e.target.value; refresh().catch(() => {}); });
document.getElementById("status").addEventListener("change", (e) => { filters.status = e.target.value; refresh().catch(() => {}); });
loop();
