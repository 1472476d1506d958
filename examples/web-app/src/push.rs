//! The server URL (服务器配置): WeChat pushes what users did with subscriptions to
//! `/wechat/push`; `subscribe-events` verifies and decrypts each push, and the client applies
//! it to the ledger: a popup's acceptance becomes a grant, a withdrawal drops the pending one,
//! a notification's result is kept by `msgid`. A ledger that fails answers 500, so WeChat
//! resends. Each push is read once, by whichever instance it reaches first: the pushes read
//! are remembered where the grants are (the app's replay cache).

use axum::Router;
use subscribe_events::axum::PushEndpoint;
use subscribe_events::{EncodingAesKey, Event, Mode, Push, PushConfig};
use subscribe_types::secrecy::{ExposeSecret as _, SecretString};
use subscribe_types::{TemplateId, secret_string};

use crate::{AppState, ConfigError, invalid};

/// The sandbox's two library templates (one-time 到货提醒 and long-term 会员到期提醒): the
/// admin page counts their grants by default.
pub const SANDBOX_PUSH_TEMPLATES: [&str; 2] =
    ["SandboxMpRestockAlert_0000000000000000000001", "SandboxMpMemberExpiry_0000000000000000000002"];

/// The server URL's settings, from the environment. The Token and the keys never print.
#[derive(Clone)]
#[non_exhaustive]
pub struct PushSettings {
    /// `WECHAT_PUSH_TOKEN` (3 to 32 letters and digits): turns `/wechat/push` on. Zeroed
    /// when dropped.
    token: SecretString,
    /// `WECHAT_PUSH_MODE`: `safe` (the default), `compatible` or `plain`. Plain mode is
    /// unauthenticated by design (WeChat does not sign the body: anyone who sees one push can
    /// post another body with its query), so it is never a default: it takes
    /// `WECHAT_PUSH_MODE=plain`, and the endpoint logs a warning at start-up.
    pub mode: Mode,
    /// `WECHAT_PUSH_AES_KEY` and, during a rotation, `WECHAT_PUSH_PREVIOUS_AES_KEY`.
    keys: Vec<EncodingAesKey>,
    /// `WECHAT_PUSH_TEMPLATES`: the library templates (comma-separated) whose pushed grants
    /// the admin page counts (default [`SANDBOX_PUSH_TEMPLATES`]).
    pub templates: Vec<TemplateId>,
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings")
            .field("token", &"[redacted]")
            .field("mode", &self.mode)
            .field("keys", &self.keys.len())
            .field("templates", &self.templates)
            .finish()
    }
}

impl PushSettings {
    /// Reads the settings; `None` without `WECHAT_PUSH_TOKEN`.
    pub(crate) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(token) = get("WECHAT_PUSH_TOKEN").map(secret_string) else { return Ok(None) };
        if !subscribe_events::is_valid_token(token.expose_secret()) {
            return Err(invalid("WECHAT_PUSH_TOKEN", "must be 3 to 32 letters and digits"));
        }
        let key = |var: &'static str| {
            get(var).map(|k| {
                EncodingAesKey::new(k.trim()).map_err(|_| invalid(var, "must be 43 base64 characters"))
            })
        };
        let mut keys = Vec::new();
        if let Some(current) = key("WECHAT_PUSH_AES_KEY").transpose()? {
            keys.push(current);
            keys.extend(key("WECHAT_PUSH_PREVIOUS_AES_KEY").transpose()?);
        }
        let mode = match get("WECHAT_PUSH_MODE") {
            None => Mode::Safe,
            Some(mode) => mode.parse().map_err(|e| invalid("WECHAT_PUSH_MODE", e))?,
        };
        if mode != Mode::Plain && keys.is_empty() {
            return Err(invalid(
                "WECHAT_PUSH_AES_KEY",
                "the safe mode (the default) and the compatible mode need it; pushes in plain mode are \
                 not authenticated, and are taken only with WECHAT_PUSH_MODE=plain",
            ));
        }
        let templates: Result<Vec<_>, _> = match get("WECHAT_PUSH_TEMPLATES") {
            Some(list) => {
                list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(TemplateId::new).collect()
            }
            None => SANDBOX_PUSH_TEMPLATES.into_iter().map(TemplateId::new).collect(),
        };
        let templates = templates.map_err(|e| invalid("WECHAT_PUSH_TEMPLATES", e))?;
        Ok(Some(Self { token, mode, keys, templates }))
    }

    fn push(&self, appid: &str) -> Push {
        let mut keys = self.keys.iter().cloned();
        let mut config = PushConfig::new(self.token.expose_secret(), appid, self.mode);
        if let Some(current) = keys.next() {
            config = config.aes_key(current);
        }
        for previous in keys {
            config = config.previous_aes_key(previous);
        }
        Push::new(config)
    }
}

/// `/wechat/push`, when a Token is configured.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let Some(settings) = &state.config.push else { return Router::new() };
    let app = state.clone();
    let endpoint = PushEndpoint::new(settings.push(state.config.appid.as_str()), move |event: Event| {
        let app = app.clone();
        async move {
            let applied = app.client.apply_event(&event, app.ledger.as_ref(), app.results.as_ref()).await?;
            tracing::info!(event = event.name(), openid = %event.from_user, ?applied, "pushed event applied");
            app.counts_changed();
            Ok::<(), subscribe_client::LedgerError>(())
        }
    })
    // Shared with every instance on the backend (see `AppState::open`).
    .replay_cache(std::sync::Arc::clone(&state.replays));
    Router::new().route("/wechat/push", endpoint.method_router())
}

#[cfg(test)]
mod zeroize_tests {
    use super::*;

    /// Does not compile if the push Token goes back to a plain string.
    #[test]
    fn the_push_token_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>(_: &T) {}
        let get = |var: &str| match var {
            "WECHAT_PUSH_TOKEN" => Some("sandboxPushToken2026".to_owned()),
            "WECHAT_PUSH_MODE" => Some("plain".to_owned()),
            _ => None,
        };
        let settings = PushSettings::from_lookup(&get).unwrap().unwrap();
        zeroed_on_drop(&settings.token);
        assert_eq!(settings.token.expose_secret(), "sandboxPushToken2026");
    }
}
