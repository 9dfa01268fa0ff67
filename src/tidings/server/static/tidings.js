// tidings.js: the browser client of tidings. One dependency-free ES module.
//
//   import { Tidings } from "/static/tidings.js";
//   const client = new Tidings("http://127.0.0.1:8600", { token });
//   const sub = client.subscribe("chat:lobby");
//   sub.on("publication", (pub) => console.log(pub.data));
//   sub.on("gap", (gap) => console.warn("missed", gap));
//   await client.publish("chat:lobby", { text: "hi" });   // WebSocket only
//
// Transports are tried in order (default: WebSocket, SSE, long polling, short polling). When one
// fails to connect (blocked, disabled, or refused by a proxy) the client falls back to the next,
// resuming from the last position it saw on every channel, so a switch loses nothing and repeats
// nothing. Publications are deduplicated by (epoch, offset). A transport that worked and dropped
// is reconnected with exponential backoff and full jitter.
//
// Besides the defaults, "stream" (HTTP streaming, NDJSON over fetch) may be named in
// `transports`. `client.stats` counts what the client did on the wire: {requests, bytes,
// messages, reconnects}; bytes are what the page can see: message bodies and frames plus response
// headers (not request headers, TCP or TLS).
//
// Delta updates: `new Tidings(url, { delta: "fossil" })` asks for them on every subscription (the
// channels' namespaces must allow them, `namespaces.NAME.delta = true`) over "ws", "sse" and
// "stream"; the client applies each delta to the previous publication's data, so the "publication"
// handlers see full publications as ever. `client.stats.deltas` counts the deltas applied.

const DEFAULT_TRANSPORTS = ["ws", "sse", "longpoll", "poll"];
const encoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** Bytes of a response's status line and headers, as far as fetch() shows them. */
function headerBytes(response) {
  let n = 17;  // "HTTP/1.1 200 OK\r\n"
  for (const [name, value] of response.headers) n += name.length + value.length + 4;
  return n + 2;
}

function b64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The cursor token of one channel position (docs/reference/protocol.md, "Cursors"). */
export function cursorToken(channel, position) {
  return b64url(`${position.offset}:${position.epoch}:${channel}`);
}

/** Positions by channel from a cursor: {channel: {epoch, offset}}. */
export function decodeCursor(cursor) {
  const out = {};
  for (const token of (cursor || "").split(".").filter(Boolean)) {
    const padded = token.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((token.length + 3) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const [offset, epoch, ...rest] = new TextDecoder().decode(bytes).split(":");
    out[rest.join(":")] = { epoch, offset: Number(offset) };
  }
  return out;
}

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) { this._handlers.get(event)?.delete(fn); }
  emit(event, value) {
    for (const fn of [...(this._handlers.get(event) || [])]) {
      try { fn(value); } catch (err) { console.error(err); }
    }
  }
}

/** One channel's subscription: emits "publication", "gap", "subscribed", "join", "leave". */
export class Subscription extends Emitter {
  constructor(client, channel, since) {
    super();
    this.client = client;
    this.channel = channel;
    this.position = since || null;   // {epoch, offset} of the last publication seen
    this._deltaBase = null;          // the last publication's data text (bytes), for a delta
  }
  unsubscribe() { this.client._unsubscribe(this); }

  _accept(pub) {
    const pos = this.position;
    if (pos && pos.epoch === pub.epoch && pub.offset <= pos.offset) return;  // seen already
    this.position = { epoch: pub.epoch, offset: pub.offset };
    this.emit("publication", pub);
  }
  /** `msg` with its delta applied (delta updates); `raw` is the JSON text it was parsed from. */
  _undelta(msg, raw) {
    if (msg.delta !== true) {
      this._deltaBase = raw == null ? null : encoder.encode(dataText(raw));
      return msg;
    }
    if (!this._deltaBase) throw new Error("a delta without the publication it applies to");
    const text = applyFossilDelta(this._deltaBase, encoder.encode(msg.data));
    this._deltaBase = text;
    const { delta, ...rest } = msg;
    return { ...rest, data: JSON.parse(textDecoder.decode(text)) };
  }
  _gap(gap) {
    // History could not cover the resume: continue from what survived (or from the present).
    const latest = this.latest && this.latest.epoch === gap.epoch ? this.latest.offset : 0;
    const from = gap.available_from ?? latest + 1;
    const pos = this.position;
    if (!pos || pos.epoch !== gap.epoch || pos.offset < from - 1) {
      this.position = { epoch: gap.epoch, offset: from - 1 };   // never back: no repeats
    }
    this.emit("gap", gap);
  }
  _fresh(position) {
    // Where the channel stands now; adopted only by a subscription that has seen nothing yet.
    this.latest = { ...position };
    if (!this.position) this.position = { ...position };
  }
}

/** The client. Emits "state" ({state, transport}), "error" and "transport". */
export class Tidings extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = (url || location.origin).replace(/\/$/, "");
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.transports = options.transports || DEFAULT_TRANSPORTS;
    this.pollInterval = options.pollInterval ?? 1000;
    this.longPollTimeout = options.longPollTimeout ?? 25;
    this.minBackoff = options.minBackoff ?? 250;
    this.maxBackoff = options.maxBackoff ?? 10000;
    this.delta = options.delta === true ? "fossil" : options.delta || null;
    this.subs = new Map();
    this.state = "idle";
    this.transport = null;
    this._index = 0;
    this._attempt = 0;
    this._conn = null;
    this._closed = false;
    this._refs = 0;
    this._pending = new Map();
    this._timer = null;
    this._everConnected = false;
    this.clientId = null;   // the server's id of this connection (WebSocket only)
    this.stats = { requests: 0, bytes: 0, messages: 0, reconnects: 0, deltas: 0 };
  }

  /** Subscribe to `channel`; `options.since` ({epoch, offset}) resumes after a known position. */
  subscribe(channel, options = {}) {
    if (this.subs.has(channel)) return this.subs.get(channel);
    const sub = new Subscription(this, channel, options.since);
    this.subs.set(channel, sub);
    if (this.state === "idle") this._connect();
    else this._conn?.subscribed(sub);
    return sub;
  }

  /** Publish over the WebSocket connection; resolves with {channel, offset, epoch, id}. */
  publish(channel, data, event = "message") {
    return this._request({ op: "publish", channel, data, event });
  }

  /** Call the application's backend through the server's rpc proxy (WebSocket only);
   *  resolves with the result's data, rejects with an Error carrying the backend's `code`. */
  async rpc(method, data = null) {
    return (await this._request({ op: "rpc", method, data })).data;
  }

  /** The clients present in `channel` (WebSocket only). */
  async presence(channel) {
    return (await this._request({ op: "presence", channel })).clients;
  }

  /** Publications of `channel` from history, oldest first (WebSocket only).
   *  `options.since` ({epoch, offset}) reads after a position, else the latest `options.limit`. */
  async history(channel, options = {}) {
    const command = { op: "history", channel };
    if (options.since) command.since = options.since;
    if (options.limit) command.limit = options.limit;
    return (await this._request(command)).publications;
  }

  /** What the server wrote for each publication sent on this WebSocket connection since the
   *  last call (the first call starts counting and returns none): resolves with
   *  {counted, messages: [{channel, offset, wire, uncompressed, full, compressed, delta}]}, in
   *  frame bytes (header included). A page cannot see compressed sizes (the browser inflates
   *  before onmessage); `counted` is false where the server cannot either (under an ASGI server). */
  wireStats() {
    return this._request({ op: "wire_stats" });
  }

  /** The current cursor over every subscribed channel (for the HTTP transports). */
  cursor() {
    const tokens = [];
    for (const sub of this.subs.values()) {
      if (sub.position) tokens.push(cursorToken(sub.channel, sub.position));
    }
    return tokens.join(".");
  }

  close() {
    this._closed = true;
    clearTimeout(this._timer);
    this._conn?.close();
    this._conn = null;
    this._setState("closed");
  }

  _unsubscribe(sub) {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    this._conn?.unsubscribed(sub);
  }

  _request(command) {
    if (!(this._conn instanceof WSConnection) || !this._conn.open) {
      return Promise.reject(new Error(`${command.op} needs a WebSocket connection (now: ${this.transport || "none"})`));
    }
    const ref = ++this._refs;
    return new Promise((resolve, reject) => {
      this._pending.set(ref, { resolve, reject });
      this._conn.send({ ...command, ref });
    });
  }

  _settle(msg) {
    const pending = this._pending.get(msg.ref);
    if (!pending) return false;
    this._pending.delete(msg.ref);
    if (msg.op === "error") pending.reject(Object.assign(new Error(msg.message), { code: msg.code }));
    else pending.resolve(msg);
    return true;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state, transport: this.transport });
  }

  async _tokenNow() {
    if (this.getToken) this.token = await this.getToken();
    return this.token;
  }

  _connect() {
    if (this._closed) return;
    const name = this.transports[this._index];
    const Kind = { ws: WSConnection, sse: SSEConnection, stream: StreamConnection,
                   longpoll: LongPollConnection, poll: ShortPollConnection }[name];
    if (this._everConnected) this.stats.reconnects += 1;
    for (const sub of this.subs.values()) sub._deltaBase = null;  // a new connection starts in full
    this.transport = name;
    this._setState("connecting");
    this._conn = new Kind(this);
    this._conn.start();
  }

  // Called by connections.
  _opened() {
    this._attempt = 0;
    this._everConnected = true;
    this._setState("connected");
    this.emit("transport", this.transport);
  }

  _failed(everOpened, reason) {
    if (this._closed) return;
    for (const { reject } of this._pending.values()) reject(new Error("connection lost"));
    this._pending.clear();
    this._conn = null;
    this.emit("error", { transport: this.transport, reason });
    if (!everOpened && this._index < this.transports.length - 1) {
      this._index += 1;     // blocked or disabled: fall back at once, resuming from the cursor
      this._setState("fallback");
      this._connect();
      return;
    }
    this._setState("disconnected");
    const cap = Math.min(this.maxBackoff, this.minBackoff * 2 ** this._attempt++);
    this._timer = setTimeout(() => this._connect(), Math.random() * cap);  // full jitter
  }

  _publication(pub, raw) {
    this.stats.messages += 1;
    const sub = this.subs.get(pub.channel);
    if (!sub) return;
    if (this.delta) {
      const isDelta = pub.delta === true;
      try {
        pub = sub._undelta(pub, raw);
      } catch (err) {
        // Cannot happen with a sound server; a new connection starts with full publications.
        const conn = this._conn;
        conn?.close();
        if (conn) this._failed(true, `delta: ${err.message}`);
        return;
      }
      if (isDelta) this.stats.deltas += 1;
    }
    sub._accept(pub);
  }
  _counted(bytes) { this.stats.bytes += bytes; }
  _gap(gap) { this.subs.get(gap.channel)?._gap(gap); }
  _ready(channels) {
    for (const [name, position] of Object.entries(channels || {})) this.subs.get(name)?._fresh(position);
  }
}

class WSConnection {
  constructor(client) { this.client = client; this.open = false; this.ws = null; this.everOpened = false; }

  async start() {
    const token = await this.client._tokenNow();
    const url = this.client.url.replace(/^http/, "ws") + "/ws" + (token ? `?token=${encodeURIComponent(token)}` : "");
    let ws;
    this.client.stats.requests += 1;
    try { ws = new WebSocket(url); } catch (err) { this.client._failed(false, String(err)); return; }
    this.ws = ws;
    ws.onopen = () => {
      this.open = this.everOpened = true;
      this.client._opened();
      // Learn this connection's id (for presence); a token already given is simply refreshed.
      this.send({ op: "connect", ref: ++this.client._refs, ...(token ? { token } : {}) });
      for (const sub of this.client.subs.values()) this.subscribed(sub);
    };
    ws.onmessage = (event) => {
      this.client._counted(frameBytes(event.data));
      this._message(JSON.parse(event.data), event.data);
    };
    ws.onclose = (event) => {
      this.open = false;
      if (this.ws !== ws) return;
      this.ws = null;
      this.client._failed(this.everOpened, `closed ${event.code} ${event.reason}`);
    };
  }

  send(command) {
    if (!this.ws) return;
    const text = JSON.stringify(command);
    this.client._counted(frameBytes(text) + 4);  // client frames are masked: 4 more bytes
    this.ws.send(text);
  }

  subscribed(sub) {
    if (!this.open) return;
    const cmd = { op: "subscribe", channel: sub.channel, ref: ++this.client._refs };
    if (sub.position) cmd.since = sub.position;
    if (this.client.delta) {
      sub._deltaBase = null;  // a new subscription starts with a full publication
      cmd.delta = this.client.delta;
    }
    this.send(cmd);
  }

  unsubscribed(sub) { if (this.open) this.send({ op: "unsubscribe", channel: sub.channel }); }

  _message(msg, raw) {
    const client = this.client;
    switch (msg.op) {
      case "message": client._publication(msg, raw); break;
      case "subscribed": {
        const sub = client.subs.get(msg.channel);
        if (!sub) break;
        sub._fresh({ epoch: msg.epoch, offset: msg.offset });
        if (!msg.recovered && "requested" in msg) {
          sub._gap({ channel: msg.channel, epoch: msg.epoch, requested: msg.requested, available_from: msg.available_from });
        }
        sub.emit("subscribed", msg);
        break;
      }
      case "join": case "leave": client.subs.get(msg.channel)?.emit(msg.op, msg.client); break;
      case "connected": client.clientId = msg.client; client._settle(msg); break;
      case "gap": client._gap(msg); break;   // the server's broker link lost publications
      default: if (!client._settle(msg) && msg.op === "error") client.emit("error", msg);
    }
  }

  close() { const ws = this.ws; this.ws = null; ws?.close(1000); }
}

/** Bytes of one WebSocket text frame carrying `text` (header + UTF-8 payload). */
function frameBytes(text) {
  const n = encoder.encode(text).length;
  return n + (n < 126 ? 2 : n < 65536 ? 4 : 10);
}

/** Shared by the HTTP transports: query strings with every channel and the cursor. */
function httpQuery(client, extra = {}) {
  const params = new URLSearchParams();
  for (const name of client.subs.keys()) params.append("channel", name);
  const cursor = client.cursor();
  if (cursor) params.set("cursor", cursor);
  for (const [k, v] of Object.entries(extra)) params.set(k, String(v));
  return params;
}

async function httpHeaders(client) {
  const token = await client._tokenNow();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** fetch() a streaming response and hand its lines to `onLine`; counts requests and bytes. */
async function readLines(conn, path, accept, type, onLine) {
  const client = conn.client;
  const headers = { Accept: accept, ...(await httpHeaders(client)) };
  // The query is built after an await: subscribe() calls made in the same task are all in it.
  client.stats.requests += 1;
  const query = httpQuery(client, client.delta ? { delta: client.delta } : {});
  const response = await fetch(`${client.url}${path}?${query}`, {
    headers, signal: conn.abort.signal, cache: "no-store",
  });
  if (!response.ok || !(response.headers.get("content-type") || "").startsWith(type)) {
    throw new Error(`${path} refused: ${response.status}`);
  }
  client._counted(headerBytes(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    client._counted(value.byteLength);
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) onLine(line);
  }
}

/** Shared by the streaming transports: run until the stream ends, then report why. */
class StreamingConnection {
  constructor(client) { this.client = client; this.abort = new AbortController(); this.everOpened = false; }

  async start() {
    let reason = "ended";
    try {
      await this.read();
    } catch (err) {
      reason = String(err);
      if (this.abort.signal.aborted) return;
    }
    if (!this.abort.signal.aborted) this.client._failed(this.everOpened, reason);
  }

  _readyNotice(payload) {
    this.everOpened = true;
    this.client._opened();
    this.client._ready(payload.channels);
    if (this.changed) this._restart();  // channels changed while this stream was opening
  }

  // A changed channel set needs a new stream (resuming from the cursor).
  subscribed() { this._restart(); }
  unsubscribed() { this._restart(); }
  _restart() {
    if (!this.everOpened) { this.changed = true; return; }
    this.close();
    this.client._conn = null;
    this.client._connect();
  }
  close() { this.abort.abort(); }
}

class SSEConnection extends StreamingConnection {
  // fetch() + a streaming parser rather than EventSource: publications carry their own event
  // names, which EventSource would only deliver to listeners registered for each name, and the
  // token can travel in a header.
  read() {
    let event = "message", data = [];
    return readLines(this, "/sse", "text/event-stream", "text/event-stream", (line) => {
      if (line === "") {
        if (data.length) this._event(event, data.join("\n"));
        event = "message"; data = [];
      } else if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
      else if (line.startsWith("event:")) event = line.slice(line[6] === " " ? 7 : 6);
    });
  }

  _event(name, text) {
    const payload = JSON.parse(text);
    if (name === "ready") this._readyNotice(payload);
    else if (name === "gap") this.client._gap(payload);
    else if (name !== "disconnect") this.client._publication(payload, text);
  }
}

class StreamConnection extends StreamingConnection {
  // HTTP streaming: one JSON object per line; notices carry "op", publications do not.
  read() {
    return readLines(this, "/stream", "application/x-ndjson", "application/x-ndjson", (line) => {
      if (!line.trim()) return;
      const msg = JSON.parse(line);
      if (msg.op === "ready") this._readyNotice(msg);
      else if (msg.op === "gap") this.client._gap(msg);
      else if (msg.op === undefined) this.client._publication(msg, line);
    });
  }
}

class LongPollConnection {
  constructor(client, timeout) {
    this.client = client;
    this.timeout = timeout ?? client.longPollTimeout;
    this.abort = new AbortController();
    this.everOpened = false;
    this.etag = null;
  }

  async start() {
    const client = this.client;
    while (!this.abort.signal.aborted) {
      if (client.subs.size === 0) { await this._sleep(200); continue; }
      let response;
      try {
        const headers = await httpHeaders(client);
        if (this.etag && this.timeout === 0) headers["If-None-Match"] = this.etag;
        client.stats.requests += 1;
        response = await fetch(`${client.url}/poll?${httpQuery(client, { timeout: this.timeout })}`,
          { headers, signal: this.abort.signal, cache: "no-store" });
      } catch (err) {
        if (!this.abort.signal.aborted) client._failed(this.everOpened, String(err));
        return;
      }
      if (response.status !== 200 && response.status !== 304) {
        client._failed(this.everOpened, `poll refused: ${response.status}`);
        return;
      }
      if (!this.everOpened) { this.everOpened = true; client._opened(); }
      client._counted(headerBytes(response));
      if (response.status === 200) {
        this.etag = response.headers.get("ETag");
        const text = await response.text();
        client._counted(encoder.encode(text).length);
        const body = JSON.parse(text);
        for (const gap of body.gaps || []) client._gap(gap);
        for (const pub of body.messages || []) client._publication(pub);
        if (body.cursor) client._ready(decodeCursor(body.cursor));
      }
      if (this.timeout === 0) await this._sleep(client.pollInterval);
    }
  }

  _sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
  subscribed() {}
  unsubscribed() {}
  close() { this.abort.abort(); }
}

class ShortPollConnection extends LongPollConnection {
  constructor(client) { super(client, 0); }
}

// Delta updates ------------------------------------------------------------------------------------

/** The JSON text of `data` in a publication message: every field before it is a scalar, so the
 *  first ',"data":' is its key; at most a cursor field follows it. */
function dataText(raw) {
  const start = raw.indexOf(',"data":') + 8;
  const end = raw.lastIndexOf(',"cursor":"');
  return raw.slice(start, end > start ? end : raw.lastIndexOf("}"));
}

const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
const DIGIT_VALUE = new Map([...DIGITS].map((c, i) => [c.charCodeAt(0), i]));

/** The 32-bit sum of `bytes` as big-endian words (the last one padded with zeros). */
function fossilChecksum(bytes) {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 4) {
    const word = ((bytes[i] << 24) | ((bytes[i + 1] ?? 0) << 16) | ((bytes[i + 2] ?? 0) << 8) | (bytes[i + 3] ?? 0)) >>> 0;
    sum = (sum + word) >>> 0;
  }
  return sum;
}

/** `source` (bytes) changed by a fossil `delta` (bytes), the format of Fossil's delta.c that
 *  tidings sends; throws if the delta is malformed or does not apply to `source`. */
export function applyFossilDelta(source, delta) {
  let pos = 0;
  const int = () => {
    const start = pos;
    let value = 0;
    while (pos < delta.length && DIGIT_VALUE.has(delta[pos])) value = value * 64 + DIGIT_VALUE.get(delta[pos++]);
    if (pos === start) throw new Error("bad delta: a number expected");
    return value;
  };
  const size = int();
  if (delta[pos++] !== 10) throw new Error("bad delta: size not followed by a newline");
  const out = new Uint8Array(size);
  let n = 0;
  for (;;) {
    const count = int();
    const op = delta[pos++];
    if (op === 64) {  // "@": copy from the source
      const offset = int();
      if (delta[pos++] !== 44) throw new Error("bad delta: copy not followed by a comma");
      if (n + count > size || offset + count > source.length) throw new Error("bad delta: copy out of range");
      out.set(source.subarray(offset, offset + count), n);
      n += count;
    } else if (op === 58) {  // ":": literal bytes
      if (n + count > size || pos + count > delta.length) throw new Error("bad delta: insert out of range");
      out.set(delta.subarray(pos, pos + count), n);
      n += count;
      pos += count;
    } else if (op === 59) {  // ";": the end, with the checksum
      if (n !== size || count !== fossilChecksum(out)) throw new Error("bad delta: checksum mismatch");
      return out;
    } else {
      throw new Error("bad delta: unknown operator");
    }
  }
}
