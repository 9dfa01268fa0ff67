// Reads publications from a tidings server with delta updates and applies the deltas with the npm
// package fossil-delta, as any JavaScript application would (tests/engines/test_delta_node.py).
// Usage: node --experimental-websocket apply_deltas.mjs FOSSIL_DELTA_PATH BASE_URL CHANNEL N ws|stream
// Prints "ready" once subscribed, then one line per publication: {"offset","delta","data"}.
const [fossilPath, base, channel, count, transport] = process.argv.slice(2);
const { applyDelta } = await import(fossilPath);
const n = Number(count);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let previous = null; // the previous publication's data text, as bytes

// The data text of a message: between the first ',"data":' and the last ',"cursor":"'.
function dataText(raw) {
  const start = raw.indexOf(',"data":') + 8;
  return raw.slice(start, raw.lastIndexOf(',"cursor":"'));
}

let seen = 0;
function onPublication(raw) {
  const message = JSON.parse(raw);
  let data;
  if (message.delta === true) {
    previous = Uint8Array.from(applyDelta(previous, encoder.encode(message.data)));
    data = JSON.parse(decoder.decode(previous));
  } else {
    previous = encoder.encode(dataText(raw));
    data = message.data;
  }
  console.log(JSON.stringify({ offset: message.offset, delta: message.delta === true, data }));
  seen += 1;
  return seen >= n;
}

if (transport === "ws") {
  const ws = new WebSocket(base.replace("http", "ws") + "/ws");
  ws.onopen = () => ws.send(JSON.stringify({ op: "subscribe", ref: 1, channel, delta: "fossil" }));
  ws.onmessage = (event) => {
    const op = JSON.parse(event.data).op;
    if (op === "subscribed") console.log("ready");
    else if (op === "message" && onPublication(event.data)) { ws.close(); process.exit(0); }
  };
  ws.onerror = (e) => { console.error("websocket error", e.message); process.exit(2); };
} else {
  const response = await fetch(`${base}/stream?channel=${encodeURIComponent(channel)}&delta=fossil`);
  const reader = response.body.getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) process.exit(3);
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      const op = JSON.parse(line).op;
      if (op === "ready") console.log("ready");
      else if (op === undefined && onPublication(line)) process.exit(0);
    }
  }
}
