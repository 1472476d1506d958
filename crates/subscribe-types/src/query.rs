//! A strict `application/x-www-form-urlencoded` reader for callback and authorization queries.

use std::borrow::Cow;

/// Appends `value` percent-encoded as a URL component (like `encodeURIComponent`, stricter:
/// only RFC 3986's unreserved `A-Z a-z 0-9 - _ . ~` stay as they are). Runs of unreserved
/// characters are copied whole (the authorization URL is built on every sign-up).
pub(crate) fn push_component(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            continue;
        }
        // A run of unreserved bytes is ASCII, so both its ends are char boundaries; between
        // two escaped bytes of one character the run is empty and `start` may sit inside it.
        if start < i {
            out.push_str(&value[start..i]);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
        start = i + 1;
    }
    // Every byte of a multi-byte character is escaped, so `start` is past the last one.
    out.push_str(&value[start..]);
}

/// Why a query could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A value is not valid UTF-8 after percent-decoding.
    BadEncoding,
    /// A tracked parameter appears twice.
    Repeated(&'static str),
}

/// Extracts the query from a full URL or a bare query: the text after the first `?` if there
/// is one (else all of it), without any `#fragment`.
pub(crate) fn query_part(input: &str) -> &str {
    let q = match input.split_once('?') {
        Some((_, q)) => q,
        None => input,
    };
    q.split('#').next().unwrap_or("")
}

/// Reads the parameters named in `names` from `query`. Unknown parameters are ignored; a named
/// one that appears twice is an error. `+` decodes to a space, as in HTML forms.
pub(crate) fn read<const N: usize>(
    query: &str,
    names: [&'static str; N],
) -> Result<[Option<String>; N], ReadError> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // A key that is not valid UTF-8 is none of ours: the redirect URL's own parameters may
        // be encoded any way, and are ignored.
        let Ok(key) = decode(raw_key) else { continue };
        let Some(i) = names.iter().position(|n| *n == key) else { continue };
        if out[i].is_some() {
            return Err(ReadError::Repeated(names[i]));
        }
        out[i] = Some(decode(raw_value)?.into_owned());
    }
    Ok(out)
}

/// Percent-decodes `raw` (`+` as a space), borrowing when there is nothing to decode. A `%`
/// not followed by two hex digits stays as it is, as in the WHATWG URL standard.
fn decode(raw: &str) -> Result<Cow<'_, str>, ReadError> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex_value(bytes.get(i + 1)), hex_value(bytes.get(i + 2))) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| ReadError::BadEncoding)
}

fn hex_value(b: Option<&u8>) -> Option<u8> {
    match *b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_parameters_and_ignores_others() {
        let [a, b] = read("x=1&a=h%C3%A9llo&b=a+b&a2=9", ["a", "b"]).unwrap();
        assert_eq!(a.as_deref(), Some("héllo"));
        assert_eq!(b.as_deref(), Some("a b"));
    }

    #[test]
    fn repeated_named_parameter_is_an_error() {
        assert_eq!(read("a=1&a=2", ["a"]), Err(ReadError::Repeated("a")));
        // Unknown ones may repeat.
        assert!(read("z=1&z=2", ["a"]).is_ok());
    }

    #[test]
    fn decodes_like_the_url_standard() {
        let [a, b, c] = read("a=%e4%BD%a0+x&b=100%&c=%2+%zz%4", ["a", "b", "c"]).unwrap();
        assert_eq!(a.as_deref(), Some("你 x"));
        assert_eq!(b.as_deref(), Some("100%"));
        assert_eq!(c.as_deref(), Some("%2 %zz%4"));
        for (raw, decoded) in [("plain", "plain"), ("%41%2b+", "A+ "), ("", "")] {
            assert_eq!(decode(raw).unwrap(), decoded);
        }
        assert!(matches!(decode("plain"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(read("a=%FF", ["a"]), Err(ReadError::BadEncoding));
    }

    #[test]
    fn foreign_parameters_may_be_encoded_any_way() {
        // Found by the round-trip property: a redirect URL `http://0/?%8A` with our answer appended.
        let [a] = read("%8A&x=%FF&a=1", ["a"]).unwrap();
        assert_eq!(a.as_deref(), Some("1"));
    }

    #[test]
    fn query_part_handles_urls_and_fragments() {
        assert_eq!(query_part("https://x.test/cb?a=1#frag"), "a=1");
        assert_eq!(query_part("?a=1"), "a=1");
        assert_eq!(query_part("a=1"), "a=1");
    }

    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

    /// The `percent-encoding` crate with the unreserved set: the oracle for `push_component`.
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

    fn encoded(value: &str) -> String {
        let mut out = String::new();
        push_component(&mut out, value);
        out
    }

    #[test]
    fn encodes_like_encode_uri_component() {
        assert_eq!(
            encoded("http://support.qq.com/a b?x=1&y"),
            "http%3A%2F%2Fsupport.qq.com%2Fa%20b%3Fx%3D1%26y"
        );
        assert_eq!(encoded("A-z_0.9~"), "A-z_0.9~");
        for value in
            ["", "plain", "http://support.qq.com/a b?x=1&y", "你好-~", "a%b+c#d", "\u{7f}\u{80}é", "~"]
        {
            let mut out = String::from("prefix:");
            push_component(&mut out, value);
            assert_eq!(out, format!("prefix:{}", utf8_percent_encode(value, UNRESERVED)), "{value:?}");
        }
    }
}
