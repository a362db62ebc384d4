// The endpoint pushwire's --webhook-url posts to: it verifies each message
// (Standard Webhooks: the webhook-id, webhook-timestamp and
// webhook-signature headers), acts on it once, and answers 204 quickly.
// Run: PUSHWIRE_WEBHOOK_SECRET=whsec_... PORT=3000 node webhook-receiver.mjs
// and start the hub with --webhook-url http://127.0.0.1:3000/webhooks
// and the same --webhook-secret.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const secret = process.env.PUSHWIRE_WEBHOOK_SECRET ?? "";
if (!secret.startsWith("whsec_")) {
  console.error("PUSHWIRE_WEBHOOK_SECRET must be whsec_<base64>");
  process.exit(2);
}
const key = Buffer.from(secret.slice("whsec_".length), "base64");
const port = Number(process.env.PORT ?? 3000);
const tolerance = 5 * 60; // seconds between the hub's clock and ours

// The ids already handled. The hub sends a message again until it gets a
// 2xx, with the same webhook-id: an application keeps these in its
// database (a unique key), for longer than the hub retries.
const handled = new Set();

// Whether one of the space-separated "v1,<base64>" signatures is ours.
function verified(id, timestamp, signatures, body) {
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), body]);
  const expected = Buffer.from(createHmac("sha256", key).update(signed).digest("base64"));
  return signatures.split(" ").some((entry) => {
    if (!entry.startsWith("v1,")) return false;
    const given = Buffer.from(entry.slice(3));
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

// Where the application acts. Anything slow (an e-mail, a mobile push)
// goes to a job queue: the hub waits for the answer and retries on a
// timeout.
function act(message) {
  switch (message.type) {
    case "user.online": // data: {user}
      break;
    case "user.offline": // data: {user}
      break;
    case "stream.opened": // data: {user (or null), route, stream}
      break;
    case "stream.closed": // data: {user, route, stream, reason, duration_ms}
      break;
    case "event.undelivered": // data: {event: {id, type, data, truncated}, users}
      // These users did not get the event: send them an e-mail or a mobile push.
      break;
  }
}

createServer((request, response) => {
  if (request.method !== "POST" || request.url !== "/webhooks") {
    response.writeHead(404).end();
    return;
  }
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    // The signature covers the body's bytes exactly as sent: verify
    // them before parsing.
    const body = Buffer.concat(chunks);
    const id = request.headers["webhook-id"];
    const timestamp = request.headers["webhook-timestamp"];
    const signatures = request.headers["webhook-signature"];
    if (id === undefined || timestamp === undefined || signatures === undefined) {
      response.writeHead(400).end();
      return;
    }
    const age = Math.floor(Date.now() / 1000) - Number(timestamp);
    if (!/^\d+$/.test(timestamp) || Math.abs(age) > tolerance || !verified(id, timestamp, signatures, body)) {
      response.writeHead(401).end();
      return;
    }
    if (handled.has(id)) {
      response.writeHead(204).end(); // a retry of a message already handled
      return;
    }
    let message;
    try {
      message = JSON.parse(body);
    } catch {
      response.writeHead(400).end();
      return;
    }
    act(message);
    handled.add(id);
    process.stdout.write(JSON.stringify({ id, type: message.type, data: message.data }) + "\n", () =>
      response.writeHead(204).end(),
    );
  });
}).listen(port, "127.0.0.1", function () {
  console.log(`listening on 127.0.0.1:${this.address().port}`);
});
