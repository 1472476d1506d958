//! The sandbox's HTML pages: authorization, inbox, index, errors.

use std::fmt::Write as _;

use crate::config::{AppConfig, SandboxConfig, TemplateConfig};
use crate::state::{Delivered, Stats};

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:-apple-system,'PingFang SC','Noto Sans CJK SC',sans-serif;background:#ededed;margin:0}\
main{max-width:420px;margin:0 auto;background:#fff;min-height:100vh;padding:24px;box-sizing:border-box}\
h1{font-size:20px}.muted{color:#888;font-size:14px}.card{border:1px solid #e5e5e5;border-radius:8px;padding:14px;margin:12px 0}\
button{width:100%;padding:12px;border:0;border-radius:6px;font-size:17px;margin-top:10px}\
.ok{background:#07c160;color:#fff}.no{background:#f2f2f2;color:#333}label{display:block;padding:8px 0}\
.content{white-space:pre-wrap}.err{color:#c00}table{border-collapse:collapse}td,th{padding:4px 8px;text-align:left}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
         <style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        esc(title)
    )
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
    let mut users = String::new();
    for (i, u) in cfg.users.iter().enumerate() {
        let checked = if i == 0 { " checked" } else { "" };
        let _ = write!(
            users,
            "<label><input type=\"radio\" name=\"openid\" value=\"{}\"{checked}> {} <span class=\"muted\">{}</span></label>",
            esc(u.openid.as_str()),
            esc(&u.name),
            esc(u.openid.as_str())
        );
    }
    let body = format!(
        "<h1 id=\"app-name\">{}</h1>\
         <p>请求向你发送一条一次性订阅消息 · asks to send you one message</p>\
         <div class=\"card\"><div id=\"template-title\">{}</div>\
         <div class=\"muted\">template <code>{}</code> · scene <code id=\"scene\">{scene}</code></div></div>\
         <form method=\"post\" action=\"/mp/subscribemsg/decide\">\
         <input type=\"hidden\" name=\"q\" value=\"{}\">\
         <fieldset><legend class=\"muted\">Simulated WeChat user</legend>{users}</fieldset>\
         <button class=\"ok\" id=\"confirm\" name=\"decision\" value=\"confirm\">允许 Confirm</button>\
         <button class=\"no\" id=\"cancel\" name=\"decision\" value=\"cancel\">取消 Cancel</button>\
         </form>",
        esc(&app.name),
        esc(&template.title),
        esc(template.id.as_str()),
        esc(query)
    );
    page("一次性订阅消息授权", &body)
}

/// An error page (never a redirect).
pub(crate) fn error(message: &str) -> String {
    page("授权失败", &format!("<h1>无法完成授权</h1><p class=\"err\" id=\"error\">{}</p>", esc(message)))
}

/// A user's inbox, as Service Notifications would show it.
pub(crate) fn inbox(cfg: &SandboxConfig, name: &str, openid: &str, messages: &[Delivered]) -> String {
    let mut items = String::new();
    if messages.is_empty() {
        items.push_str("<p class=\"muted\" id=\"empty\">No messages yet.</p>");
    }
    for m in messages.iter().rev() {
        let app = cfg.app(&m.appid).map_or(m.appid.as_str(), |a| a.name.as_str());
        let color = m.color.as_deref().map(|c| format!(" style=\"color:{}\"", esc(c))).unwrap_or_default();
        let mut link = String::new();
        if let Some((mp, path)) = &m.miniprogram {
            let _ = write!(link, "<div class=\"muted\">opens mini program {} · {}</div>", esc(mp), esc(path));
        } else if let Some(url) = &m.url {
            let _ = write!(link, "<div class=\"muted\">opens <a href=\"{0}\">{0}</a></div>", esc(url));
        }
        let _ = write!(
            items,
            "<div class=\"card message\"><div class=\"muted\">{} · 服务通知</div><h2 class=\"title\">{}</h2>\
             <div class=\"content\"{color}>{}</div>{link}<div class=\"muted\">scene {}</div></div>",
            esc(app),
            esc(&m.title),
            esc(&m.content),
            m.scene
        );
    }
    page(
        &format!("{name} · inbox"),
        &format!(
            "<h1>{}</h1><p class=\"muted\">{} · {} message(s)</p>{items}",
            esc(name),
            esc(openid),
            messages.len()
        ),
    )
}

/// The sandbox's front page.
pub(crate) fn index(cfg: &SandboxConfig, stats: &Stats) -> String {
    let mut apps = String::new();
    for a in &cfg.apps {
        let templates: Vec<String> =
            a.templates.iter().map(|t| format!("<code>{}</code>", esc(t.id.as_str()))).collect();
        let _ = write!(
            apps,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&a.name),
            esc(a.appid.as_str()),
            templates.join("<br>")
        );
    }
    let mut users = String::new();
    for u in &cfg.users {
        let _ = write!(
            users,
            "<tr><td><a href=\"/sandbox/inbox/{0}\">{1}</a></td><td><code>{0}</code></td></tr>",
            esc(u.openid.as_str()),
            esc(&u.name)
        );
    }
    page(
        "WeChat sandbox",
        &format!(
            "<h1>WeChat sandbox</h1><p class=\"muted\">A local stand-in for api.weixin.qq.com and mp.weixin.qq.com.</p>\
             <h2>Apps</h2><table>{apps}</table><h2>Users</h2><table>{users}</table>\
             <h2>Counters</h2><p class=\"muted\">{} deliveries · {} send requests · {} token requests</p>",
            stats.deliveries,
            stats.send_requests,
            stats.classic_token_requests + stats.stable_token_requests
        ),
    )
}
