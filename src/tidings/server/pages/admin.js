// The admin console: a live stats stream (SSE read with fetch, so the API key travels in a header)
// plus the server API for history, publishing, presence and webhooks.

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("tidings-admin-key") || "";
let stream = null;          // AbortController of the stats stream
let selected = null;        // the webhook endpoint whose deliveries are shown
let webhooksShown = 0;      // when the webhook tables were last refreshed
let appsShown = 0;          // when the applications and event types were last refreshed

function headers(extra = {}) {
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text || state;
}

function cell(text, className = "") {
  return Object.assign(document.createElement("td"), { textContent: String(text), className });
}

function button(label, onClick, name) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: label, className: "secondary" });
  if (name) b.setAttribute("aria-label", name);
  b.addEventListener("click", onClick);
  return b;
}

// Replace only the rows that changed, so a focused button in an unchanged row keeps its focus.
function rows(table, list) {
  const body = $(table).tBodies[0];
  const old = [...body.rows];
  list.forEach((tr, i) => {
    if (!old[i]) body.append(tr);
    else if (old[i].outerHTML !== tr.outerHTML) old[i].replaceWith(tr);
  });
  for (const tr of old.slice(list.length)) tr.remove();
}

// The stats stream ----------------------------------------------------------------------------

async function connect() {
  stream?.abort();
  const abort = (stream = new AbortController());
  setStatus("connecting");
  try {
    const response = await fetch("api/admin/stream", { headers: headers({ Accept: "text/event-stream" }), signal: abort.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      setStatus("disconnected", "not connected");
      showError(body?.error?.message || `HTTP ${response.status}`);
      return;
    }
    showError("");
    setStatus("connected", "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "", event = "", data = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
        else if (line === "") {
          if (event === "stats" && data) render(JSON.parse(data));
          event = data = "";
        }
      }
    }
  } catch (err) {
    if (abort.signal.aborted) return;
  }
  if (stream === abort) {   // ended by the server: reconnect shortly
    setStatus("disconnected", "reconnecting");
    setTimeout(connect, 2000);
  }
}

function render(stats) {
  rows("nodes", stats.nodes.map((n) => {
    const tr = document.createElement("tr");
    tr.append(cell(n.id, "mono"), cell(n.version), cell(`${n.broker}${n.broker_available ? "" : " (down)"}`),
      cell(`${Math.round(n.uptime)} s`, "num"), cell(n.publications, "num"), cell(n.deliveries, "num"));
    return tr;
  }));
  const byTransport = {};
  for (const n of stats.nodes) for (const [t, c] of Object.entries(n.connections)) byTransport[t] = (byTransport[t] || 0) + c;
  const transports = ["ws", "sse", "stream", "longpoll", "poll"];
  for (const t of Object.keys(byTransport)) if (!transports.includes(t)) transports.push(t);
  rows("connections", transports.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.transport = t;
    tr.append(cell(t), cell(byTransport[t] || 0, "num"));
    return tr;
  }));
  rows("channels", stats.channels.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.channel = c.name;
    const actions = document.createElement("td");
    actions.append(
      button("History", () => { $("history-channel").value = c.name; readHistory(); }, `History of ${c.name}`),
      " ",
      button("Presence", () => { $("presence-channel").value = c.name; readPresence(); }, `Presence in ${c.name}`),
      " ",
      button("Publish", () => { $("publish-channel").value = c.name; $("publish-data").focus(); }, `Publish to ${c.name}`));
    tr.append(cell(c.name, "mono"), cell(c.subscribers, "num"), cell(c.offset, "num"), cell(c.epoch, "mono"),
      cell(c.rate.toFixed(1), "num"), actions);
    return tr;
  }));
  const consumers = stats.consumers || [];
  $("consumers-panel").hidden = !consumers.length;
  rows("consumers", consumers.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.consumer = c.name;
    const state = c.connected ? "connected" : (c.error ? `unreachable: ${c.error}` : "starting");
    tr.append(cell(c.name, "mono"), cell(c.kind), cell(c.source, "mono"), cell(state),
      cell(c.lag ?? "-", "num"), cell(c.published, "num"), cell(c.failed, "num"), cell(c.dead_lettered, "num"));
    return tr;
  }));
  if (stats.features?.webhooks && Date.now() - webhooksShown > 1500) refreshWebhooks();
  $("apps-section").hidden = !stats.features?.apps;
  if (stats.features?.apps && Date.now() - appsShown > 3000) refreshApps();
  $("webhooks-note").hidden = !!stats.features?.webhooks;
  $("webhooks-body").hidden = !stats.features?.webhooks;
}

// History, publish, presence ------------------------------------------------------------------

async function readHistory() {
  const channel = $("history-channel").value.trim();
  if (!channel) return;
  try {
    const page = await api(`api/channels/${encodeURIComponent(channel)}/history?limit=${Number($("history-limit").value) || 20}`);
    rows("history", page.publications.reverse().map((p) => {
      const tr = document.createElement("tr");
      tr.append(cell(p.offset, "num"), cell(new Date(p.time).toLocaleTimeString()), cell(p.event),
        cell(JSON.stringify(p.data), "mono"));
      return tr;
    }));
    showError("");
  } catch (err) { showError(`history: ${err.message}`); }
}

async function readPresence() {
  const channel = $("presence-channel").value.trim();
  if (!channel) return;
  try {
    const { clients } = await api(`api/channels/${encodeURIComponent(channel)}/presence`);
    $("presence").replaceChildren(...(clients.length ? clients : [null]).map((c) =>
      Object.assign(document.createElement("li"), { textContent: c ? `${c.client} ${c.user || "(anonymous)"}` : "nobody" })));
    showError("");
  } catch (err) { showError(`presence: ${err.message}`); }
}

async function publish(event) {
  event.preventDefault();
  let data;
  try { data = JSON.parse($("publish-data").value); }
  catch { $("publish-result").textContent = "data is not valid JSON"; return; }
  try {
    const result = await api("api/publish", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ channel: $("publish-channel").value.trim(), event: $("publish-event").value.trim() || "message", data }),
    });
    $("publish-result").textContent = `published: offset ${result.offset} in epoch ${result.epoch}`;
  } catch (err) { $("publish-result").textContent = `not published: ${err.message}`; }
}

// Webhooks --------------------------------------------------------------------------------------

async function refreshWebhooks() {
  webhooksShown = Date.now();
  try {
    const { webhooks } = await api("api/webhooks");
    if (!selected && webhooks.length) selected = webhooks[0].id;
    rows("webhooks", webhooks.map((w) => {
      const tr = document.createElement("tr");
      tr.dataset.endpoint = w.id;
      if (w.id === selected) tr.setAttribute("aria-current", "true");
      const state = w.enabled ? (w.failing_since ? "failing" : "enabled") : `disabled: ${w.disabled_reason || ""}`;
      const actions = document.createElement("td");
      actions.append(button("Deliveries", () => { selected = w.id; refreshWebhooks(); }, `Deliveries of ${w.url}`));
      tr.append(cell(w.url, "mono"), cell(w.channels.join(", "), "mono"), cell(state, w.enabled && !w.failing_since ? "good" : "bad"), actions);
      return tr;
    }));
    if (selected) await refreshDeliveries();
  } catch (err) { showError(`webhooks: ${err.message}`); }
}

async function refreshDeliveries() {
  const { deliveries } = await api(`api/webhooks/${selected}/deliveries?limit=20`);
  rows("deliveries", deliveries.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.delivery = d.id;
    tr.dataset.status = d.status;
    // A listing carries the last attempt's result, not the attempt log (that is the detail's).
    const lastText = d.attempts ? String(d.last_status ?? d.last_error ?? "") : "–";
    const actions = document.createElement("td");
    if (d.status !== "pending") actions.append(button("Replay", () => replay(d.id), `Replay delivery ${d.id}`));
    tr.append(cell(d.webhook_id, "mono"), cell(`${d.channel} ${d.event}`), cell(d.status, d.status === "failed" ? "bad" : d.status === "succeeded" ? "good" : "warn"),
      cell(d.attempts, "num"), cell(lastText), actions);
    return tr;
  }));
}

async function replay(deliveryId) {
  try {
    await api(`api/webhooks/${selected}/replay`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ delivery_id: deliveryId }),
    });
    await refreshDeliveries();
  } catch (err) { showError(`replay: ${err.message}`); }
}

// Applications and event types ------------------------------------------------------------------

const JSON_POST = { method: "POST", headers: { "Content-Type": "application/json" } };

async function refreshApps() {
  appsShown = Date.now();
  try {
    const [{ apps }, { webhooks }, { event_types }] = await Promise.all([
      api("api/webhooks/apps"), api("api/webhooks"), api("api/webhooks/event-types?include_archived=true"),
    ]);
    rows("apps", apps.map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.app = a.id;
      const actions = document.createElement("td");
      actions.append(
        button("Portal link", () => portalLink(a.id), `Portal link for ${a.name}`),
        button("Revoke links", () => revokePortal(a.id), `Revoke the portal links of ${a.name}`),
      );
      tr.append(cell(a.id, "mono"), cell(a.name), cell(webhooks.filter((w) => w.app_id === a.id).length, "num"), actions);
      return tr;
    }));
    rows("event-types", event_types.map((t) => {
      const tr = document.createElement("tr");
      tr.dataset.eventType = t.name;
      const actions = document.createElement("td");
      actions.append(t.archived
        ? button("Unarchive", () => setArchived(t.name, false), `Unarchive ${t.name}`)
        : button("Archive", () => setArchived(t.name, true), `Archive ${t.name}`));
      tr.append(cell(t.name, "mono"), cell(t.description + (t.archived ? " (archived)" : "")), cell(t.schema ? "yes" : ""), actions);
      return tr;
    }));
  } catch (err) { showError(`applications: ${err.message}`); }
}

async function portalLink(appId) {
  try {
    const link = await api(`api/webhooks/apps/${encodeURIComponent(appId)}/portal`, { ...JSON_POST, body: "{}" });
    const a = Object.assign(document.createElement("a"), { href: link.url, target: "_blank", rel: "noopener", textContent: "open the portal" });
    $("portal-result").replaceChildren(`${appId}: `, a, ` (until ${new Date(link.expires_at * 1000).toLocaleTimeString()})`);
  } catch (err) { showError(`portal: ${err.message}`); }
}

async function revokePortal(appId) {
  try {
    await api(`api/webhooks/apps/${encodeURIComponent(appId)}/portal`, { method: "DELETE" });
    $("portal-result").replaceChildren(`${appId}: every portal link made so far is revoked`);
  } catch (err) { showError(`portal: ${err.message}`); }
}

async function setArchived(name, archived) {
  try {
    await api(`api/webhooks/event-types/${encodeURIComponent(name)}`, {
      method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ archived }),
    });
    await refreshApps();
  } catch (err) { showError(`event type: ${err.message}`); }
}

async function createApp(event) {
  event.preventDefault();
  const body = { name: $("app-name").value.trim() };
  if ($("app-id").value.trim()) body.id = $("app-id").value.trim();
  try {
    await api("api/webhooks/apps", { ...JSON_POST, body: JSON.stringify(body) });
    $("app-form").reset();
    showError("");
    await refreshApps();
  } catch (err) { showError(`application: ${err.message}`); }
}

async function createEventType(event) {
  event.preventDefault();
  const body = { name: $("event-type-name").value.trim(), description: $("event-type-description").value };
  if ($("event-type-schema").value.trim()) {
    try { body.schema = JSON.parse($("event-type-schema").value); }
    catch { showError("event type: the schema is not valid JSON"); return; }
  }
  try {
    await api("api/webhooks/event-types", { ...JSON_POST, body: JSON.stringify(body) });
    $("event-type-form").reset();
    showError("");
    await refreshApps();
  } catch (err) { showError(`event type: ${err.message}`); }
}

// Wiring ----------------------------------------------------------------------------------------

$("key").value = key;
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("tidings-admin-key", key);
  connect();
});
$("history-form").addEventListener("submit", (event) => { event.preventDefault(); readHistory(); });
$("presence-form").addEventListener("submit", (event) => { event.preventDefault(); readPresence(); });
$("publish-form").addEventListener("submit", publish);
$("app-form").addEventListener("submit", createApp);
$("event-type-form").addEventListener("submit", createEventType);
fetch("api/admin/auth").then((r) => r.json()).then(({ key_required }) => {
  if (key || !key_required) connect();
  else { setStatus("disconnected", "enter the admin API key"); $("key").focus(); }
});
