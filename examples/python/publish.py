"""Publishing from a Python backend with the standard library: one user
(every tab of theirs), a group (every user whose id starts with a prefix),
a topic. Run: PUSHWIRE_URL=http://127.0.0.1:8080 PUSHWIRE_KEY=... python3 publish.py
"""
import json
import os
import urllib.error
import urllib.request

HUB = os.environ.get("PUSHWIRE_URL", "http://127.0.0.1:8080")
KEY = os.environ.get("PUSHWIRE_KEY")


def publish(event):
    headers = {"Content-Type": "application/json"}
    if KEY:
        headers["Authorization"] = f"Bearer {KEY}"
    request = urllib.request.Request(
        f"{HUB}/api/v1/publish", data=json.dumps(event).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["id"]
    except urllib.error.HTTPError as refused:
        # {"error": {"code", "message"}}: nothing was stored.
        error = json.load(refused)["error"]
        raise SystemExit(f"pushwire refused the event: {error['code']}: {error['message']}")


ids = [
    publish({"to": {"users": ["alice"]}, "event": "order", "data": "order 42 shipped"}),
    publish({"to": {"user_prefix": "team-7/"}, "data": "standup in 5"}),
    publish({"to": {"topics": ["prices/EURCNY"]}, "data": {"bid": 7.81}}),
]
print("\n".join(ids))
