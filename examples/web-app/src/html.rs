//! The few HTML helpers the pages need: escaping and one layout.

use axum::response::Html;

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (already HTML).
pub(crate) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Example Shop</title>
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
 header {{ border-bottom: 1px solid #ddd; margin-bottom: 1.5rem; }}
 header a {{ color: #222; text-decoration: none; font-weight: 600; }}
 .card {{ border: 1px solid #ddd; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }}
 .ok {{ border-color: #07c160; }} .warn {{ border-color: #fa9d3b; }} .error {{ border-color: #fa5151; }}
 a.button, button {{ display: inline-block; background: #07c160; color: #fff; border: 0; border-radius: 6px;
   padding: .6rem 1.1rem; font-size: 1rem; text-decoration: none; cursor: pointer; }}
 table {{ border-collapse: collapse; width: 100%; }} td, th {{ border-bottom: 1px solid #eee; padding: .3rem .5rem; text-align: left; }}
 label {{ display: block; margin: .6rem 0 .2rem; }} input[type=text] {{ width: 100%; padding: .4rem; }}
 code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style></head>
<body><header><p><a href="/">Example Shop</a> · <a href="/admin">admin</a></p></header>
{body}
</body></html>"#,
        title = esc(title),
    ))
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
