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
//! Two entry points, for two kinds of input, so that no reader guesses which one it was given:
//!
//! - [`Query::parse_query`] reads a **bare query**: what a server's handler is handed as the
//!   request's query (axum's `RawQuery`, `Uri::query`), an HTML form's body, a push's signed
//!   query. A `?` in it is just a character of a key or value (`a=1&b=?a=2` has `a` = `1` and
//!   `b` = `?a=2`), as every other reader of that query (axum's `Query`, `serde_urlencoded`,
//!   a proxy's log) sees it. Reading a bare query as a URL would let
//!   `access_token=x&y=?access_token=real` say `real` here and `x` everywhere else.
//! - [`Query::parse_url`] reads a **whole URL or path-and-query** (`https://…/cb?a=1#f`,
//!   `/cb?a=1`, or `?a=1`): the text after its first `?`, without any `#fragment`. A callback
//!   or redirect URL goes here, never a query already cut out of its request.
//!
//! ```
//! use subscribe_types::QueryError;
//! use subscribe_types::query::Query;
//!
//! let q = Query::parse_url("https://app.test/cb?nonce=%34%32&timestamp=1800000000&x=1&x=2#f")?;
//! assert_eq!(q.get("nonce")?.as_deref(), Some("42"));
//! assert_eq!(q.get("echostr")?, None);
//! let q = Query::parse_query("signature=a&timestamp=1&signature=b")?;
//! assert_eq!(q.get("signature"), Err(QueryError::Repeated { param: "signature" }));
//! // In a bare query a `?` is part of a value: `b` is `?a=2`, and `a` is `1`.
//! let q = Query::parse_query("a=1&b=?a=2")?;
//! assert_eq!((q.get("a")?.as_deref(), q.get("b")?.as_deref()), (Some("1"), Some("?a=2")));
//! # Ok::<(), QueryError>(())
//! ```

use std::borrow::Cow;

use crate::callback::QueryError;

/// Longest query string (or URL) that [`Query::parse_query`] and [`Query::parse_url`] accept, in bytes: 8 KiB, above the
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
    /// Reads a bare query string (no `?` handling at all: a `?` is a character of a key or
    /// value, and `#` too), as the request's other readers do. `+` decodes to a space, as in
    /// HTML forms. For a whole URL, see [`parse_url`](Self::parse_url).
    ///
    /// # Errors
    /// [`QueryError::TooLarge`] over [`MAX_QUERY_LEN`].
    pub fn parse_query(query: &'a str) -> Result<Self, QueryError> {
        Self::parse_query_with_limit(query, MAX_QUERY_LEN)
    }

    /// As [`parse_query`](Self::parse_query), with another size limit (an HTML form's body,
    /// say).
    ///
    /// # Errors
    /// [`QueryError::TooLarge`] over `max_len` bytes.
    pub fn parse_query_with_limit(query: &'a str, max_len: usize) -> Result<Self, QueryError> {
        check_len(query, max_len)?;
        Ok(Self::split(query))
    }

    /// Reads the query of a whole URL or path-and-query: the text after its first `?` (all
    /// of the input when it has none), without any `#fragment`. Only for input that really is
    /// a URL (a callback or redirect URL): a bare query that may hold a `?` of its own goes to
    /// [`parse_query`](Self::parse_query).
    ///
    /// # Errors
    /// [`QueryError::TooLarge`] when the whole input is over [`MAX_QUERY_LEN`].
    pub fn parse_url(url: &'a str) -> Result<Self, QueryError> {
        check_len(url, MAX_QUERY_LEN)?;
        Ok(Self::split(url_query(url)))
    }

    fn split(query: &'a str) -> Self {
        let pairs = query
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
        Self { pairs }
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

/// Reads the named parameters of a bare query (see [`Query::parse_query`]).
///
/// # Errors
/// As [`Query::parse_query`] and [`Query::read`].
pub fn read_query<const N: usize>(
    query: &str,
    names: [&'static str; N],
) -> Result<[Option<String>; N], QueryError> {
    Query::parse_query(query)?.read(names)
}

/// Reads the named parameters of a whole URL's query (see [`Query::parse_url`]).
///
/// # Errors
/// As [`Query::parse_url`] and [`Query::read`].
pub fn read_url<const N: usize>(
    url: &str,
    names: [&'static str; N],
) -> Result<[Option<String>; N], QueryError> {
    Query::parse_url(url)?.read(names)
}

fn check_len(input: &str, max: usize) -> Result<(), QueryError> {
    if input.len() > max {
        return Err(QueryError::TooLarge { len: input.len(), max });
    }
    Ok(())
}

/// The query of a whole URL (or path-and-query): the text after the first `?` if there is
/// one (else all of it), without any `#fragment`.
fn url_query(input: &str) -> &str {
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
        read_query(q, names)
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
    fn url_query_handles_urls_and_fragments() {
        assert_eq!(url_query("https://x.test/cb?a=1#frag"), "a=1");
        assert_eq!(url_query("/cb?a=1&b=?a=2"), "a=1&b=?a=2");
        assert_eq!(url_query("?a=1"), "a=1");
        assert_eq!(url_query("a=1"), "a=1");
    }

    #[test]
    fn a_question_mark_in_a_bare_query_is_part_of_a_value() {
        // Read as a URL, this would be the query `a=2`: another `a` than every other reader
        // of the request's query sees.
        let [a, b] = read_bare("a=1&b=?a=2", ["a", "b"]).unwrap();
        assert_eq!((a.as_deref(), b.as_deref()), (Some("1"), Some("?a=2")));
        let [token, y] = read_bare("access_token=x&y=?access_token=real", ["access_token", "y"]).unwrap();
        assert_eq!((token.as_deref(), y.as_deref()), (Some("x"), Some("?access_token=real")));
        // A `?` (or `#`) at the start, or escaped, is a character like any other.
        let [q, a] = read_bare("?a=1&a%3F=2#x", ["?a", "a?"]).unwrap();
        assert_eq!((q.as_deref(), a.as_deref()), (Some("1"), Some("2#x")));
        // The same query after a path, read as a URL, is the same parameters.
        let [a, b] = read_url("/cb?a=1&b=?a=2", ["a", "b"]).unwrap();
        assert_eq!((a.as_deref(), b.as_deref()), (Some("1"), Some("?a=2")));
    }

    proptest::proptest! {
        /// A bare query reads as its pairs, whatever `?`, `#`, `=` or `/` its values hold; the
        /// same query behind a path reads alike as a URL (when no `#` starts a fragment).
        #[test]
        fn a_bare_query_reads_as_its_pairs(
            values in proptest::array::uniform3(proptest::option::of("[a-z0-9?=/#:.]{0,12}")),
        ) {
            const NAMES: [&str; 3] = ["a", "access_token", "signature"];
            let query = NAMES
                .iter()
                .zip(&values)
                .filter_map(|(name, value)| Some(format!("{name}={}", value.as_ref()?)))
                .collect::<Vec<_>>()
                .join("&");
            proptest::prop_assert_eq!(&read_query(&query, NAMES).unwrap(), &values);
            if !query.contains('#') {
                proptest::prop_assert_eq!(&read_url(&format!("/path?{query}"), NAMES).unwrap(), &values);
            }
        }
    }

    #[test]
    fn the_size_limit_is_checked_first() {
        let long = "a=".to_owned() + &"x".repeat(MAX_QUERY_LEN);
        assert_eq!(
            Query::parse_query(&long).unwrap_err(),
            QueryError::TooLarge { len: long.len(), max: MAX_QUERY_LEN }
        );
        assert_eq!(
            Query::parse_url(&long).unwrap_err(),
            QueryError::TooLarge { len: long.len(), max: MAX_QUERY_LEN }
        );
        assert!(Query::parse_query_with_limit(&long, long.len()).is_ok());
    }
}
