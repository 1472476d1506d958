// Reads an app's access token from the gateway, then has the gateway send a one-time message,
// with an Idempotency-Key so that asking again can never send it twice. Node 20 (built-in fetch).
// Environment: GATEWAY_URL, GATEWAY_KEY, APPID, OPENID, TEMPLATE_ID, ORDER_ID.
const env = process.env;
for (const name of ["GATEWAY_URL", "GATEWAY_KEY", "APPID", "OPENID", "TEMPLATE_ID", "ORDER_ID"]) {
  if (!env[name]) throw new Error(`${name} is not set`);
}
const api = `${env.GATEWAY_URL}/v1/apps/${env.APPID}`;
const auth = { Authorization: `Bearer ${env.GATEWAY_KEY}` };

// One request: the status, the headers and the body (status 0: no answer came).
async function call(path, init = {}) {
  try {
    const r = await fetch(api + path, {
      ...init,
      headers: { ...auth, ...init.headers },
      signal: AbortSignal.timeout(35_000),
    });
    return { status: r.status, headers: r.headers, body: await r.text() };
  } catch {
    return { status: 0, headers: new Headers(), body: "" };
  }
}

// 1. The token, for the WeChat calls you make yourself. Never print or log it.
const token = await call("/access_token");
if (token.status !== 200) {
  console.error(`token: HTTP ${token.status} ${token.body}`);
  process.exit(1);
}
const { access_token, expires_in } = JSON.parse(token.body);
console.log(`token: valid for ${expires_in}s`);

// 2. The message: the scene is the one your authorization request carried. The same bytes and
// the same key on every attempt; a retry is safe only so.
const key = `order-${env.ORDER_ID}/restock`;
const message = JSON.stringify({
  touser: env.OPENID, template_id: env.TEMPLATE_ID, scene: "1000", title: "到货提醒",
  data: { content: { value: "您关注的商品已到货" } },
});
const headers = { "Content-Type": "application/json", "Idempotency-Key": key };
let answer;
for (let attempt = 1; attempt <= 5; attempt++) {
  answer = await call("/messages/one_time", { method: "POST", headers, body: message });
  if (answer.status === 200) {
    // An outcome: delivered, refused or unknown (never resend that).
    const replayed = answer.headers.get("Idempotent-Replayed") === "true";
    console.log(`${key}: ${answer.body}${replayed ? " (replayed)" : ""}`);
    process.exit(0);
  }
  // In progress, not sent, or no answer: the same request again. Anything else: fix the request.
  if (![409, 503, 0].includes(answer.status) || answer.body.includes('"retryable":false')) break;
  await new Promise((resolve) => setTimeout(resolve, attempt * 1000));
}
console.error(`${key}: HTTP ${answer.status} ${answer.body}`);
process.exit(1);
