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
pub const SEND_ONE_TIME_MESSAGE: EndpointSpec = EndpointSpec {
    name: "send_subscribe_message",
    method: Method::Post,
    path: "/cgi-bin/message/template/subscribe",
    needs_access_token: true,
};

/// `POST /cgi-bin/message/subscribe/send?access_token=…`: a mini-program subscribe message.
pub const SEND_MINI_PROGRAM_MESSAGE: EndpointSpec = EndpointSpec {
    name: "send_mini_program_message",
    method: Method::Post,
    path: "/cgi-bin/message/subscribe/send",
    needs_access_token: true,
};

/// `POST /cgi-bin/message/subscribe/bizsend?access_token=…`: a service account's subscribe
/// notification.
pub const SEND_NOTIFICATION: EndpointSpec = EndpointSpec {
    name: "send_subscribe_notification",
    method: Method::Post,
    path: "/cgi-bin/message/subscribe/bizsend",
    needs_access_token: true,
};

/// The template library's calls, under `/wxaapi/newtmpl/`.
macro_rules! library_endpoint {
    ($(#[$doc:meta])* $name:ident, $method:ident, $path:literal) => {
        $(#[$doc])*
        pub const $name: EndpointSpec = EndpointSpec {
            name: $path,
            method: Method::$method,
            path: concat!("/wxaapi/newtmpl/", $path),
            needs_access_token: true,
        };
    };
}
library_endpoint!(
    /// `GET /wxaapi/newtmpl/getcategory`: the account's categories.
    GET_CATEGORY, Get, "getcategory"
);
library_endpoint!(
    /// `GET /wxaapi/newtmpl/getpubtemplatetitles`: public templates of some categories.
    GET_PUB_TEMPLATE_TITLES, Get, "getpubtemplatetitles"
);
library_endpoint!(
    /// `GET /wxaapi/newtmpl/getpubtemplatekeywords`: a public template's keywords.
    GET_PUB_TEMPLATE_KEYWORDS, Get, "getpubtemplatekeywords"
);
library_endpoint!(
    /// `POST /wxaapi/newtmpl/addtemplate`: a private template from a public one.
    ADD_TEMPLATE, Post, "addtemplate"
);
library_endpoint!(
    /// `POST /wxaapi/newtmpl/deltemplate`: deletes a private template.
    DEL_TEMPLATE, Post, "deltemplate"
);
library_endpoint!(
    /// `GET /wxaapi/newtmpl/gettemplate`: the account's private templates.
    GET_TEMPLATE, Get, "gettemplate"
);

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
    /// The request body (not sent for a [`Method::Get`] endpoint).
    fn body(&self) -> &Self::Body;
    /// Query parameters after `access_token`, already encoded (`tid=99`); none by default.
    fn query(&self) -> Option<String> {
        None
    }
}

/// The answer of an endpoint whose success carries nothing but `{"errcode":0,"errmsg":"ok"}`.
/// Other fields are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct Ack {}
