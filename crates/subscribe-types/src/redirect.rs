//! [`RedirectUrl`]: where WeChat sends the user's answer, checked so that every answer to it
//! can be read.

use std::fmt;

use crate::error::ValidationError;
use crate::query::Query;
use crate::text::HttpUrl;

/// The parameters WeChat appends to the redirect URL: the answer's own names, which the
/// answer's reader takes from the query ([`AuthorizationAnswer::parse`](crate::AuthorizationAnswer::parse)).
const ANSWER_PARAMS: [&str; 5] = ["action", "openid", "template_id", "scene", "reserved"];

/// A `redirect_url` for the authorization page: an [`HttpUrl`] whose query has none of the
/// parameters WeChat appends with the answer (`action`, `openid`, `template_id`, `scene`,
/// `reserved`, in any encoding the answer's reader decodes) and which has no `#fragment`.
///
/// Both would break every answer, never only an attacker's: a parameter of the answer that
/// is already in the URL comes back twice, which the answer's reader refuses as
/// [`QueryError::Repeated`](crate::QueryError::Repeated) rather than guess which one WeChat
/// added. Where WeChat puts the answer when the URL has a fragment is not documented
/// (UNCONFIRMED; its docs show `redirect_url/?openid=…` only, and the sandbox puts it before
/// the fragment): put after it, the browser would keep the answer to itself and never send it
/// to your server, which must verify it anyway. So a fragment is refused; a single-page app on
/// hash routes points `redirect_url` at a server route that verifies the answer and then
/// redirects to its `#/…` page. Checked when the value is built, so a misconfigured app fails
/// at start, not at its first user's answer. The URL's other parameters are left alone.
///
/// ```
/// use subscribe_types::RedirectUrl;
///
/// assert!(RedirectUrl::new("https://app.example.com/wechat/callback?shop=7").is_ok());
/// let err = RedirectUrl::new("https://app.example.com/cb?openid=o1").unwrap_err();
/// assert_eq!(err.field(), "redirect_url");
/// assert!(RedirectUrl::new("https://app.example.com/cb?%73cene=1").is_err()); // `scene`, encoded
/// assert!(RedirectUrl::new("https://app.example.com/cb#done").is_err());
/// assert!(RedirectUrl::new("/relative").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedirectUrl(HttpUrl);

impl RedirectUrl {
    const EXPECTED: &'static str = "an absolute http(s) URL without a #fragment whose query has none of the \
         answer's parameters (action, openid, template_id, scene, reserved)";

    /// Validates `value`; errors name the field `redirect_url`.
    ///
    /// # Errors
    /// [`ValidationError`] when `value` is not an [`HttpUrl`], has a `#fragment`, or its query
    /// holds one of the answer's parameters.
    pub fn new(value: impl AsRef<str> + Into<String>) -> Result<Self, ValidationError> {
        Self::try_from(HttpUrl::checked("redirect_url", value)?)
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL as an [`HttpUrl`], as an [`AuthorizeRequest`](crate::AuthorizeRequest) holds it.
    pub fn as_http_url(&self) -> &HttpUrl {
        &self.0
    }
}

impl TryFrom<HttpUrl> for RedirectUrl {
    type Error = ValidationError;

    /// Checks an [`HttpUrl`] as [`RedirectUrl::new`] does.
    fn try_from(url: HttpUrl) -> Result<Self, ValidationError> {
        let invalid = ValidationError::InvalidFormat { field: "redirect_url", expected: Self::EXPECTED };
        if url.as_str().contains('#') {
            return Err(invalid);
        }
        // The answer's reader decodes the keys as this does: a key it would read (or refuse as
        // repeated) is one WeChat's own would collide with.
        let query = Query::parse_url(url.as_str()).map_err(|_| invalid.clone())?;
        if ANSWER_PARAMS.iter().any(|p| !matches!(query.get(p), Ok(None))) {
            return Err(invalid);
        }
        Ok(Self(url))
    }
}

impl From<RedirectUrl> for HttpUrl {
    fn from(url: RedirectUrl) -> Self {
        url.0
    }
}

impl fmt::Debug for RedirectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedirectUrl").field(&self.as_str()).finish()
    }
}

impl fmt::Display for RedirectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RedirectUrl {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_answer_parameter_is_refused_and_other_parameters_are_kept() {
        for url in [
            "https://a.example/cb?action=x",
            "https://a.example/cb?x=1&openid=",
            "https://a.example/cb?template_id",
            "https://a.example/cb?%73cene=1",
            "https://a.example/cb?reserved=1&reserved=2",
            "https://a.example/cb?x=1#frag",
            "https://a.example/cb#",
        ] {
            let err = RedirectUrl::new(url).unwrap_err();
            assert_eq!(err.field(), "redirect_url", "{url}");
            assert!(matches!(err, ValidationError::InvalidFormat { .. }), "{url}: {err}");
        }
        for url in [
            "https://a.example/cb",
            "https://a.example/cb?",
            "https://a.example/cb?shop=7&shop=8&OpenId=x&scenes=1",
            "http://127.0.0.1:8080/wechat/callback",
        ] {
            assert_eq!(RedirectUrl::new(url).unwrap().as_str(), url);
        }
        assert_eq!(RedirectUrl::new("ftp://a").unwrap_err().field(), "redirect_url");
    }
}
