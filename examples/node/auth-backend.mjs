// The endpoint pushwire's --auth-url calls before it opens a stream: it
// reads the application's own session cookie and answers for the session.
// Run: SESSIONS='{"s3cr3t": "alice"}' PORT=3000 node auth-backend.mjs
// and start the hub with --auth-url http://127.0.0.1:3000/pushwire/auth
import { createServer } from "node:http";

const sessions = JSON.parse(process.env.SESSIONS ?? "{}"); // session id -> user id
const port = Number(process.env.PORT ?? 3000);

function sessionUser(cookieHeader) {
  for (const part of (cookieHeader ?? "").split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === "session") return sessions[value.join("=")];
  }
  return undefined;
}

createServer((request, response) => {
  if (request.method !== "POST" || request.url !== "/pushwire/auth") {
    response.writeHead(404).end();
    return;
  }
  let body = "";
  request.on("data", (chunk) => (body += chunk));
  request.on("end", () => {
    // What pushwire asks: route, user, topics, last_event_id, client, and
    // the forwarded headers (cookie, authorization).
    const ask = JSON.parse(body);
    const user = sessionUser(ask.headers.cookie);
    if (!user) {
      response.writeHead(401).end();
      return;
    }
    response.writeHead(200, { "Content-Type": "application/json" });
    response.end(JSON.stringify({ user, topics: ["news", `orders/${user}/*`], expires_in: 3600 }));
  });
}).listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
