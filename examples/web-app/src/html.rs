//! The one page layout, written with `maud` (which escapes every interpolated value, as the
//! sandbox's pages do).

use axum::response::Html;
use maud::{DOCTYPE, PreEscaped, Render, html};

const STYLE: &str = "
 body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 header { border-bottom: 1px solid #ddd; margin-bottom: 1.5rem; }
 header a { color: #222; text-decoration: none; font-weight: 600; }
 .card { border: 1px solid #ddd; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
 .ok { border-color: #07c160; } .warn { border-color: #fa9d3b; } .error { border-color: #fa5151; }
 a.button, button { display: inline-block; background: #07c160; color: #fff; border: 0; border-radius: 6px;
   padding: .6rem 1.1rem; font-size: 1rem; text-decoration: none; cursor: pointer; }
 table { border-collapse: collapse; width: 100%; } td, th { border-bottom: 1px solid #eee; padding: .3rem .5rem; text-align: left; }
 label { display: block; margin: .6rem 0 .2rem; } input[type=text] { width: 100%; padding: .4rem; }
 code { background: #f4f4f4; padding: 0 .2rem; word-break: break-all; }
";

/// A whole page around `body`.
pub(crate) fn page(title: &str, body: impl Render) -> Html<String> {
    layout(title, None, body)
}

/// A whole page around `body` that the browser reloads every `seconds` (a job's progress).
pub(crate) fn refreshing_page(title: &str, seconds: u32, body: impl Render) -> Html<String> {
    layout(title, Some(seconds), body)
}

fn layout(title: &str, refresh: Option<u32>, body: impl Render) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(seconds) = refresh { meta http-equiv="refresh" content=(seconds); }
                    title { (title) " · Example Shop" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    header { p { a href="/" { "Example Shop" } " · " a href="/admin" { "admin" } } }
                    (body)
                }
            }
        }
        .into_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_bodies_are_escaped() {
        let Html(text) = page("<b>&'", html! { p { (r#"<a href="x">"#) } });
        assert!(text.contains("<title>&lt;b&gt;&amp;' · Example Shop</title>"), "{text}");
        assert!(text.contains("<p>&lt;a href=&quot;x&quot;&gt;</p>"), "{text}");
    }
}
