//! The sandbox's HTML pages: authorization, inbox, index, errors. Written with `maud`, which
//! escapes every interpolated value.

use maud::{DOCTYPE, PreEscaped, Render, html};

use crate::config::{AppConfig, SandboxConfig, TemplateConfig};
use crate::state::{Delivered, Stats};

const STYLE: &str = "body{font-family:-apple-system,'PingFang SC','Noto Sans CJK SC',sans-serif;background:#ededed;margin:0}\
main{max-width:420px;margin:0 auto;background:#fff;min-height:100vh;padding:24px;box-sizing:border-box}\
h1{font-size:20px}.muted{color:#888;font-size:14px}.card{border:1px solid #e5e5e5;border-radius:8px;padding:14px;margin:12px 0}\
button{width:100%;padding:12px;border:0;border-radius:6px;font-size:17px;margin-top:10px}\
.ok{background:#07c160;color:#fff}.no{background:#f2f2f2;color:#333}label{display:block;padding:8px 0}\
.content{white-space:pre-wrap}.err{color:#c00}table{border-collapse:collapse}code{word-break:break-all}td,th{padding:4px 8px;text-align:left}";

fn page(title: &str, body: impl Render) -> String {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
    .into_string()
}

/// The authorization page: which app asks, which template, for which scene; the simulated
/// user is chosen on the page.
pub(crate) fn authorize(
    cfg: &SandboxConfig,
    app: &AppConfig,
    template: &TemplateConfig,
    scene: u16,
    query: &str,
) -> String {
    page(
        "一次性订阅消息授权",
        html! {
            h1 #app-name { (app.name) }
            p { "请求向你发送一条一次性订阅消息 · asks to send you one message" }
            div.card {
                div #template-title { (template.title) }
                div.muted { "template " code { (template.id.as_str()) } " · scene " code #scene { (scene) } }
            }
            form method="post" action="/mp/subscribemsg/decide" {
                input type="hidden" name="q" value=(query);
                (decision(cfg))
            }
        },
    )
}

/// WeChat's confirmation screen on the phone, for an Open SDK request.
pub(crate) fn phone(
    cfg: &SandboxConfig,
    app: &AppConfig,
    template: &TemplateConfig,
    appid: &str,
    request: &subscribe_types::MobileSubscribeRequest,
) -> String {
    let request_json = serde_json::to_string(request).unwrap_or_default();
    page(
        "一次性订阅消息 · phone",
        html! {
            p.muted { "WeChat on the phone (Open SDK)" }
            h1 #app-name { (app.name) }
            p { "请求向你发送一条一次性订阅消息 · asks to send you one message" }
            div.card {
                div #template-title { (template.title) }
                div.muted { "template " code { (template.id.as_str()) } " · scene " code #scene { (request.scene.get()) } }
            }
            form method="post" action="/sandbox/phone/decide" {
                input type="hidden" name="appid" value=(appid);
                input type="hidden" name="request" value=(request_json);
                (decision(cfg))
            }
        },
    )
}

/// The simulated users to choose from and the two buttons, in a decision form.
fn decision(cfg: &SandboxConfig) -> maud::Markup {
    html! {
        (users(cfg))
        button.ok #confirm name="decision" value="confirm" { "允许 Confirm" }
        button.no #cancel name="decision" value="cancel" { "取消 Cancel" }
    }
}

/// The simulated users to choose from, the first chosen.
fn users(cfg: &SandboxConfig) -> maud::Markup {
    html! {
        fieldset {
            legend.muted { "Simulated WeChat user" }
            @for (i, u) in cfg.users.iter().enumerate() {
                label {
                    input type="radio" name="openid" value=(u.openid.as_str()) checked[i == 0];
                    " " (u.name) " " span.muted { (u.openid.as_str()) }
                }
            }
        }
    }
}

/// An error page (never a redirect).
pub(crate) fn error(message: &str) -> String {
    page("授权失败", html! { h1 { "无法完成授权" } p.err #error { (message) } })
}

/// A user's inbox, as Service Notifications would show it.
pub(crate) fn inbox(cfg: &SandboxConfig, name: &str, openid: &str, messages: &[Delivered]) -> String {
    page(
        &format!("{name} · inbox"),
        html! {
            h1 { (name) }
            p.muted { (openid) " · " (messages.len()) " message(s)" }
            @if messages.is_empty() {
                p.muted #empty { "No messages yet." }
            }
            @for m in messages.iter().rev() {
                div.card.message {
                    div.muted { (cfg.app(&m.appid).map_or(m.appid.as_str(), |a| a.name.as_str())) " · 服务通知" }
                    h2.title { (m.title) }
                    @if m.data.is_empty() {
                        div.content style=[m.color.as_ref().map(|c| format!("color:{c}"))] { (m.content) }
                    } @else {
                        dl.content data-kind=(m.kind) {
                            @for (key, value) in &m.data { dt { (key) } dd { (value) } }
                        }
                    }
                    @if let Some(page) = &m.page { div.muted { "opens " (page) } }
                    @if let Some((mp, path)) = &m.miniprogram {
                        div.muted { "opens mini program " (mp) " · " (path) }
                    } @else if let Some(url) = &m.url {
                        div.muted { "opens " a href=(url) { (url) } }
                    }
                    @if m.kind == "one_time" { div.muted { "scene " (m.scene) } }
                    @else { div.muted { (m.kind.replace('_', " ")) @if let Some(id) = m.msgid { " · msgid " (id) } } }
                }
            }
        },
    )
}

/// The sandbox's front page.
pub(crate) fn index(cfg: &SandboxConfig, stats: &Stats) -> String {
    page(
        "WeChat sandbox",
        html! {
            h1 { "WeChat sandbox" }
            p.muted { "A local stand-in for api.weixin.qq.com and mp.weixin.qq.com." }
            h2 { "Apps" }
            table {
                @for a in &cfg.apps {
                    tr {
                        td { (a.name) }
                        td { code { (a.appid.as_str()) } }
                        td { @for (i, t) in a.templates.iter().enumerate() { @if i > 0 { br; } code { (t.id.as_str()) } } }
                    }
                }
            }
            h2 { "Users" }
            table {
                @for u in &cfg.users {
                    tr {
                        td { a href={ "/sandbox/inbox/" (u.openid.as_str()) } { (u.name) } }
                        td { code { (u.openid.as_str()) } }
                    }
                }
            }
            h2 { "Counters" }
            p.muted {
                (stats.deliveries) " deliveries · " (stats.send_requests) " send requests · "
                (stats.classic_token_requests + stats.stable_token_requests) " token requests"
            }
        },
    )
}

/// A subscription popup (`wx.requestSubscribeMessage`, `<wx-open-subscribe>`): the app, one
/// template, the simulated users, and accept or reject.
pub(crate) fn popup(
    cfg: &SandboxConfig,
    app: &AppConfig,
    template_id: &str,
    title: &str,
    long_term: bool,
) -> String {
    page(
        "订阅消息 · popup",
        html! {
            p.muted { "WeChat's subscription popup" }
            h1 #app-name { (app.name) }
            p { "发送以下消息 · would like to send you" }
            div.card {
                div #template-title { (title) }
                div.muted { code { (template_id) } " · " (if long_term { "长期 long-term" } else { "一次性 one-time" }) }
            }
            form method="post" action="/sandbox/popup/decide" {
                input type="hidden" name="appid" value=(app.appid.as_str());
                input type="hidden" name="template_id" value=(template_id);
                (users(cfg))
                button.ok #accept name="decision" value="accept" { "允许 Allow" }
                button.no #reject name="decision" value="reject" { "取消 Cancel" }
            }
        },
    )
}

/// What the popup's user sees after answering.
pub(crate) fn popup_answered(app: &AppConfig, decision: &str, pushed: bool) -> String {
    page(
        "订阅消息 · answered",
        html! {
            h1 #answered { (if decision == "accept" { "已允许 · allowed" } else { "已取消 · cancelled" }) }
            p #pushed { (if pushed { "WeChat pushes the answer to " } else { "No server URL is configured for " }) (app.name) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped() {
        let mut cfg = SandboxConfig::demo();
        cfg.users[0].name = "<script>alert('x')</script>".into();
        let app = cfg.apps[0].clone();
        let template = app.templates[0].clone();
        let page = authorize(&cfg, &app, &template, 7, "a=\"><b>&c");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("value=\"a=&quot;&gt;&lt;b&gt;&amp;c\""), "{page}");
        assert!(error("<img src=x>").contains("&lt;img src=x&gt;"));
    }
}
