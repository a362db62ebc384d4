// Subscribes to the hub with the `eventsource` package, a WHATWG
// EventSource for Node, and prints every event it dispatches as one JSON
// line on stdout: {"id": lastEventId, "type": event type, "data": data}.
// Diagnostics go to stderr. Run by tests/interop.rs.
//
//   node subscribe.mjs --hub http://127.0.0.1:8080/.well-known/mercure \
//     --topic 'https://example.com/books/{id}' --count 2 \
//     [--token JWT] [--last-event-id ID] [--type NAME]... [--timeout-ms 15000]
//
// Selectors of either generation of the protocol, in any mix: --topic
// (classic), --match and --match-urlpattern (current draft), each
// repeatable; at least one is required.
//
// --token goes out as `Authorization: Bearer` through the client's `fetch`
// option; --last-event-id as the `Last-Event-ID` header of the first
// request (the client sends its own on reconnection). Events with a type
// are dispatched under that name only, so each --type gets a listener.
//
// Exit status: 0 after --count events, 1 when they do not all come within
// --timeout-ms, 2 when the client gives up (e.g. a 401), 64 on bad usage.

import { parseArgs } from "node:util";
import { EventSource } from "eventsource";

function usage(problem) {
  process.stderr.write(`subscribe.mjs: ${problem}\n`);
  process.exit(64);
}

let options;
try {
  ({ values: options } = parseArgs({
    options: {
      hub: { type: "string" },
      topic: { type: "string", multiple: true, default: [] },
      match: { type: "string", multiple: true, default: [] },
      "match-urlpattern": { type: "string", multiple: true, default: [] },
      token: { type: "string" },
      "last-event-id": { type: "string" },
      type: { type: "string", multiple: true, default: [] },
      count: { type: "string" },
      "timeout-ms": { type: "string", default: "15000" },
    },
  }));
} catch (err) {
  usage(err.message);
}

const count = Number(options.count);
const timeoutMs = Number(options["timeout-ms"]);
if (!options.hub) usage("--hub is required");
if (options.topic.length + options.match.length + options["match-urlpattern"].length === 0) {
  usage("at least one --topic, --match or --match-urlpattern is required");
}
if (!Number.isInteger(count) || count < 1) usage("--count must be a positive integer");
if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage("--timeout-ms must be positive");

const url = new URL(options.hub);
for (const topic of options.topic) url.searchParams.append("topic", topic);
for (const match of options.match) url.searchParams.append("match", match);
for (const pattern of options["match-urlpattern"]) url.searchParams.append("match_urlpattern", pattern);

const token = options.token;
const firstLastEventId = options["last-event-id"];
const source = new EventSource(url, {
  fetch: (input, init) => {
    const headers = { ...init.headers };
    if (token) headers.Authorization = `Bearer ${token}`;
    // The client's own Last-Event-ID (set once it has seen an id) wins.
    if (firstLastEventId !== undefined && headers["Last-Event-ID"] === undefined) {
      headers["Last-Event-ID"] = firstLastEventId;
    }
    return fetch(input, { ...init, headers });
  },
});

let received = 0;
const timer = setTimeout(() => {
  process.stderr.write(`timed out after ${timeoutMs} ms with ${received} of ${count} events\n`);
  process.exit(1);
}, timeoutMs);

function print(event) {
  if (received >= count) return;
  received += 1;
  const line = JSON.stringify({ id: event.lastEventId, type: event.type, data: event.data }) + "\n";
  if (received < count) {
    process.stdout.write(line);
    return;
  }
  source.close();
  clearTimeout(timer);
  process.stdout.write(line, () => process.exit(0));
}

for (const type of new Set(["message", ...options.type])) source.addEventListener(type, print);
source.addEventListener("open", () => process.stderr.write("open\n"));
source.addEventListener("error", (event) => {
  const code = event.code === undefined ? "" : ` (HTTP ${event.code})`;
  process.stderr.write(`error${code}: ${event.message ?? "connection lost"}\n`);
  if (source.readyState === EventSource.CLOSED) {
    process.stderr.write(`the client gave up after ${received} of ${count} events\n`);
    process.exit(2);
  }
});
