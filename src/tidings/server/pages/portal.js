// The webhook portal of one application: its customer manages the app's endpoints, sees the
// attempts (request and responses), replays them, rotates secrets and sends test events.
// The token arrives in the URL fragment (never sent to a server), is kept for the tab in
// sessionStorage, and is removed from the address bar at once. Everything else is the server
// API with that token: the server decides what it may do; this page only shows the answers.

const $ = (id) => document.getElementById(id);
const STORE = "tidings-portal-token";
const EXPIRED = "This portal link has expired. Ask the service that sent it to you for a new one.";

let token = null;
let claims = null;         // the token's payload: sub (the app), exp, ro
let endpoints = [];
let eventTypes = [];
let selected = null;       // the endpoint whose attempts are shown
let editing = null;        // the endpoint in the edit form
let shownDelivery = null;  // the delivery whose detail is shown
let refresher = null;      // the interval that refreshes the attempts

function readToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromLink = fragment.get("token");
  if (fromLink) {
    sessionStorage.setItem(STORE, fromLink);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return fromLink || sessionStorage.getItem(STORE);
}

function decode(value) {
  try {
    const part = value.replace(/^tdp_/, "").split(".")[1];
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return null;
  }
}

function gate(message) {
  $("portal").hidden = true;
  $("gate").hidden = false;
  $("gate").textContent = message;
  $("session").dataset.state = "disconnected";
  $("session").textContent = "signed out";
  clearInterval(refresher);
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function notice(message) {
  $("notice").textContent = message;
}

class Refused extends Error {}

async function api(path, options = {}) {
  const response = await fetch(`api/webhooks/apps/${encodeURIComponent(claims.sub)}${path}`, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) },
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) {
    gate(claims.exp * 1000 <= Date.now() ? EXPIRED : body?.error?.message || "This portal link is not valid.");
    throw new Refused();
  }
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}

async function catalog() {
  const response = await fetch("api/webhooks/event-types", { headers: { Authorization: `Bearer ${token}` } });
  return response.ok ? (await response.json()).event_types : [];
}

function act(fn) {
  return async (...args) => {
    showError("");
    try {
      await fn(...args);
    } catch (error) {
      if (!(error instanceof Refused)) showError(error.message);
    }
  };
}

function cell(text, className = "") {
  return Object.assign(document.createElement("td"), { textContent: String(text), className });
}

// A read-only token gets the buttons that only read (``reads``); the server refuses the rest anyway.
function button(label, onClick, name, reads = false) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: label, className: "secondary" });
  b.setAttribute("aria-label", name || label);
  b.disabled = Boolean(claims.ro) && !reads;
  b.addEventListener("click", act(onClick));
  return b;
}

function typeBoxes(container, chosen) {
  container.replaceChildren(
    ...eventTypes.map((t) => {
      const label = document.createElement("label");
      const box = Object.assign(document.createElement("input"), { type: "checkbox", value: t.name, checked: (chosen || []).includes(t.name) });
      label.title = t.description || "";
      label.append(box, ` ${t.name}`);
      return label;
    }),
  );
}

function ticked(container) {
  const names = [...container.querySelectorAll("input:checked")].map((b) => b.value);
  return names.length ? names : null;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

// endpoints ------------------------------------------------------------------------------------

async function loadEndpoints() {
  endpoints = (await api("/endpoints")).endpoints;
  $("no-endpoints").hidden = endpoints.length > 0;
  $("endpoints").tBodies[0].replaceChildren(
    ...endpoints.map((e) => {
      const tr = document.createElement("tr");
      tr.dataset.endpoint = e.id;
      const url = cell(e.url, "mono");
      if (e.description) url.title = e.description;
      const state = e.enabled ? "enabled" : `disabled${e.disabled_reason ? ` (${e.disabled_reason})` : ""}`;
      const actions = document.createElement("td");
      actions.append(
        button("Attempts", () => select(e), `Attempts of ${e.url}`, true),
        button("Send test", () => sendTest(e), `Send a test event to ${e.url}`),
        button("Edit", () => edit(e), `Edit ${e.url}`),
        button(e.enabled ? "Disable" : "Enable", () => setEnabled(e, !e.enabled), `${e.enabled ? "Disable" : "Enable"} ${e.url}`),
        button("Rotate secret", () => rotate(e), `Rotate the secret of ${e.url}`),
        button("Delete", () => remove(e), `Delete ${e.url}`),
      );
      tr.append(url, cell(e.event_types ? e.event_types.join(", ") : "all"), cell(state, e.enabled ? "good" : "bad"), actions);
      return tr;
    }),
  );
}

function showSecret(endpoint) {
  $("secret-box").hidden = false;
  $("secret-for").textContent = endpoint.url;
  $("secret").textContent = endpoint.secret;
}

async function add(event) {
  event.preventDefault();
  const rate = $("add-rate").value;
  const created = await api("/endpoints", {
    method: "POST",
    body: JSON.stringify({
      url: $("add-url").value,
      description: $("add-description").value,
      event_types: ticked($("add-types")),
      rate_limit: rate ? Number(rate) : null,
    }),
  });
  $("add-form").reset();
  showSecret(created);
  notice(`Endpoint added: ${created.url}`);
  await loadEndpoints();
  await select(created);
}

function edit(endpoint) {
  editing = endpoint;
  $("edit-panel").hidden = false;
  $("edit-url").value = endpoint.url;
  $("edit-description").value = endpoint.description;
  $("edit-rate").value = endpoint.rate_limit ?? "";
  typeBoxes($("edit-types"), endpoint.event_types);
  $("edit-url").focus();
}

async function save(event) {
  event.preventDefault();
  const rate = $("edit-rate").value;
  const saved = await api(`/endpoints/${editing.id}`, {
    method: "PATCH",
    body: JSON.stringify({
      url: $("edit-url").value,
      description: $("edit-description").value,
      event_types: ticked($("edit-types")),
      rate_limit: rate ? Number(rate) : null,
    }),
  });
  $("edit-panel").hidden = true;
  editing = null;
  notice(`Endpoint saved: ${saved.url}`);
  await loadEndpoints();
}

async function setEnabled(endpoint, enabled) {
  await api(`/endpoints/${endpoint.id}`, { method: "PATCH", body: JSON.stringify({ enabled }) });
  notice(`${enabled ? "Enabled" : "Disabled"}: ${endpoint.url}`);
  await loadEndpoints();
}

async function rotate(endpoint) {
  const rotated = await api(`/endpoints/${endpoint.id}/rotate-secret`, { method: "POST", body: "{}" });
  showSecret(rotated);
  notice(`New secret for ${endpoint.url}; the old one keeps signing for a short while.`);
}

async function remove(endpoint) {
  if (!confirm(`Delete the endpoint ${endpoint.url} and its attempt log?`)) return;
  await api(`/endpoints/${endpoint.id}`, { method: "DELETE" });
  if (selected?.id === endpoint.id) {
    selected = null;
    $("attempts-panel").hidden = true;
  }
  notice(`Deleted: ${endpoint.url}`);
  await loadEndpoints();
}

async function sendTest(endpoint) {
  await api(`/endpoints/${endpoint.id}/test`, { method: "POST", body: "{}" });
  notice(`Test event sent to ${endpoint.url}`);
  await select(endpoint);
}

// attempts -------------------------------------------------------------------------------------

async function select(endpoint) {
  if (selected?.id !== endpoint.id) {
    shownDelivery = null;
    $("detail").hidden = true;
  }
  selected = endpoint;
  $("attempts-panel").hidden = false;
  $("attempts-for").textContent = endpoint.url;
  await loadAttempts();
}

async function loadAttempts() {
  if (!selected) return;
  const { deliveries } = await api(`/endpoints/${selected.id}/deliveries?limit=50`);
  $("attempts").tBodies[0].replaceChildren(
    ...deliveries.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.delivery = d.id;
      tr.dataset.status = d.status;
      const actions = document.createElement("td");
      actions.append(
        button("Details", () => detail(d), `Request and responses of ${d.webhook_id}`, true),
        button("Replay", () => replay(d), `Replay ${d.webhook_id}`),
      );
      const last = d.last_status ?? d.last_error ?? "";
      tr.append(cell(d.webhook_id, "mono"), cell(d.event), cell(d.status, d.status === "succeeded" ? "good" : d.status === "failed" ? "bad" : "warn"), cell(d.attempts, "num"), cell(last), cell(when(d.created_at)), actions);
      return tr;
    }),
  );
  if (shownDelivery) await detail({ id: shownDelivery }, false);
}

async function detail(delivery, scroll = true) {
  const d = await api(`/endpoints/${selected.id}/deliveries/${delivery.id}`);
  shownDelivery = d.id;
  $("detail").hidden = false;
  $("detail-id").textContent = d.webhook_id;
  let body = d.request.body ?? "";
  try {
    body = JSON.stringify(JSON.parse(body), null, 2);
  } catch {
    /* shown as sent */
  }
  $("detail-request").textContent = `POST ${selected.url}\nwebhook-id: ${d.request.webhook_id}\n\n${body}`;
  $("detail-attempts").replaceChildren(
    ...d.attempt_log.map((a) => {
      const li = document.createElement("li");
      li.dataset.status = a.status ?? "";
      li.textContent = `${when(a.at)} · ${a.status ?? a.error} · ${Math.round(a.duration_ms)} ms · ${a.outcome}\n${a.response || a.error || ""}`;
      li.style.whiteSpace = "pre-wrap";
      return li;
    }),
  );
  if (scroll) $("detail").scrollIntoView({ block: "nearest" });
}

async function replay(delivery) {
  const { replayed } = await api(`/endpoints/${selected.id}/replay`, { method: "POST", body: JSON.stringify({ delivery_id: delivery.id }) });
  notice(`Replayed ${replayed} message: ${delivery.webhook_id}`);
  await loadAttempts();
}

// start ----------------------------------------------------------------------------------------

async function start() {
  token = readToken();
  claims = token && decode(token);
  if (!claims?.sub) return gate("This page opens from a portal link given by the service that sends you webhooks.");
  if (claims.exp * 1000 <= Date.now()) return gate(EXPIRED);
  const app = await api("");
  $("title").textContent = `Webhooks of ${app.name}`;
  document.title = `Webhooks of ${app.name}`;
  $("session").dataset.state = "connected";
  $("session").textContent = `${claims.ro ? "read-only, " : ""}until ${new Date(claims.exp * 1000).toLocaleTimeString()}`;
  eventTypes = await catalog();
  typeBoxes($("add-types"), null);
  $("portal").hidden = false;
  $("add-form").querySelector("button").disabled = Boolean(claims.ro);
  await loadEndpoints();
  refresher = setInterval(act(async () => {
    if (claims.exp * 1000 <= Date.now()) return gate(EXPIRED);
    await loadAttempts();
  }), 1000);
}

$("add-form").addEventListener("submit", act(add));
$("edit-form").addEventListener("submit", act(save));
$("edit-cancel").addEventListener("click", () => {
  $("edit-panel").hidden = true;
  editing = null;
});
act(start)();
