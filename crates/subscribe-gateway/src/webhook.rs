//! Delivering the outbox to the caller's webhook: one deliverer per app with a webhook, on the
//! gateway that holds the app's delivery lease, posting each kept event in order, signed
//! (HMAC-SHA256 over the timestamp and the body), removing it once the webhook answered 2xx, and
//! retrying the same event with a backoff (1 s doubling to 60 s) while it does not: an event is
//! never skipped, never lost, and delivered at least once (a receiver de-duplicates by its
//! `X-Subscribe-Delivery`, the event's identity).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subscribe_client::CancellationToken;
use tracing::{debug, warn};

use crate::Gateway;
use crate::config::Webhook;
use crate::outbox::OutboxItem;

/// How long a gateway holds an app's delivery without renewing it.
const LEASE: Duration = Duration::from_secs(30);
/// The most events read at once.
const BATCH: usize = 20;
/// How long one post may take.
pub(crate) const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is read when nothing wakes the deliverer (events kept by another
/// gateway of the fleet), and how often a gateway without the lease asks for it.
const POLL: Duration = Duration::from_secs(1);
/// How often the gateway delivering an app's events counts the ones waiting.
const COUNT_EVERY: Duration = Duration::from_secs(10);
/// The longest wait between two attempts at an event.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The signature of a post: `v1=` and the lowercase hexadecimal HMAC-SHA256, keyed by the
/// webhook's secret, of `{timestamp}.{body}` (the timestamp in Unix seconds, as sent in
/// `X-Subscribe-Timestamp`; the body's bytes as posted).
pub fn signature(secret: &[u8], timestamp: u64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one event's post is: `{"delivery": <the event's key>, "appid", "seq", "event"}`.
fn envelope(appid: &str, item: &OutboxItem) -> String {
    let event = serde_json::value::RawValue::from_string(item.body.clone()).ok();
    let body = serde_json::json!({"delivery": item.key, "appid": appid, "seq": item.seq, "event": event});
    body.to_string()
}

/// Delivers `appid`'s events to `webhook` until `stop` is cancelled.
pub(crate) async fn deliver(gw: Gateway, appid: String, webhook: Webhook, stop: CancellationToken) {
    let Some(wake) = gw.shared.pushes.wake.get(&appid).cloned() else { return };
    let outbox = std::sync::Arc::clone(&gw.shared.outbox);
    let owner = gw.shared.jobs.owner().to_owned();
    let http = gw.shared.webhook_http.clone();
    let mut backoff = Duration::from_secs(1);
    let pause = |d: Duration| {
        let (stop, wake) = (stop.clone(), std::sync::Arc::clone(&wake));
        async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(d) => {}
            }
        }
    };
    let mut counted = tokio::time::Instant::now() - COUNT_EVERY;
    while !stop.is_cancelled() {
        match outbox.lease(&appid, &owner, LEASE).await {
            Ok(true) => {
                // Counted by the gateway delivering only, every 10 s.
                if counted.elapsed() >= COUNT_EVERY {
                    counted = tokio::time::Instant::now();
                    if let Ok(n) = outbox.len(&appid).await {
                        gw.metrics().webhook_backlog(&appid, n);
                    }
                }
            }
            Ok(false) => {
                // Another gateway delivers (and counts): this one reports none waiting, so the
                // fleet's figures neither double nor go stale.
                gw.metrics().webhook_backlog(&appid, 0);
                pause(POLL).await;
                continue;
            }
            Err(e) => {
                warn!(appid = %appid, error = %e, "could not take the webhook's delivery");
                pause(POLL).await;
                continue;
            }
        }
        let items = match outbox.peek(&appid, BATCH).await {
            Ok(items) if items.is_empty() => {
                pause(POLL).await;
                continue;
            }
            Ok(items) => items,
            Err(e) => {
                warn!(appid = %appid, error = %e, "could not read the webhook's events");
                pause(POLL).await;
                continue;
            }
        };
        for item in items {
            if stop.is_cancelled() || !matches!(outbox.lease(&appid, &owner, LEASE).await, Ok(true)) {
                break;
            }
            let body = envelope(&appid, &item);
            let delivery = item.key.as_str();
            match post(&http, &webhook, &body, delivery).await {
                Ok(()) => {
                    gw.metrics().webhook_delivery(&appid, "delivered");
                    backoff = Duration::from_secs(1);
                    match outbox.remove(&appid, item.seq).await {
                        Ok(true) => {}
                        // Delivered and removed by another gateway meanwhile (this one's lease had
                        // lapsed): the rest of this batch is stale.
                        Ok(false) => break,
                        Err(e) => {
                            // Posted again on the next round: the receiver de-duplicates by delivery.
                            warn!(appid = %appid, error = %e, "a delivered event could not be removed from the outbox");
                            break;
                        }
                    }
                    debug!(appid = %appid, delivery = %delivery, "an event was delivered to the webhook");
                }
                Err(why) => {
                    gw.metrics().webhook_delivery(&appid, "failed");
                    warn!(appid = %appid, delivery = %delivery, why = %why, retry_in_s = backoff.as_secs(), "the webhook did not take an event; it is kept and posted again");
                    // The lease is kept while waiting: another gateway would start again at 1 s.
                    let until = tokio::time::Instant::now() + backoff;
                    while !stop.is_cancelled() && tokio::time::Instant::now() < until {
                        let wait =
                            until.saturating_duration_since(tokio::time::Instant::now()).min(LEASE / 3);
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(wait) => {}
                        }
                        let _ = outbox.lease(&appid, &owner, LEASE).await;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
    // Stopping: the delivery is another gateway's at once.
    if let Err(e) = outbox.release(&appid, &owner).await {
        warn!(appid = %appid, error = %e, "could not give the webhook's delivery up; another gateway takes it after 30 s");
    }
}

/// Posts one event; `Err` says why it was not taken (no URL or secret in it).
async fn post(http: &reqwest::Client, webhook: &Webhook, body: &str, delivery: &str) -> Result<(), String> {
    #[allow(clippy::disallowed_methods)] // The receiver checks the timestamp against its own wall clock.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let request = http
        .post(&webhook.url)
        .timeout(POST_TIMEOUT)
        .header("content-type", "application/json")
        .header("x-subscribe-delivery", delivery)
        .header("x-subscribe-timestamp", now.to_string())
        .header("x-subscribe-signature", signature(webhook.secret(), now, body))
        .body(body.to_owned());
    match request.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("no answer within {} s", POST_TIMEOUT.as_secs())),
        Err(e) if e.is_connect() => Err("could not connect".to_owned()),
        Err(_) => Err("the request failed".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_the_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature(b"secret", 1_700_000_000, "{\"a\":1}"),
            "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
