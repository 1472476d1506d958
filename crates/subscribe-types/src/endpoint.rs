//! Endpoint descriptions: method, path and whether an access token is needed. Sans-I/O.

/// An HTTP method, without depending on an HTTP crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// `GET` or `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// Describes one WeChat endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// A short name for logs and metrics.
    pub name: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// The path on the API host.
    pub path: &'static str,
    /// Whether `?access_token=…` is appended.
    pub needs_access_token: bool,
}

/// `POST /cgi-bin/message/template/subscribe?access_token=…`: send a one-time message.
pub const SEND_SUBSCRIBE_MESSAGE: EndpointSpec = EndpointSpec {
    name: "send_subscribe_message",
    method: Method::Post,
    path: "/cgi-bin/message/template/subscribe",
    needs_access_token: true,
};

/// `GET /cgi-bin/token`: the classic token endpoint.
pub const CLASSIC_TOKEN: EndpointSpec =
    EndpointSpec { name: "token", method: Method::Get, path: "/cgi-bin/token", needs_access_token: false };

/// `POST /cgi-bin/stable_token`: the stable token endpoint.
pub const STABLE_TOKEN: EndpointSpec = EndpointSpec {
    name: "stable_token",
    method: Method::Post,
    path: "/cgi-bin/stable_token",
    needs_access_token: false,
};

/// A call with a JSON body that WeChat answers with the `{errcode, errmsg}` envelope, and on
/// success (`errcode` 0) with the fields of [`Response`](Self::Response).
///
/// Sans-I/O: it says what to send and what comes back; the client's generic `execute` sends it
/// (serializing [`body`](Self::body) with `serde_json`) and decodes the answer. Implement it for
/// an API this crate does not model yet:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use subscribe_types::endpoint::{Endpoint, EndpointSpec, Method};
///
/// #[derive(Serialize)]
/// struct AddTemplate { tid: String, kid_list: Vec<u32> }
///
/// #[derive(Deserialize)]
/// struct Added { #[serde(rename = "priTmplId")] pri_tmpl_id: String }
///
/// impl Endpoint for AddTemplate {
///     const SPEC: EndpointSpec = EndpointSpec {
///         name: "add_template",
///         method: Method::Post,
///         path: "/wxaapi/newtmpl/addtemplate",
///         needs_access_token: true,
///     };
///     type Body = Self;
///     type Response = Added;
///     fn body(&self) -> &Self { self }
/// }
/// # let _ = AddTemplate { tid: "1".into(), kid_list: vec![1] }.body();
/// ```
pub trait Endpoint {
    /// Method, path and token needs.
    const SPEC: EndpointSpec;
    /// What is serialized as the JSON body.
    type Body: serde::Serialize + ?Sized;
    /// What a successful answer carries besides `errcode` and `errmsg`.
    type Response: serde::de::DeserializeOwned;
    /// The request body.
    fn body(&self) -> &Self::Body;
}

/// The answer of an endpoint whose success carries nothing but `{"errcode":0,"errmsg":"ok"}`.
/// Other fields are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct Ack {}
