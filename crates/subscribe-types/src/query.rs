//! A strict `application/x-www-form-urlencoded` reader for callback and authorization queries.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The characters left as they are by [`encode_component`]: RFC 3986 unreserved.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes `value` as a URL component (like `encodeURIComponent`, stricter).
pub(crate) fn encode_component(value: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(value, COMPONENT)
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
        out[i] = Some(decode(raw_value)?);
    }
    Ok(out)
}

fn decode(raw: &str) -> Result<String, ReadError> {
    let plus_as_space;
    let raw = if raw.contains('+') {
        plus_as_space = raw.replace('+', " ");
        &plus_as_space
    } else {
        raw
    };
    percent_decode_str(raw)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ReadError::BadEncoding)
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

    #[test]
    fn encodes_like_encode_uri_component() {
        assert_eq!(
            encode_component("http://support.qq.com/a b?x=1&y").to_string(),
            "http%3A%2F%2Fsupport.qq.com%2Fa%20b%3Fx%3D1%26y"
        );
        assert_eq!(encode_component("A-z_0.9~").to_string(), "A-z_0.9~");
    }
}
