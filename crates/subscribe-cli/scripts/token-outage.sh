#!/usr/bin/env bash
# The token endpoint failing, through `wxsub send-batch` as a user runs it: a fresh client sends
# 200 messages at concurrency 64 to a `wxsub sandbox` whose token endpoint fails in each way the
# sandbox can fail it. Prints one Markdown row per fault: token requests the sandbox counted,
# deliveries, wall time, outcomes.
#
#   cargo build --release -p subscribe-cli
#   crates/subscribe-cli/scripts/token-outage.sh
#
# WXSUB picks the client binary (default target/release/wxsub), SANDBOX the sandbox's: point
# WXSUB at an older build to compare in the same run. Needs curl and python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
WXSUB=${WXSUB:-$root/target/release/wxsub}
SANDBOX=${SANDBOX:-$WXSUB}
PORT=${PORT:-18931}
BASE=http://127.0.0.1:$PORT
APPID=wx5a1db0c0ffee0001
SECRET=sandbox-demo-secret-0123456789ab
TPL=SandboxRestockAlert_0000000000000000000001
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$APPID" "$SECRET" "$TPL" <<'PY'
import json, sys
work, appid, secret, tpl = sys.argv[1:]
users = [{"openid": f"oUser{i:010}", "name": f"User {i}"} for i in range(200)]
app = {"appid": appid, "secret": secret, "name": "Shop", "templates": [{"id": tpl, "title": "restock"}]}
json.dump({"apps": [app], "users": users}, open(f"{work}/config.json", "w"))
with open(f"{work}/in.jsonl", "w") as f:
    for i in range(200):
        line = {"touser": f"oUser{i:010}", "template_id": tpl, "scene": 5, "title": "到货提醒", "content": "您关注的商品已到货"}
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
PY

row() {
    local name=$1 faults=$2
    "$SANDBOX" sandbox --listen "127.0.0.1:$PORT" --config "$work/config.json" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf "$BASE/sandbox/api/state" >/dev/null && break; sleep 0.1; done
    for i in $(seq 0 199); do
        printf '{"appid":"%s","openid":"oUser%010d","template_id":"%s","scene":5}' "$APPID" "$i" "$TPL" |
            curl -sf -X POST -H "Content-Type: application/json" --data-binary @- "$BASE/sandbox/api/grants" >/dev/null
    done
    curl -sf -X POST -H "Content-Type: application/json" --data-binary "$faults" "$BASE/sandbox/api/faults" >/dev/null
    local start end
    start=$(date +%s.%N)
    WXSUB_API_BASE=$BASE WXSUB_APPID=$APPID WXSUB_SECRET=$SECRET \
        "$WXSUB" send-batch --input "$work/in.jsonl" --concurrency 64 >"$work/out.jsonl" 2>/dev/null || true
    end=$(date +%s.%N)
    curl -sf "$BASE/sandbox/api/state" >"$work/state.json"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$name" "$start" "$end" "$work" <<'PY'
import collections, json, sys
name, start, end, work = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
outcomes = collections.Counter()
for line in open(f"{work}/out.jsonl"):
    v = json.loads(line)
    kind = v["status"]
    if kind != "delivered":
        reason = v.get("reason", "")
        reason = reason.split("failed attempts): ")[-1]
        kind += ": " + (f"errcode {v['errcode']}" if "errcode" in v else reason[:70])
    outcomes[kind] += 1
s = json.load(open(f"{work}/state.json"))["stats"]
requests = s["stable_token_requests"] + s["classic_token_requests"]
shown = "; ".join(f"{n} × {k}" for k, n in outcomes.most_common())
print(f"| {name} | {requests} | {s['deliveries']} | {float(end) - float(start):.1f} s | {shown} |")
PY
}

echo "| token endpoint | token requests | delivered | wall time | outcomes |"
echo "|---|---:|---:|---:|---|"
row "every request HTTP 502" '{"token_fault":"http_502"}'
row "every connection dropped" '{"token_fault":"drop"}'
row "every request -1" '{"token_fault":"busy"}'
row "every request 45009" '{"token_fault":"quota"}'
row "every request stalled 3 s" '{"token_fault":"stall","token_stall_ms":3000}'
row "HTTP 502 for 2 s, then answering" '{"token_fault":"http_502","token_fault_ms":2000}'
