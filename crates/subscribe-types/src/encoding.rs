//! URL encoding and redaction, one of each for the workspace: the client, the transport and the
//! sandbox all use these (through the `percent-encoding` and `form_urlencoded` crates).

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What stays as it is in a URL component: RFC 3986's unreserved `A-Z a-z 0-9 - _ . ~`
/// (`encodeURIComponent`, stricter). Everything else is percent-encoded.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Appends `value` percent-encoded as a URL component (see [`COMPONENT`]).
///
/// ```
/// let mut out = String::from("redirect_url=");
/// subscribe_types::encoding::push_component(&mut out, "https://a.example/cb?x=1");
/// assert_eq!(out, "redirect_url=https%3A%2F%2Fa.example%2Fcb%3Fx%3D1");
/// ```
pub fn push_component(out: &mut String, value: &str) {
    out.extend(utf8_percent_encode(value, COMPONENT));
}

/// Percent-decodes a query key or value, `+` as a space (HTML forms), borrowing when there is
/// nothing to decode. A `%` not followed by two hex digits stays as it is (the WHATWG URL
/// standard).
///
/// # Errors
/// When the decoded bytes are not UTF-8.
pub fn decode_component(raw: &str) -> Result<Cow<'_, str>, std::str::Utf8Error> {
    // Most values have nothing to decode: hand them back without a second UTF-8 check.
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.contains('+') {
        return percent_decode_str(raw).decode_utf8();
    }
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|c| Cow::Owned(c.into_owned()))
}

/// Query parameters whose values are masked wherever a URI is printed or logged.
pub const REDACTED_PARAMS: &[&str] = &["access_token", "authorizer_access_token", "secret", "appsecret"];

/// Masks the values of [`REDACTED_PARAMS`] in the query and any user-info in the authority:
/// the one function every crate prints URIs through.
///
/// ```
/// use subscribe_types::encoding::redact_uri;
/// assert_eq!(
///     redact_uri("http://u:p@h/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S#x"),
///     "http://[redacted]@h/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=[redacted]#x"
/// );
/// assert_eq!(redact_uri("/p?A=1&ACCESS_TOKEN=x&b=2"), "/p?A=1&ACCESS_TOKEN=[redacted]&b=2");
/// ```
pub fn redact_uri(uri: &str) -> String {
    let (before_fragment, fragment) = match uri.split_once('#') {
        Some((a, b)) => (a, Some(b)),
        None => (uri, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(uri.len());
    // User-info: between "://" and the first '@' before the path.
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((_, host)) => {
                    out.push_str("[redacted]@");
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            // The name as the strict reader reads it (percent-decoded: `sec%72et` is `secret`),
            // and one that does not decode is redacted rather than guessed at.
            let secret = |k: &str| {
                decode_component(k)
                    .map_or(true, |k| REDACTED_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)))
            };
            match pair.split_once('=') {
                Some((k, _)) if secret(k) => {
                    out.push_str(k);
                    out.push_str("=[redacted]");
                }
                _ => out.push_str(pair),
            }
        }
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_redacted_under_any_name_the_reader_reads_as_its_name() {
        let uri = "/cgi-bin/token?grant_type=client_credential&appid=wx1&sec%72et=TOPSECRET&access%5Ftoken=TOK&%FF=X";
        let logged = redact_uri(uri);
        assert!(
            !logged.contains("TOPSECRET") && !logged.contains("TOK&") && !logged.ends_with("=X"),
            "{logged}"
        );
        // What the reader takes for the secret, the log hides.
        let read = crate::query::Query::parse_query("appid=wx1&sec%72et=TOPSECRET").ok();
        let secret = read.as_ref().and_then(|q| q.get("secret").ok().flatten());
        assert_eq!(secret.as_deref(), Some("TOPSECRET"));
        assert!(logged.contains("appid=wx1"), "{logged}");
    }

    #[test]
    fn encodes_like_encode_uri_component() {
        let encoded = |v: &str| {
            let mut out = String::new();
            push_component(&mut out, v);
            out
        };
        assert_eq!(
            encoded("http://support.qq.com/a b?x=1&y"),
            "http%3A%2F%2Fsupport.qq.com%2Fa%20b%3Fx%3D1%26y"
        );
        assert_eq!(encoded("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(encoded("你好"), "%E4%BD%A0%E5%A5%BD");
    }

    #[test]
    fn decodes_like_the_url_standard() {
        for (raw, decoded) in
            [("plain", "plain"), ("%41%2b+", "A+ "), ("", ""), ("100%", "100%"), ("%2+%zz%4", "%2 %zz%4")]
        {
            assert_eq!(decode_component(raw).unwrap(), decoded, "{raw}");
        }
        assert!(matches!(decode_component("plain"), Ok(Cow::Borrowed(_))));
        assert!(decode_component("%FF").is_err());
    }

    #[test]
    fn redaction_leaves_other_uris_alone() {
        assert_eq!(redact_uri("/p"), "/p");
        assert_eq!(redact_uri("/p?secret"), "/p?secret");
        assert_eq!(redact_uri("https://h/x?appsecret=1&a=2"), "https://h/x?appsecret=[redacted]&a=2");
    }
}
