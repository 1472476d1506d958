#!/usr/bin/env python3
"""A webhook for the gateway's forwarded pushes, as your server runs it: each post's signature
checked (HMAC-SHA256 of the timestamp, a full stop and the body, in constant time, the timestamp
within five minutes), each event handled once (the gateway delivers at least once: de-duplicate
by X-Subscribe-Delivery), answered 204. Standard library only.
Environment: WEBHOOK_SECRET; PORT (0: any free port, printed); EVENTS (stop after that many
events, for a test; none: serve until stopped)."""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode()
seen = set()


def signed(headers, body):
    """Whether the gateway signed this body, within the last five minutes."""
    timestamp = headers.get("X-Subscribe-Timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = "v1=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("X-Subscribe-Signature", ""))


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not signed(self.headers, body):
            print("refused: not signed by the gateway", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        delivery = json.loads(body)
        if delivery["delivery"] not in seen:  # a redelivery after a lost answer: handled once
            seen.add(delivery["delivery"])
            event = delivery["event"]
            print(f"{delivery['appid']} #{delivery['seq']}: {event['event']} from {event['from_user']}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Webhook)
print(f"listening on {server.server_address[1]}", flush=True)
wanted = int(os.environ["EVENTS"]) if "EVENTS" in os.environ else None
while wanted is None or len(seen) < wanted:
    server.handle_request()
sys.exit(0)
