//! The OpenAPI 3.1 document of [`Gateway::router`](crate::Gateway::router), generated from the
//! code: each handler's `#[utoipa::path]` (its request body, parameters and every status it can
//! answer) and the schemas derived on the types it reads and answers. The routes are registered
//! through utoipa-axum's router ([`routes`]), so a route cannot be served without being
//! documented. `GET /openapi.json` serves it, without a key; `crates/subscribe-gateway/openapi.json`
//! is the committed copy, which a test keeps equal to what the code generates.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{Gateway, api, consent, dispatch, grants, health, push, send, status};

/// The name of the bearer security scheme in the document.
pub(crate) const BEARER: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "subscribe-gateway",
        description = "The central token service for WeChat access tokens, the send API of \
            subscription messages, and users' consent collected as grants. Every route under \
            `/v1` takes an API key (`Authorization: Bearer <key>`) with a scope for the app in the \
            path, except the consent callback (the user's browser calls it) and the push endpoint \
            (WeChat calls it, signed with the app's Token); `/healthz`, \
            `/readyz` and `/openapi.json` take none. Errors are JSON: \
            `{\"error\": \"<code>\", \"message\": \"…\"}`. The manual is `docs/gateway.md`."
    ),
    modifiers(&Bearer),
    // The send outcome is named in responses made by `IntoResponses`, which register no schema.
    components(schemas(send::Body)),
    tags(
        (name = "tokens", description = "The central token service"),
        (name = "send", description = "The send API: one route per kind of message"),
        (name = "consent", description = "Users' one-time subscriptions asked for, answered and recorded as grants"),
        (name = "dispatch", description = "Dispatch jobs: one message to every pending grant of a template, run by the gateway"),
        (name = "push", description = "The apps' server URLs: WeChat's event pushes, fed to the grants and forwarded to the webhooks"),
        (name = "service", description = "Health, readiness and this document")
    )
)]
struct Doc;

/// Adds the bearer scheme (the API keys) to the components.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key of the configuration's `[[keys]]` (at least 32 characters), with a scope \
                 for the app in the path: `token:read` for the token routes, `send` for the send routes, \
                 `grants` for the consent routes, `grants:review` for the grant routes, `dispatch` for the \
                 dispatch jobs, `status` for the status page.",
            ))
            .build();
        let basic = HttpBuilder::new()
            .scheme(HttpAuthScheme::Basic)
            .description(Some(
                "`GET /status` only: an API key with the scope `status` as the password (any user name), \
                 for a browser's own login prompt. No other route takes it.",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
        components.add_security_scheme("basic", SecurityScheme::Http(basic));
    }
}

/// The routes that take a key (the rate limits and the 401 are put in front of them), and the
/// ones that do not; both with their documentation.
pub(crate) fn routes() -> (OpenApiRouter<Gateway>, OpenApiRouter<Gateway>) {
    let keyed = OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(api::get_token))
        .routes(routes!(api::invalidate))
        .routes(routes!(send::one_time))
        .routes(routes!(send::mini_program))
        .routes(routes!(send::notification))
        .routes(routes!(consent::web))
        .routes(routes!(consent::mobile))
        .routes(routes!(consent::complete))
        .routes(routes!(grants::counts))
        .routes(routes!(grants::reviews))
        .routes(routes!(grants::resolve))
        .routes(routes!(dispatch::start, dispatch::list))
        .routes(routes!(dispatch::get))
        .routes(routes!(dispatch::cancel));
    let open = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(consent::callback))
        .routes(routes!(push::check, push::receive))
        .routes(routes!(status::page))
        .routes(routes!(serve_openapi));
    (keyed, open)
}

/// The OpenAPI document of [`Gateway::router`](crate::Gateway::router)'s routes, as served at
/// `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (keyed, open) = routes();
    keyed.merge(open).into_openapi()
}

/// [`openapi`] as pretty JSON with a final line break: what `GET /openapi.json` answers and
/// what `crates/subscribe-gateway/openapi.json` holds.
pub fn openapi_json() -> String {
    // A document of strings, maps and numbers always serializes.
    let mut json = openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The document, generated once per process.
static DOCUMENT: LazyLock<String> = LazyLock::new(openapi_json);

/// `GET /openapi.json`: this document. It needs no key and holds nothing of the configuration
/// (no app, key or secret): only the routes and their types.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI document (this one)", body = Object, content_type = "application/json"))
)]
pub(crate) async fn serve_openapi() -> Response {
    let mut r = DOCUMENT.as_str().into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An error's answer: `{"error": "<code>", "message": "…"}` (and `field` for
/// `invalid_message`).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `rate_limited`, `invalid_body`,
    /// `unreadable_body`, `invalid_json`, `invalid_idempotency_key`, `body_too_large`,
    /// `unsupported_media_type`, `invalid_token`, `invalid_message`, `idempotency_key_reused`,
    /// `idempotency_key_in_progress`, `idempotency_store_unavailable`, `token_unavailable`,
    /// `invalid_request`, `consent_not_configured`, `not_found`, `invalid_answer`,
    /// `answer_refused`, `answer_used`, `answer_in_progress`, `store_unavailable`,
    /// `invalid_query`, `not_under_review`, `dispatch_running`.
    pub(crate) error: String,
    /// What went wrong, for a person.
    pub(crate) message: String,
    /// `invalid_message`, `invalid_request`, `invalid_answer` and `invalid_query` only: the
    /// field at fault, by its name in the body (`data.content.value`), the answer (`openid`)
    /// or the query (`scene`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) field: Option<String>,
    /// `dispatch_running` only: the running job's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) job: Option<String>,
}

/// The app in the path of the routes under `/v1`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by axum's `Path<String>`; this type only documents it.
pub(crate) struct AppIdPath {
    /// The app's AppID, as in the configuration's `[[apps]]`. A key with no scope for it (an app
    /// that is not configured included) is answered 403.
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$", example = "wx5a1db0c0ffee0001")]
    appid: String,
}

/// The `Idempotency-Key` header of the send routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read from the headers by `IdempotencyKey`; this type only documents it.
pub(crate) struct IdempotencyKeyHeader {
    /// Makes a retry safe: a retry with the same key and body gets the first answer (with
    /// `Idempotent-Replayed: true`) and nothing is sent twice. 1 to 255 visible ASCII
    /// characters, given once.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$",
        example = "order-42/shipped"
    )]
    idempotency_key: Option<String>,
}

/// The answers every route with a key can give before its handler runs, or around it.
#[derive(IntoResponses)]
#[allow(dead_code)] // A documentation of the answers `ratelimit::admit` and the layers make.
pub(crate) enum KeyedAnswers {
    /// `unauthorized`: no key, a malformed `Authorization` header or a wrong key (one answer for
    /// all three).
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
    /// `forbidden`: the key has no scope for this app here (the same answer whether the app
    /// exists or not).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The request took longer than `server.request_timeout_ms` (no body).
    #[response(status = 408)]
    Timeout,
    /// `rate_limited`: the key is over its rate, or the caller's address over its failed
    /// authentications.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Whole seconds to wait")))]
    RateLimited(ErrorBody),
}

/// 413: the body is over `server.max_body_bytes`: `body_too_large`, or, when a declared
/// `Content-Length` is over it, the limit layer's plain text before the key is checked.
pub(crate) struct TooLarge;

impl IntoResponses for TooLarge {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let answer = ResponseBuilder::new()
            .description(
                "`body_too_large`: the body is over `server.max_body_bytes`; a declared \
                 `Content-Length` over it is refused before the key is checked, in plain text",
            )
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build(),
            )
            .content(
                "text/plain",
                ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build(),
            )
            .build();
        BTreeMap::from([("413".to_owned(), RefOr::T(answer))])
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `crates/subscribe-gateway/openapi.json` is what the code generates: a change of a route,
    /// a type or a doc comment that changes the document fails here until the file is written
    /// again, so the committed document never drifts from what `/openapi.json` serves.
    #[test]
    fn the_committed_openapi_document_is_what_the_code_generates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let generated = openapi_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} differs from the document the code generates; write it again with\n\n    \
             UPDATE_OPENAPI=1 cargo test -p subscribe-gateway openapi\n\nand commit it",
            path.display()
        );
    }

    #[test]
    fn every_route_of_the_router_is_documented_with_its_answers() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut routes: Vec<&str> = paths.keys().map(String::as_str).collect();
        routes.sort_unstable();
        assert_eq!(
            routes,
            [
                "/healthz",
                "/openapi.json",
                "/readyz",
                "/status",
                "/v1/apps/{appid}/access_token",
                "/v1/apps/{appid}/access_token/invalidate",
                "/v1/apps/{appid}/consent/callback",
                "/v1/apps/{appid}/consent/complete",
                "/v1/apps/{appid}/consent/mobile",
                "/v1/apps/{appid}/consent/web",
                "/v1/apps/{appid}/dispatches",
                "/v1/apps/{appid}/dispatches/{id}",
                "/v1/apps/{appid}/dispatches/{id}/cancel",
                "/v1/apps/{appid}/grants",
                "/v1/apps/{appid}/grants/review",
                "/v1/apps/{appid}/grants/review/resolve",
                "/v1/apps/{appid}/messages/mini_program",
                "/v1/apps/{appid}/messages/notification",
                "/v1/apps/{appid}/messages/one_time",
                "/v1/apps/{appid}/push",
            ]
        );
        let send = &paths["/v1/apps/{appid}/messages/one_time"]["post"];
        let statuses: Vec<&str> = send["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        for status in ["200", "400", "401", "403", "408", "409", "413", "415", "422", "429", "503"] {
            assert!(statuses.contains(&status), "{status} missing from {statuses:?}");
        }
        assert_eq!(send["security"], serde_json::json!([{BEARER: []}]));
        assert!(send["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key"));
        assert!(paths["/healthz"]["get"].get("security").is_none(), "health takes no key");
    }
}
