// Publishing from a Node backend with the built-in fetch (Node 18+): one
// user (every tab of theirs), a group (every user whose id starts with a
// prefix), a topic. Run: PUSHWIRE_URL=http://127.0.0.1:8080 PUSHWIRE_KEY=... node publish.mjs
const hub = process.env.PUSHWIRE_URL ?? "http://127.0.0.1:8080";
const key = process.env.PUSHWIRE_KEY;

async function publish(event) {
  const response = await fetch(`${hub}/api/v1/publish`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      ...(key ? { Authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify(event),
  });
  const answer = await response.json();
  if (!response.ok) {
    // {"error": {"code", "message"}}: nothing was stored.
    throw new Error(`pushwire refused the event: ${answer.error.code}: ${answer.error.message}`);
  }
  return answer.id;
}

const ids = [
  await publish({ to: { users: ["alice"] }, event: "order", data: "order 42 shipped" }),
  await publish({ to: { user_prefix: "team-7/" }, data: "standup in 5" }),
  await publish({ to: { topics: ["prices/EURCNY"] }, data: { bid: 7.81 } }),
];
console.log(ids.join("\n"));
