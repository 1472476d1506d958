//! The workspace's one strict `application/x-www-form-urlencoded` reader: the authorization
//! callback and request here, the event push's signed query (`subscribe-events`) and the
//! credential-bearing queries the sandbox reads all go through [`Query`].
//!
//! Strict where it matters: a parameter that is asked for and appears twice is an error
//! ([`QueryError::Repeated`]), never "the last one wins" (or the first), so two readers of one
//! query (a proxy, a log, this code) cannot see two different values of a signed parameter.
//! Parameters nobody asks for are left alone: a redirect URL's own parameters may repeat and
//! be encoded any way.
//!
//! ```
//! use subscribe_types::QueryError;
//! use subscribe_types::query::Query;
//!
//! let q = Query::parse("?nonce=%34%32&timestamp=1800000000&x=1&x=2")?;
//! assert_eq!(q.get("nonce")?.as_deref(), Some("42"));
//! assert_eq!(q.get("echostr")?, None);
//! let q = Query::parse("signature=a&timestamp=1&signature=b")?;
//! assert_eq!(q.get("signature"), Err(QueryError::Repeated { param: "signature" }));
//! # Ok::<(), QueryError>(())
//! ```

use std::borrow::Cow;

use crate::callback::QueryError;

/// Longest query string (or URL) that [`Query::parse`] accepts, in bytes: 8 KiB, above the
/// longest authorization URL a valid request builds on WeChat's host (every field at its
/// limit, the redirect URL escaped to three bytes per byte: about 6.5 KiB), so whatever this
/// crate builds, it also reads back.
pub const MAX_QUERY_LEN: usize = 8192;

/// A query string, split once; each parameter is decoded when it is asked for.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    /// Decoded keys (a key that is not UTF-8 is nobody's and is dropped) and raw values.
    pairs: Vec<(Cow<'a, str>, &'a str)>,
}

impl<'a> Query<'a> {
    /// Reads a URL or a bare query: the text after the first `?` if there is one (else all of
    /// it), without any `#fragment`. `+` decodes to a space, as in HTML forms.
    ///
    /// # Errors
    /// [`QueryError::TooLarge`] over [`MAX_QUERY_LEN`].
    pub fn parse(input: &'a str) -> Result<Self, QueryError> {
        Self::with_limit(input, MAX_QUERY_LEN)
    }

    /// As [`parse`](Self::parse), with another size limit (an HTML form's body, say).
    ///
    /// # Errors
    /// [`QueryError::TooLarge`] over `max_len` bytes.
    pub fn with_limit(input: &'a str, max_len: usize) -> Result<Self, QueryError> {
        if input.len() > max_len {
            return Err(QueryError::TooLarge { len: input.len(), max: max_len });
        }
        let pairs = query_part(input)
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
                // A key that is not valid UTF-8 is none of ours: the redirect URL's own
                // parameters may be encoded any way, and are ignored.
                let key = crate::encoding::decode_component(raw_key).ok()?;
                Some((key, raw_value))
            })
            .collect();
        Ok(Self { pairs })
    }

    /// The decoded value of `name`, if it is there.
    ///
    /// # Errors
    /// [`QueryError::Repeated`] when `name` appears more than once (whatever the values, and
    /// however each occurrence is spelt); [`QueryError::BadEncoding`] when its value does not
    /// decode to UTF-8.
    pub fn get(&self, name: &'static str) -> Result<Option<Cow<'a, str>>, QueryError> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| *v);
        let Some(raw) = found.next() else { return Ok(None) };
        if found.next().is_some() {
            return Err(QueryError::Repeated { param: name });
        }
        crate::encoding::decode_component(raw).map(Some).map_err(|_| QueryError::BadEncoding)
    }

    /// The decoded values of `names`, in order; each as [`get`](Self::get).
    ///
    /// # Errors
    /// As [`get`](Self::get), for the first name that fails.
    pub fn read<const N: usize>(&self, names: [&'static str; N]) -> Result<[Option<String>; N], QueryError> {
        let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
        for (slot, name) in out.iter_mut().zip(names) {
            *slot = self.get(name)?.map(Cow::into_owned);
        }
        Ok(out)
    }
}

/// Reads the named parameters of a URL or query (see [`Query::parse`]).
///
/// # Errors
/// As [`Query::parse`] and [`Query::read`].
pub fn read<const N: usize>(
    input: &str,
    names: [&'static str; N],
) -> Result<[Option<String>; N], QueryError> {
    Query::parse(input)?.read(names)
}

/// The query of a full URL or a bare query: the text after the first `?` if there is one
/// (else all of it), without any `#fragment`.
fn query_part(input: &str) -> &str {
    let q = match input.split_once('?') {
        Some((_, q)) => q,
        None => input,
    };
    q.split('#').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_bare<const N: usize>(
        q: &str,
        names: [&'static str; N],
    ) -> Result<[Option<String>; N], QueryError> {
        read(q, names)
    }

    #[test]
    fn reads_named_parameters_and_ignores_others() {
        let [a, b] = read_bare("x=1&a=h%C3%A9llo&b=a+b&a2=9", ["a", "b"]).unwrap();
        assert_eq!(a.as_deref(), Some("héllo"));
        assert_eq!(b.as_deref(), Some("a b"));
    }

    #[test]
    fn repeated_named_parameter_is_an_error() {
        assert_eq!(read_bare("a=1&a=2", ["a"]), Err(QueryError::Repeated { param: "a" }));
        // The same value twice, or the key spelt another way, is a repeat too.
        assert_eq!(read_bare("a=1&a=1", ["a"]), Err(QueryError::Repeated { param: "a" }));
        assert_eq!(read_bare("a=1&%61=1", ["a"]), Err(QueryError::Repeated { param: "a" }));
        assert_eq!(read_bare("a&a=1", ["a"]), Err(QueryError::Repeated { param: "a" }));
        // Unknown ones may repeat.
        assert!(read_bare("z=1&z=2", ["a"]).is_ok());
    }

    #[test]
    fn decodes_like_the_url_standard() {
        let [a, b, c] = read_bare("a=%e4%BD%a0+x&b=100%&c=%2+%zz%4", ["a", "b", "c"]).unwrap();
        assert_eq!(a.as_deref(), Some("你 x"));
        assert_eq!(b.as_deref(), Some("100%"));
        assert_eq!(c.as_deref(), Some("%2 %zz%4"));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(read_bare("a=%FF", ["a"]), Err(QueryError::BadEncoding));
    }

    #[test]
    fn foreign_parameters_may_be_encoded_any_way() {
        // Found by the round-trip property: a redirect URL `http://0/?%8A` with our answer appended.
        let [a] = read_bare("%8A&x=%FF&a=1", ["a"]).unwrap();
        assert_eq!(a.as_deref(), Some("1"));
    }

    #[test]
    fn query_part_handles_urls_and_fragments() {
        assert_eq!(query_part("https://x.test/cb?a=1#frag"), "a=1");
        assert_eq!(query_part("?a=1"), "a=1");
        assert_eq!(query_part("a=1"), "a=1");
    }

    #[test]
    fn the_size_limit_is_checked_first() {
        let long = "a=".to_owned() + &"x".repeat(MAX_QUERY_LEN);
        assert_eq!(
            Query::parse(&long).unwrap_err(),
            QueryError::TooLarge { len: long.len(), max: MAX_QUERY_LEN }
        );
        assert!(Query::with_limit(&long, long.len()).is_ok());
    }
}
