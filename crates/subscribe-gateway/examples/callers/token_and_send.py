#!/usr/bin/env python3
"""Reads an app's access token from the gateway, then has the gateway send a one-time message,
with an Idempotency-Key so that asking again can never send it twice. Standard library only.
Environment: GATEWAY_URL, GATEWAY_KEY, APPID, OPENID, TEMPLATE_ID, ORDER_ID."""
import json
import os
import sys
import time
import urllib.error
import urllib.request

env = os.environ
api = f"{env['GATEWAY_URL']}/v1/apps/{env['APPID']}"
auth = {"Authorization": f"Bearer {env['GATEWAY_KEY']}"}


def call(path, data=None, headers=None):
    """One request: the status, the headers and the body (None: no answer came)."""
    request = urllib.request.Request(api + path, data=data, headers={**auth, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=35) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read().decode()
    except (urllib.error.URLError, TimeoutError):
        return None, {}, ""


# 1. The token, for the WeChat calls you make yourself. Never print or log it.
status, _, body = call("/access_token")
if status != 200:
    sys.exit(f"token: HTTP {status} {body}")
token = json.loads(body)
print(f"token: valid for {token['expires_in']}s")

# 2. The message: the scene is the one your authorization request carried. The same bytes and
# the same key on every attempt; a retry is safe only so.
key = f"order-{env['ORDER_ID']}/restock"
message = json.dumps({
    "touser": env["OPENID"], "template_id": env["TEMPLATE_ID"], "scene": "1000",
    "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货"}},
}, ensure_ascii=False, separators=(",", ":")).encode()
headers = {"Content-Type": "application/json", "Idempotency-Key": key}
for attempt in range(1, 6):
    status, answer_headers, body = call("/messages/one_time", message, headers)
    if status == 200:  # an outcome: delivered, refused or unknown (never resend that)
        replayed = answer_headers.get("Idempotent-Replayed") == "true"
        print(f"{key}: {body}" + (" (replayed)" if replayed else ""))
        sys.exit(0)
    # In progress, not sent, or no answer: the same request again. Anything else: fix the request.
    if status not in (409, 503, None) or '"retryable":false' in body:
        break
    time.sleep(attempt)
sys.exit(f"{key}: HTTP {status} {body}")
