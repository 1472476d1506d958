#!/usr/bin/env python3
"""The mobile consent flow through the gateway, as your server runs it: a signed Open SDK
request for the user's session, handed to the app; the SDK's answer, forwarded by the app,
completed in the same session, which records the grant. Standard library only.
Environment: GATEWAY_URL, GATEWAY_KEY (scope "grants"), APPID, TEMPLATE_ID, SESSION (a value
stable for the user's session on your server, such as a digest of its id); and, standing in
for the app and WeChat on the phone, SANDBOX_URL and OPENID (the sandbox's user who taps)."""
import json
import os
import sys
import urllib.error
import urllib.request

env = os.environ
api = f"{env['GATEWAY_URL']}/v1/apps/{env['APPID']}"


def post(url, body, key=None):
    """One JSON request: the status and the decoded answer."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=35) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


# 1. Your server: the request for the app to hand to the Open SDK, bound to the session.
ask = {"template_id": env["TEMPLATE_ID"], "scene": 1000, "session": env["SESSION"]}
status, sdk_request = post(f"{api}/consent/mobile", ask, env["GATEWAY_KEY"])
if status != 200:
    sys.exit(f"consent/mobile: HTTP {status} {sdk_request}")
print(f"request: scene {sdk_request['scene']}, template {sdk_request['templateId']}")

# 2. The app and WeChat (here the sandbox's phone): the user taps "allow"; the SDK hands the
# app its answer, which the app forwards to your server as it got it.
phone = {"appid": env["APPID"], "request": sdk_request, "action": "confirm", "openid": env["OPENID"]}
status, sdk_answer = post(f"{env['SANDBOX_URL']}/sandbox/api/phone", phone)
if status != 200:
    sys.exit(f"phone: HTTP {status} {sdk_answer}")

# 3. Your server: the answer completed in the session that asked; the grant is recorded.
# Forwarded twice (a retry, a double tap), the second is answered 409 answer_accepted.
for attempt in ("answer", "again"):
    status, done = post(f"{api}/consent/complete", {"session": env["SESSION"], "sdk_answer": sdk_answer},
                        env["GATEWAY_KEY"])
    if status == 200:
        print(f"{attempt}: {done['action']}, recorded {done.get('recorded')}")
    elif status == 409 and done["error"] == "answer_accepted":
        print(f"{attempt}: already recorded")
    else:
        sys.exit(f"{attempt}: HTTP {status} {done}")
