//! Step 4 of the flow: the token endpoints' requests and answers.
//!
//! Requests are built here, sans-I/O; the client sends them. Because they carry the
//! AppSecret, they are handed out as [`SecretString`]s and their `Debug` is redacted.

use secrecy::SecretString;
use serde::Deserialize;

use crate::api::{ApiError, DecodeError, ErrCode};
use crate::error::ValidationError;
use crate::ids::AppId;
use crate::secret::{AccessToken, AppSecret};

/// `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`: the classic endpoint.
/// Every call issues a new token and ends the previous one after a short overlap.
#[derive(Clone, Debug)]
pub struct ClassicTokenRequest {
    /// The app.
    pub appid: AppId,
    /// Its secret.
    pub secret: AppSecret,
}

impl ClassicTokenRequest {
    /// The path and query to `GET`. It holds the secret in clear: only a transport may see it.
    pub fn path_and_query(&self) -> SecretString {
        let secret = self.secret.expose_secret();
        let path = crate::endpoint::CLASSIC_TOKEN.path;
        let appid = self.appid.as_str();
        // Sized up front so no partial copy of the secret is left behind by a reallocation.
        let mut out = String::with_capacity(path.len() + appid.len() + 50 + secret.len() * 3);
        out.push_str(path);
        out.push_str("?grant_type=client_credential&appid=");
        out.push_str(appid);
        out.push_str("&secret=");
        crate::encoding::push_component(&mut out, secret);
        crate::secret_string(out)
    }
}

/// `POST /cgi-bin/stable_token` with a JSON body: the stable endpoint. Normal mode returns the
/// current token while it is valid; `force_refresh` ends it (20 a day, 30 s apart at most).
#[derive(Clone, Debug)]
pub struct StableTokenRequest {
    /// The app.
    pub appid: AppId,
    /// Its secret.
    pub secret: AppSecret,
    /// Ask for a new token even if the current one is valid.
    pub force_refresh: bool,
}

impl StableTokenRequest {
    /// The JSON body: `{"grant_type":"client_credential","appid","secret","force_refresh"}`.
    /// It holds the secret in clear: only a transport may see it.
    ///
    /// ```
    /// use secrecy::ExposeSecret;
    /// use subscribe_types::{AppId, AppSecret, StableTokenRequest};
    /// let req = StableTokenRequest {
    ///     appid: AppId::new("wx0123456789abcdef")?,
    ///     secret: AppSecret::new("s3cr3t")?,
    ///     force_refresh: false,
    /// };
    /// assert_eq!(
    ///     req.body().expose_secret(),
    ///     r#"{"grant_type":"client_credential","appid":"wx0123456789abcdef","secret":"s3cr3t","force_refresh":false}"#
    /// );
    /// assert!(!format!("{req:?}").contains("s3cr3t"));
    /// # Ok::<(), subscribe_types::ValidationError>(())
    /// ```
    pub fn body(&self) -> SecretString {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            grant_type: &'static str,
            appid: &'a str,
            secret: &'a str,
            force_refresh: bool,
        }
        let body = Body {
            grant_type: "client_credential",
            appid: self.appid.as_str(),
            secret: self.secret.expose_secret(),
            force_refresh: self.force_refresh,
        };
        // Sized up front (each character of the secret escapes to at most 2 in JSON: it is
        // printable ASCII) so no partial copy of the secret is left behind by a reallocation.
        // Only strings and a bool: serialization cannot fail.
        let mut out = Vec::with_capacity(100 + body.appid.len() + 2 * body.secret.len());
        let _ = serde_json::to_writer(&mut out, &body);
        crate::secret_string(String::from_utf8(out).unwrap_or_default())
    }
}

/// A token as issued: `{"access_token", "expires_in"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token.
    pub access_token: AccessToken,
    /// Seconds it stays valid from now (WeChat: at most 7200).
    pub expires_in: u32,
}

impl IssuedToken {
    /// Reads a token endpoint's answer: the token, or WeChat's error. The body is never kept:
    /// not in the result, not in the error.
    ///
    /// ```
    /// use subscribe_types::{ErrCode, IssuedToken, TokenResponseError};
    /// let t = IssuedToken::parse(br#"{"access_token":"ACCESS_TOKEN","expires_in":7200}"#)?;
    /// assert_eq!(t.expires_in, 7200);
    /// let e = IssuedToken::parse(br#"{"errcode":40013,"errmsg":"invalid appid"}"#).unwrap_err();
    /// assert!(matches!(e, TokenResponseError::Api(a) if a.code() == ErrCode::INVALID_APPID));
    /// # Ok::<(), TokenResponseError>(())
    /// ```
    ///
    /// # Errors
    /// [`TokenResponseError::Api`] for a non-zero `errcode`; `Decode` for a body that is not
    /// JSON of this shape; `Invalid` for a missing or empty token or a zero `expires_in`.
    pub fn parse(body: &[u8]) -> Result<Self, TokenResponseError> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            errcode: Option<ErrCode>,
            #[serde(default)]
            errmsg: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u32>,
        }
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| TokenResponseError::Decode(DecodeError::from(&e)))?;
        if let Some(code) = raw.errcode.filter(|c| !c.is_ok()) {
            return Err(TokenResponseError::Api(ApiError::new(code, raw.errmsg.unwrap_or_default())));
        }
        let token = raw.access_token.ok_or(ValidationError::Missing { field: "access_token" })?;
        let access_token = AccessToken::new(token)?;
        let expires_in = raw.expires_in.ok_or(ValidationError::Missing { field: "expires_in" })?;
        if expires_in == 0 {
            return Err(ValidationError::OutOfRange {
                field: "expires_in",
                min: 1,
                max: i64::from(u32::MAX),
                actual: 0,
            }
            .into());
        }
        Ok(Self { access_token, expires_in })
    }
}

/// A token endpoint's answer was not a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenResponseError {
    /// WeChat refused (bad appid or secret, IP not whitelisted, quota, …).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The body is not JSON of the expected shape.
    #[error("token response could not be decoded")]
    Decode(#[source] DecodeError),
    /// The JSON lacks the token or its lifetime, or they break a rule.
    #[error("token response is incomplete")]
    Invalid(#[from] ValidationError),
}
