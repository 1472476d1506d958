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

/// A call with a JSON body that WeChat answers with the `{errcode, errmsg}` envelope.
///
/// Implement it for an API this crate does not model yet and send it with the client's
/// generic `execute`.
pub trait Endpoint {
    /// Method, path and token needs.
    const SPEC: EndpointSpec;
    /// The request body.
    fn body(&self) -> Vec<u8>;
}
