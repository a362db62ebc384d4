"""The endpoint pushwire's --webhook-url posts to: it verifies each message
(Standard Webhooks: the webhook-id, webhook-timestamp and webhook-signature
headers), acts on it once, and answers 204 quickly.
Run: PUSHWIRE_WEBHOOK_SECRET=whsec_... PORT=3000 python3 webhook_receiver.py
and start the hub with --webhook-url http://127.0.0.1:3000/webhooks and the
same --webhook-secret.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("PUSHWIRE_WEBHOOK_SECRET", "")
if not SECRET.startswith("whsec_"):
    sys.exit("PUSHWIRE_WEBHOOK_SECRET must be whsec_<base64>")
KEY = base64.b64decode(SECRET[len("whsec_"):])
PORT = int(os.environ.get("PORT", "3000"))
TOLERANCE = 5 * 60  # seconds between the hub's clock and ours

# The ids already handled. The hub sends a message again until it gets a
# 2xx, with the same webhook-id: an application keeps these in its database
# (a unique key), for longer than the hub retries.
HANDLED = set()
HANDLED_LOCK = threading.Lock()


def verified(message_id, timestamp, signatures, body):
    """Whether one of the space-separated "v1,<base64>" signatures is ours."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest())
    return any(
        entry.startswith("v1,") and hmac.compare_digest(entry[3:].encode(), expected)
        for entry in signatures.split(" ")
    )


def act(message):
    """Where the application acts. Anything slow (an e-mail, a mobile push)
    goes to a job queue: the hub waits for the answer and retries on a
    timeout."""
    kind = message["type"]  # and message["data"], as below
    if kind == "user.online":  # {user}
        pass
    elif kind == "user.offline":  # {user}
        pass
    elif kind == "stream.opened":  # {user (or None), route, stream}
        pass
    elif kind == "stream.closed":  # {user, route, stream, reason, duration_ms}
        pass
    elif kind == "event.undelivered":  # {event: {id, type, data, truncated}, users}
        # These users did not get the event: send them an e-mail or a mobile push.
        pass


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/webhooks":
            self.answer(404)
            return
        # The signature covers the body's bytes exactly as sent: verify them
        # before parsing.
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        message_id = self.headers.get("webhook-id")
        timestamp = self.headers.get("webhook-timestamp")
        signatures = self.headers.get("webhook-signature")
        if message_id is None or timestamp is None or signatures is None:
            self.answer(400)
            return
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or abs(time.time() - int(timestamp)) > TOLERANCE
            or not verified(message_id, timestamp, signatures, body)
        ):
            self.answer(401)
            return
        # One lock from the check to the record, so that two deliveries of
        # one id at once are not both acted on.
        with HANDLED_LOCK:
            if message_id in HANDLED:
                self.answer(204)  # a retry of a message already handled
                return
            try:
                message = json.loads(body)
            except ValueError:
                self.answer(400)
                return
            act(message)
            HANDLED.add(message_id)
            line = {"id": message_id, "type": message["type"], "data": message["data"]}
            print(json.dumps(line), flush=True)
        self.answer(204)

    def answer(self, status):
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Receiver)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
