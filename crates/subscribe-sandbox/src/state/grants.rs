//! Grants and inboxes: a confirmation recorded, consumed by a send, and the message delivered.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use subscribe_types::{ErrCode, OneTimeMessage, Scene};

use super::{Inner, SEQ, unix_ms};
use crate::config::SandboxConfig;

/// A message as it arrived in a user's inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Sequence number across the sandbox.
    pub seq: u64,
    /// Unix time of delivery, in milliseconds.
    pub at_ms: u64,
    /// The sending app.
    pub appid: String,
    /// The template.
    pub template_id: String,
    /// The scene.
    pub scene: u16,
    /// The title.
    pub title: String,
    /// The body.
    pub content: String,
    /// The body colour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// The link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The mini program, as `appid` and `pagepath`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miniprogram: Option<(String, String)>,
    /// Which send: `one_time` (the 2017 message), `mini_program` or `notification`.
    #[serde(default = "one_time")]
    pub kind: String,
    /// The mini-program and notification messages' keys and values (the one-time message has `title` and `content`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// The mini program page (`mini_program`) or web page (`notification`) opened on tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// A notification's `msgid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<u64>,
}

fn one_time() -> String {
    "one_time".to_owned()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct GrantKey {
    appid: String,
    openid: String,
    template_id: String,
    scene: u16,
}

impl Inner {
    /// Records a confirmation. Repeated confirmations of an unused grant do not add up; a
    /// confirmation after the grant was used makes it usable again. Returns whether it added one.
    pub(crate) fn grant(&mut self, appid: &str, openid: &str, template_id: &str, scene: Scene) -> bool {
        let key = GrantKey {
            appid: appid.into(),
            openid: openid.into(),
            template_id: template_id.into(),
            scene: scene.get(),
        };
        let unused = self.grants.entry(key).or_insert(false);
        let added = !*unused;
        *unused = true;
        if added {
            self.stats.grants_recorded += 1;
        }
        added
    }

    /// Unused grants.
    pub(crate) fn unused_grants(&self) -> usize {
        self.grants.values().filter(|u| **u).count()
    }

    /// Consumes the grant and delivers, or says why not.
    pub(crate) fn deliver(
        &mut self,
        cfg: &SandboxConfig,
        appid: &str,
        msg: &OneTimeMessage,
        wall: SystemTime,
    ) -> Result<(), (ErrCode, &'static str)> {
        let app = cfg.app(appid).ok_or((ErrCode::INVALID_APPID, "invalid appid"))?;
        if !app.templates.iter().any(|t| t.id == *msg.template_id()) {
            return Err((ErrCode::INVALID_TEMPLATE_ID, "invalid template_id"));
        }
        if cfg.user(msg.touser().as_str()).is_none() {
            return Err((ErrCode::INVALID_OPENID, "invalid openid"));
        }
        let key = GrantKey {
            appid: appid.into(),
            openid: msg.touser().as_str().into(),
            template_id: msg.template_id().as_str().into(),
            scene: msg.scene().get(),
        };
        match self.grants.get_mut(&key) {
            Some(unused) if *unused => *unused = false,
            _ => return Err((ErrCode::USER_REFUSED, "user refuse to accept the msg")),
        }
        self.stats.deliveries += 1;
        let delivered = Delivered {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            at_ms: unix_ms(wall),
            appid: appid.into(),
            template_id: msg.template_id().as_str().into(),
            scene: msg.scene().get(),
            title: msg.title().as_str().into(),
            content: msg.content().as_str().into(),
            color: msg.color().map(|c| c.as_str().into()),
            url: msg.url().map(|u| u.as_str().into()),
            miniprogram: msg.miniprogram().map(|m| (m.appid().as_str().into(), m.pagepath().into())),
            kind: one_time(),
            data: BTreeMap::new(),
            page: None,
            msgid: None,
        };
        self.inbox.entry(key.openid).or_default().push(delivered);
        Ok(())
    }

    /// Delivers a mini-program message or notification that passed its checks; `msgid` for a notification.
    pub(crate) fn deliver_subscribed(
        &mut self,
        appid: &str,
        kind: crate::library::SendKind,
        accepted: crate::library::Accepted,
        wall: SystemTime,
    ) -> Option<u64> {
        let msgid = (kind == crate::library::SendKind::Notification).then(|| self.subscriptions.msgid());
        self.stats.deliveries += 1;
        let delivered = Delivered {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            at_ms: unix_ms(wall),
            appid: appid.into(),
            template_id: accepted.template_id,
            scene: 0,
            title: accepted.title,
            content: String::new(),
            color: None,
            url: None,
            miniprogram: accepted.miniprogram,
            kind: kind.as_str().to_owned(),
            data: accepted.data,
            page: accepted.page,
            msgid,
        };
        self.inbox.entry(accepted.openid).or_default().push(delivered);
        msgid
    }

    pub(crate) fn inbox(&self, openid: &str) -> Vec<Delivered> {
        self.inbox.get(openid).cloned().unwrap_or_default()
    }
}
