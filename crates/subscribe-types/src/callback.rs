//! Step 2 of the flow: the user's answer, as WeChat sends it to `redirect_url`.

use serde::{Deserialize, Serialize};

use crate::authorize::{AuthorizeRequest, required};
use crate::error::ValidationError;
use crate::ids::{OpenId, Reserved, Scene, TemplateId};

/// What the user chose on the authorization page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `confirm`: the user allowed one message.
    Confirm,
    /// `cancel`: the user declined.
    Cancel,
}

impl Action {
    /// The wire value, `confirm` or `cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Cancel => "cancel",
        }
    }
}

/// A confirmed authorization: the app may send one message to `openid` with `template_id`
/// under `scene`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    /// The user who confirmed.
    pub openid: OpenId,
    /// The template confirmed.
    pub template_id: TemplateId,
    /// The scene confirmed.
    pub scene: Scene,
    /// The state echoed back.
    pub reserved: Reserved,
}

/// A declined authorization: nothing may be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancelled {
    /// The template declined.
    pub template_id: TemplateId,
    /// The scene declined.
    pub scene: Scene,
    /// The state echoed back.
    pub reserved: Reserved,
}

/// The parsed answer of an authorization: WeChat's redirect to `redirect_url`.
///
/// ```
/// use subscribe_types::{AuthorizationAnswer, Expectation, Reserved, Scene, TemplateId};
///
/// let answer = AuthorizationAnswer::parse(
///     "https://app.example.com/cb?openid=oyAaTjt-xXvP87pubE4eUOF-ttD4\
///      &template_id=7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM&action=confirm&scene=1000&reserved=hello",
/// )?;
/// let expected = Expectation::new()
///     .template_id(TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?)
///     .scene(Scene::new(1000)?)
///     .reserved(Reserved::new("hello")?);
/// answer.verify(&expected)?;
/// match answer {
///     AuthorizationAnswer::Confirmed(c) => assert_eq!(c.openid.as_str(), "oyAaTjt-xXvP87pubE4eUOF-ttD4"),
///     AuthorizationAnswer::Cancelled(_) => unreachable!(),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizationAnswer {
    /// The user confirmed.
    Confirmed(Confirmed),
    /// The user declined.
    Cancelled(Cancelled),
}

impl AuthorizationAnswer {
    /// Parses a callback URL (whole, or its path-and-query, or `?query`), by parameter name.
    /// The query is the text after the first `?` ([`Query::parse_url`](crate::query::Query::parse_url)):
    /// a server's handler passes the request's path-and-query (`/callback?…`), not the bare
    /// query cut out of it, so a `?` inside a value is never taken for the boundary.
    ///
    /// Unknown parameters (the redirect URL's own) are ignored; a missing `reserved` reads as
    /// empty; on `cancel` an `openid`, if any, is ignored.
    ///
    /// # Errors
    /// [`QueryError`] for input over [`MAX_QUERY_LEN`](crate::MAX_QUERY_LEN) (8 KiB), bad percent-encoding or non-UTF-8 text, a missing
    /// or repeated `action`/`openid`/`template_id`/`scene`/`reserved`, an `action` other than
    /// `confirm`/`cancel`, a confirmation without `openid`, and any value that breaks its rule
    /// (non-numeric or out-of-range scene, illegal characters).
    pub fn parse(input: &str) -> Result<Self, QueryError> {
        let [action, openid, template_id, scene, reserved] =
            crate::query::read_url(input, ["action", "openid", "template_id", "scene", "reserved"])?;
        let action = match required("action", action)?.as_str() {
            "confirm" => Action::Confirm,
            "cancel" => Action::Cancel,
            _ => return Err(QueryError::UnknownAction),
        };
        let template_id = TemplateId::new(required("template_id", template_id)?)?;
        let scene: Scene = required("scene", scene)?.parse()?;
        let reserved = Reserved::new(reserved.unwrap_or_default())?;
        Ok(match action {
            Action::Confirm => {
                let openid = OpenId::new(openid.ok_or(QueryError::ConfirmWithoutOpenId)?)?;
                Self::Confirmed(Confirmed { openid, template_id, scene, reserved })
            }
            Action::Cancel => Self::Cancelled(Cancelled { template_id, scene, reserved }),
        })
    }

    /// `confirm` or `cancel`.
    pub fn action(&self) -> Action {
        match self {
            Self::Confirmed(_) => Action::Confirm,
            Self::Cancelled(_) => Action::Cancel,
        }
    }

    /// The user, when confirmed.
    pub fn openid(&self) -> Option<&OpenId> {
        match self {
            Self::Confirmed(c) => Some(&c.openid),
            Self::Cancelled(_) => None,
        }
    }

    /// The template answered for.
    pub fn template_id(&self) -> &TemplateId {
        match self {
            Self::Confirmed(c) => &c.template_id,
            Self::Cancelled(c) => &c.template_id,
        }
    }

    /// The scene answered for.
    pub fn scene(&self) -> Scene {
        match self {
            Self::Confirmed(c) => c.scene,
            Self::Cancelled(c) => c.scene,
        }
    }

    /// The echoed state.
    pub fn reserved(&self) -> &Reserved {
        match self {
            Self::Confirmed(c) => &c.reserved,
            Self::Cancelled(c) => &c.reserved,
        }
    }

    /// Checks the answer against what was asked. `reserved` is compared in constant time.
    /// Verify cancellations too: an unverified cancel is as forgeable as a confirm.
    ///
    /// # Errors
    /// [`Mismatch`] naming the first field that differs.
    pub fn verify(&self, expected: &Expectation) -> Result<(), Mismatch> {
        // Compare `reserved` first and always, so timing does not reveal which check failed.
        let reserved_ok = expected.reserved.as_ref().is_none_or(|r| r.ct_eq(self.reserved()));
        if expected.template_id.as_ref().is_some_and(|t| t != self.template_id()) {
            return Err(Mismatch { field: "template_id" });
        }
        if expected.scene.is_some_and(|s| s != self.scene()) {
            return Err(Mismatch { field: "scene" });
        }
        if !reserved_ok {
            return Err(Mismatch { field: "reserved" });
        }
        Ok(())
    }
}

/// What an answer is expected to carry; unset parts are not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    template_id: Option<TemplateId>,
    scene: Option<Scene>,
    reserved: Option<Reserved>,
}

impl Expectation {
    /// Expects nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expects this template.
    #[must_use]
    pub fn template_id(mut self, template_id: TemplateId) -> Self {
        self.template_id = Some(template_id);
        self
    }

    /// Expects this scene.
    #[must_use]
    pub fn scene(mut self, scene: Scene) -> Self {
        self.scene = Some(scene);
        self
    }

    /// Expects this state value.
    #[must_use]
    pub fn reserved(mut self, reserved: Reserved) -> Self {
        self.reserved = Some(reserved);
        self
    }
}

impl From<&AuthorizeRequest> for Expectation {
    /// Everything the request asked: template, scene and state.
    fn from(r: &AuthorizeRequest) -> Self {
        Self::new().template_id(r.template_id.clone()).scene(r.scene).reserved(r.reserved.clone())
    }
}

/// A query string (an authorization answer or request) could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The input is larger than allowed.
    #[error("query is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Size given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Percent-encoding is broken or decodes to invalid UTF-8.
    #[error("query is not valid percent-encoded UTF-8")]
    BadEncoding,
    /// A required parameter is absent.
    #[error("parameter `{param}` is missing")]
    Missing {
        /// The parameter.
        param: &'static str,
    },
    /// A parameter appears more than once; or a field of a forwarded SDK answer does, in one
    /// spelling or two (`openId` and `openid`), named as iOS spells it.
    #[error("parameter `{param}` appears more than once")]
    Repeated {
        /// The parameter.
        param: &'static str,
    },
    /// `action` is not one of the allowed values.
    #[error("parameter `action` has an unknown value")]
    UnknownAction,
    /// `action=confirm` without an `openid`.
    #[error("a confirmation must carry `openid`")]
    ConfirmWithoutOpenId,
    /// A parameter's value breaks its rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A forwarded SDK answer is not a JSON object of the SDK's fields (where reading stopped;
    /// never the text, which may hold an openid).
    #[error("the answer is not the SDK's JSON object (line {line}, column {column})")]
    NotJson {
        /// Line where reading stopped (1-based; 0 when the shape, not the syntax, was wrong).
        line: usize,
        /// Column where reading stopped.
        column: usize,
    },
}

/// An answer does not match what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the answer's `{field}` does not match the request")]
pub struct Mismatch {
    /// `template_id`, `scene` or `reserved`.
    pub field: &'static str,
}
