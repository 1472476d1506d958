#!/bin/sh
# Reads an app's access token from the gateway, then has the gateway send a one-time message,
# with an Idempotency-Key so that asking again can never send it twice. POSIX sh and curl.
# Environment: GATEWAY_URL, GATEWAY_KEY, APPID, OPENID, TEMPLATE_ID, ORDER_ID.
set -eu
: "${GATEWAY_URL:?}" "${GATEWAY_KEY:?}" "${APPID:?}" "${OPENID:?}" "${TEMPLATE_ID:?}" "${ORDER_ID:?}"
api="$GATEWAY_URL/v1/apps/$APPID"
body=$(mktemp) headers=$(mktemp)
trap 'rm -f "$body" "$headers"' EXIT

# The key reaches curl on its standard input, not on its command line (which `ps` shows).
gateway() {
  printf 'header = "Authorization: Bearer %s"\n' "$GATEWAY_KEY" |
    curl -sS -K - --max-time 35 -o "$body" -D "$headers" -w '%{http_code}' "$@"
}

# 1. The token, for the WeChat calls you make yourself. Never print or log it.
status=$(gateway "$api/access_token")
[ "$status" = 200 ] || { echo "token: HTTP $status $(cat "$body")" >&2; exit 1; }
token=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$body")
expires_in=$(sed -n 's/.*"expires_in":\([0-9]*\).*/\1/p' "$body")
[ -n "$token" ] || { echo "token: no access_token in the answer" >&2; exit 1; }
echo "token: valid for ${expires_in}s"

# 2. The message: the scene is the one your authorization request carried. The same bytes and
# the same key on every attempt; a retry is safe only so.
key="order-$ORDER_ID/restock"
message=$(printf '{"touser":"%s","template_id":"%s","scene":"1000","title":"到货提醒","data":{"content":{"value":"您关注的商品已到货"}}}' \
  "$OPENID" "$TEMPLATE_ID")
attempt=1
while :; do
  : >"$body"
  status=$(gateway -H 'Content-Type: application/json' -H "Idempotency-Key: $key" \
    --data-binary "$message" "$api/messages/one_time") || status=000
  case $status in
    200) break ;;                  # an outcome: delivered, refused or unknown (never resend that)
    409 | 503 | 000)              # in progress, not sent, or no answer: the same request again
      if grep -q '"retryable":false' "$body" 2>/dev/null || [ "$attempt" -ge 5 ]; then
        echo "$key: HTTP $status $(cat "$body")" >&2
        exit 1
      fi
      sleep "$attempt"
      attempt=$((attempt + 1)) ;;
    *) echo "$key: HTTP $status $(cat "$body")" >&2; exit 1 ;;   # fix the request
  esac
done
if grep -qi '^idempotent-replayed: *true' "$headers"; then
  echo "$key: $(cat "$body") (replayed)"
else
  echo "$key: $(cat "$body")"
fi
