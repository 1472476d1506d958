//! A strict `application/x-www-form-urlencoded` reader for callback and authorization queries.

use std::borrow::Cow;

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

fn decode(raw: &str) -> Result<Cow<'_, str>, ReadError> {
    crate::encoding::decode_component(raw).map_err(|_| ReadError::BadEncoding)
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
}
