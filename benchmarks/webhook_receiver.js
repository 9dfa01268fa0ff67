// A webhook receiver for benchmarks/webhooks.py that costs next to nothing: Node's http server on
// N loopback ports (one per endpoint), answering 200 with an empty body and counting.
//
//   node benchmarks/webhook_receiver.js N
//
// Prints the ports as one JSON line, then answers one JSON line per command read on stdin:
//   stats                  {taken, requests, last_first, per_port: [taken...]}
//   latencies              ... plus "latencies": publish -> first arrival in ms (body's "time")
//   arrivals I             ... plus "arrivals": the first-arrival times (s) at port index I
//   path P                 ... plus "path": the first-arrival times (s) at path P (any port)
//   reset                  forget everything (and every mode below)
//   fail / ok              every port answers 503 / 200
//   slow I MS              port index I answers after MS milliseconds
//   status I CODE          port index I answers CODE (a failing endpoint)
// "taken" counts the distinct (path, port, webhook-id) triples answered 2xx: a retried delivery counts once.
"use strict";
const http = require("http");
const readline = require("readline");

const n = parseInt(process.argv[2] || "1", 10);
let state;
function reset() {
  state = {
    fail: false,
    requests: 0,
    taken: 0,
    lastFirst: 0,
    first: new Map(),
    latencies: [],
    perPort: new Array(n).fill(0),
    arrivals: Array.from({ length: n }, () => []),
    byPath: new Map(),
    slow: new Array(n).fill(0),
    status: new Array(n).fill(0),
  };
}
reset();

function answer(res, code) {
  res.writeHead(code, { "content-length": "0" });
  res.end();
}

function handler(index) {
  return (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      state.requests += 1;
      const code = state.fail ? 503 : state.status[index] || 200;
      const key = req.url + " " + index + " " + req.headers["webhook-id"];
      const now = Date.now() / 1000;
      if (code < 300 && !state.first.has(key)) {
        state.first.set(key, now);
        state.taken += 1;
        state.perPort[index] += 1;
        state.arrivals[index].push(now);
        if (!state.byPath.has(req.url)) state.byPath.set(req.url, []);
        state.byPath.get(req.url).push(now);
        state.lastFirst = Math.max(state.lastFirst, now);
        try {
          state.latencies.push(now * 1000 - JSON.parse(Buffer.concat(chunks)).time);
        } catch (e) {
          // a body without "time" (a test event): no latency
        }
      }
      const delay = state.slow[index];
      if (delay > 0) setTimeout(() => answer(res, code), delay);
      else answer(res, code);
    });
  };
}

async function main() {
  const ports = [];
  for (let i = 0; i < n; i++) {
    const server = http.createServer({ keepAliveTimeout: 60000 }, handler(i));
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    ports.push(server.address().port);
  }
  process.stdout.write(JSON.stringify(ports) + "\n");
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const [cmd, a, b] = line.trim().split(/\s+/);
    const extra = {};
    if (cmd === "reset") reset();
    else if (cmd === "fail") state.fail = true;
    else if (cmd === "ok") state.fail = false;
    else if (cmd === "slow") state.slow[parseInt(a, 10)] = parseInt(b, 10);
    else if (cmd === "status") state.status[parseInt(a, 10)] = parseInt(b, 10);
    else if (cmd === "latencies") extra.latencies = state.latencies;
    else if (cmd === "arrivals") extra.arrivals = state.arrivals[parseInt(a, 10)];
    else if (cmd === "path") extra.path = state.byPath.get(a) || [];
    const out = {
      taken: state.taken,
      requests: state.requests,
      last_first: state.lastFirst,
      per_port: state.perPort,
      ...extra,
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  });
  rl.on("close", () => process.exit(0));
}
main();
