"""The endpoint pushwire's --auth-url calls before it opens a stream: it
reads the application's own session cookie and answers for the session.
Run: SESSIONS='{"s3cr3t": "alice"}' PORT=3000 python3 auth_backend.py
and start the hub with --auth-url http://127.0.0.1:3000/pushwire/auth
"""
import json
import os
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SESSIONS = json.loads(os.environ.get("SESSIONS", "{}"))  # session id -> user id
PORT = int(os.environ.get("PORT", "3000"))


class Auth(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/pushwire/auth":
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length", "0"))
        # What pushwire asks: route, user, topics, last_event_id, client,
        # and the forwarded headers (cookie, authorization).
        ask = json.loads(self.rfile.read(length))
        cookie = SimpleCookie(ask["headers"].get("cookie", ""))
        user = SESSIONS.get(cookie["session"].value) if "session" in cookie else None
        if user is None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"user": user, "topics": ["news", f"orders/{user}/*"], "expires_in": 3600})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Auth)
print(f"listening on 127.0.0.1:{PORT}", flush=True)
server.serve_forever()
