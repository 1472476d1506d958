//! Event push, WeChat's side: each app may have a server URL (服务器配置) with its Token,
//! `EncodingAESKey`, mode and format; the sandbox pushes subscription events there, signed and
//! encrypted as WeChat does, and resends a push that was not answered `200` (three more times,
//! the same query and body, as WeChat does).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subscribe_events::{EncodingAesKey, Event, Format, Mode, Push, PushConfig};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// How long WeChat waits for an answer to a push.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per push: the first and three resends.
pub const PUSH_ATTEMPTS: u32 = 4;

/// An app's server URL configuration, as its console takes it. The Token and the key never
/// print.
///
/// The Token and the key are zeroed when the settings are dropped (`zeroize`).
#[derive(Clone, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct PushSettings {
    /// The app.
    #[zeroize(skip)]
    pub appid: String,
    /// The server URL (`http://` or `https://`).
    #[zeroize(skip)]
    pub url: String,
    /// The Token (3 to 32 letters and digits).
    pub token: String,
    /// The `EncodingAESKey` (43 characters); needed in the compatible and safe modes.
    #[serde(default)]
    pub aes_key: Option<String>,
    /// `plain`, `compatible` or `safe`.
    #[zeroize(skip)]
    pub mode: String,
    /// `xml` or `json`.
    #[serde(default = "xml")]
    #[zeroize(skip)]
    pub format: String,
}

fn xml() -> String {
    "xml".into()
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings")
            .field("appid", &self.appid)
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .field("aes_key", &self.aes_key.as_ref().map(|_| "[redacted]"))
            .field("mode", &self.mode)
            .field("format", &self.format)
            .finish()
    }
}

/// One push and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct PushRecord {
    /// Its number, from 1.
    pub seq: u64,
    /// The app.
    pub appid: String,
    /// The event's name.
    pub event: String,
    /// The user.
    pub openid: String,
    /// `plain`, `compatible` or `safe`.
    pub mode: &'static str,
    /// `xml` or `json`.
    pub format: &'static str,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last answer's HTTP status, if there was one.
    pub status: Option<u16>,
    /// Whether it was answered `200`.
    pub delivered: bool,
    /// Why the last attempt failed, when it did.
    pub error: Option<String>,
}

struct Target {
    url: reqwest::Url,
    format: Format,
    mode: Mode,
    push: Push,
}

/// The apps' server URLs and the pushes made.
pub(crate) struct Pusher {
    /// The HTTP client pushes go out on, or why there is none (its TLS could not start).
    http: Result<reqwest::Client, String>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    records: Mutex<VecDeque<PushRecord>>,
    seq: std::sync::atomic::AtomicU64,
}

const KEEP: usize = 1000;

impl Pusher {
    pub(crate) fn new() -> Self {
        Self {
            // Redirects are not followed: a server URL that answers 3xx has not taken the push
            // (WeChat does not follow them either), and following one would let a receiver point
            // the sandbox at any other host.
            http: reqwest::Client::builder()
                .timeout(PUSH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("the sandbox's HTTP client could not start: {e}")),
            targets: Mutex::new(HashMap::new()),
            records: Mutex::new(VecDeque::new()),
            seq: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Sets (or replaces) an app's server URL.
    pub(crate) fn configure(&self, s: &PushSettings) -> Result<(), String> {
        let url = reqwest::Url::parse(&s.url).map_err(|_| "url must be an absolute URL".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url must be http or https".into());
        }
        if !subscribe_events::is_valid_token(&s.token) {
            return Err("token must be 3 to 32 letters and digits".into());
        }
        let mode: Mode = s.mode.parse()?;
        let format: Format = s.format.parse()?;
        let mut config = PushConfig::new(s.token.clone(), s.appid.clone(), mode);
        match (&s.aes_key, mode) {
            (Some(key), _) => {
                let key = EncodingAesKey::new(key)
                    .map_err(|_| "aes_key must be 43 base64 characters".to_owned())?;
                config = config.aes_key(key);
            }
            (None, Mode::Plain) => {}
            (None, _) => return Err("the compatible and safe modes need an aes_key".into()),
        }
        let target = Target { url, format, mode, push: Push::new(config) };
        lock(&self.targets).insert(s.appid.clone(), Arc::new(target));
        Ok(())
    }

    pub(crate) fn has_target(&self, appid: &str) -> bool {
        lock(&self.targets).contains_key(appid)
    }

    /// The pushes made, oldest first (the last thousand).
    pub(crate) fn records(&self) -> Vec<PushRecord> {
        lock(&self.records).iter().cloned().collect()
    }

    pub(crate) fn clear_records(&self) {
        lock(&self.records).clear();
    }

    /// Pushes `event` to `appid`'s server URL, if it has one, in the background.
    pub(crate) fn push(self: &Arc<Self>, appid: &str, event: &Event, now_unix: u64) {
        let Some(target) = lock(&self.targets).get(appid).cloned() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("a push was dropped: the sandbox's state was changed outside its runtime");
            return;
        };
        let mut random = [0u8; 16];
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut random);
        let _ = getrandom::fill(&mut nonce);
        let nonce = u64::from_be_bytes(nonce).to_string();
        let sealed = match target.push.seal(&event.to_wire(target.format), now_unix, &nonce, random) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(error = %e, "a push could not be sealed");
                return;
            }
        };
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut records = lock(&self.records);
            if records.len() == KEEP {
                records.pop_front();
            }
            records.push_back(PushRecord {
                seq,
                appid: appid.to_owned(),
                event: event.name().to_owned(),
                openid: event.from_user.clone(),
                mode: target.mode.as_str(),
                format: if target.format == Format::Json { "json" } else { "xml" },
                attempts: 0,
                status: None,
                delivered: false,
                error: None,
            });
        }
        let this = self.clone();
        let content_type = if target.format == Format::Json { "application/json" } else { "text/xml" };
        runtime.spawn(async move {
            let mut url = target.url.clone();
            url.set_query(Some(&sealed.query));
            for attempt in 1..=PUSH_ATTEMPTS {
                let answer = match &this.http {
                    Ok(http) => Some(
                        http.post(url.clone())
                            .header(reqwest::header::CONTENT_TYPE, content_type)
                            .body(sealed.body.clone())
                            .send()
                            .await,
                    ),
                    Err(_) => None,
                };
                let (status, error) = match answer {
                    None => (None, this.http.as_ref().err().cloned()),
                    Some(Ok(r)) if r.status() == reqwest::StatusCode::OK => (Some(200), None),
                    Some(Ok(r)) => {
                        (Some(r.status().as_u16()), Some(format!("answered HTTP {}", r.status().as_u16())))
                    }
                    Some(Err(e)) if e.is_timeout() => (None, Some("no answer within 5 s".to_owned())),
                    Some(Err(e)) if certificate_refused(&e) => {
                        (None, Some("the server URL's TLS certificate was refused".to_owned()))
                    }
                    Some(Err(_)) => (None, Some("could not connect".to_owned())),
                };
                let delivered = error.is_none();
                this.update(seq, |r| {
                    r.attempts = attempt;
                    r.status = status;
                    r.delivered = delivered;
                    r.error.clone_from(&error);
                });
                if delivered {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    fn update(&self, seq: u64, f: impl FnOnce(&mut PushRecord)) {
        if let Some(r) = lock(&self.records).iter_mut().find(|r| r.seq == seq) {
            f(r);
        }
    }
}

/// Whether a push failed because the server URL's certificate did not verify (an `https://`
/// receiver with a certificate the platform does not trust, or for another name).
fn certificate_refused(e: &reqwest::Error) -> bool {
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(cause) = next {
        if cause.to_string().to_ascii_lowercase().contains("certificate") {
            return true;
        }
        next = cause.source();
    }
    false
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    /// Does not compile if the settings stop zeroing on drop; fails if the Token, the key or
    /// an app's secret is skipped.
    #[test]
    fn the_token_the_key_and_the_secrets_are_zeroed() {
        use zeroize::Zeroize as _;
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroed_on_drop::<super::PushSettings>();
        zeroed_on_drop::<crate::AppConfig>();
        let mut settings: super::PushSettings = serde_json::from_value(serde_json::json!({
            "appid": "wx5a1db0c0ffee0001", "url": "http://127.0.0.1:9/push", "token": "tokenZeroed",
            "aes_key": "keyZeroedabcdefghijklmnopqrstuvwxyz0123456", "mode": "safe",
        }))
        .unwrap();
        settings.zeroize();
        assert!(settings.token.is_empty() && settings.aes_key.is_none());
        assert_eq!(settings.appid, "wx5a1db0c0ffee0001", "what is not secret is kept");
        let mut app = crate::SandboxConfig::demo().apps.remove(0);
        app.zeroize();
        assert!(app.secret.is_empty());
        assert!(!app.templates.is_empty(), "what is not secret is kept");
    }

    #[test]
    fn settings_never_print_the_token_or_the_key() {
        let settings: super::PushSettings = serde_json::from_value(serde_json::json!({
            "appid": "wx5a1db0c0ffee0001", "url": "http://127.0.0.1:9/push", "token": "tokenNeverPrinted",
            "aes_key": "keyNeverPrintedabcdefghijklmnopqrstuvwxyz01", "mode": "safe",
        }))
        .unwrap();
        let mut config = crate::SandboxConfig::demo();
        config.push.push(settings.clone());
        let shown = format!("{settings:?} {config:?} {}", serde_json::to_string(&config).unwrap());
        assert!(!shown.contains("tokenNeverPrinted") && !shown.contains("keyNeverPrinted"), "{shown}");
        assert_eq!(settings.format, "xml", "XML unless told");
    }
}
