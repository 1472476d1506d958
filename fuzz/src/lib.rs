//! The properties the fuzz targets check, one function per target. Each takes the raw input,
//! returns normally when the property holds and panics (which libFuzzer reports as a crash)
//! when it does not. The `fuzz_targets/` binaries call them under libFuzzer
//! (`cargo xtask fuzz --seconds N`); `tests/replay.rs` calls them on the seeds and on every
//! saved crash input, so a finding stays fixed.
//!
//! ```
//! // A cancellation without `openid` is a valid answer, and it round-trips.
//! subscribe_fuzz::callback(b"?action=cancel&template_id=T1&scene=7&reserved=abc");
//! ```

use std::sync::LazyLock;

use subscribe_sandbox::{SandboxConfig, SandboxState, check_send_body, router};
use subscribe_types::{
    Action, ApiResponse, AuthorizationAnswer, AuthorizeRequest, Expectation, IssuedToken, MessageData,
    MobileSubscribeResponse, OneTimeMessage, Reserved, SubscribeAnswers, Template,
};

/// A property check: returns when the property holds for the input, panics when it breaks.
pub type Check = fn(&[u8]);

/// The fuzz targets by name: the binaries under `fuzz_targets/` and the directories under
/// `seeds/` and `regressions/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("callback", callback),
    ("authorize_url", authorize_url),
    ("responses", responses),
    ("send_body", send_body),
    ("mobile_answer", mobile_answer),
    ("message_data", message_data),
    ("subscribe_answers", subscribe_answers),
    ("push_event", push_event),
    ("push_decrypt", push_decrypt),
];

/// Percent-encodes everything but ASCII letters and digits.
fn encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The callback query WeChat would write for `answer`.
fn query_of(answer: &AuthorizationAnswer) -> String {
    let mut query = format!(
        "?action={}&template_id={}&scene={}&reserved={}",
        answer.action().as_str(),
        encode(answer.template_id().as_str()),
        answer.scene().get(),
        encode(answer.reserved().as_str()),
    );
    if let Some(openid) = answer.openid() {
        query.push_str("&openid=");
        query.push_str(&encode(openid.as_str()));
    }
    query
}

/// The callback parser (`AuthorizationAnswer::parse`) on arbitrary text: an accepted answer
/// verifies against its own values, fails against another `reserved`, and parses back
/// unchanged from a query written from it.
///
/// # Panics
/// When one of those properties breaks.
pub fn callback(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(answer) = AuthorizationAnswer::parse(input) else { return };
    let expected = Expectation::new()
        .template_id(answer.template_id().clone())
        .scene(answer.scene())
        .reserved(answer.reserved().clone());
    assert!(answer.verify(&expected).is_ok(), "an answer must verify against its own values");
    if let Ok(other) = Reserved::new(format!("{}x", answer.reserved().as_str())) {
        assert!(answer.verify(&Expectation::new().reserved(other)).is_err(), "another state must fail");
    }
    let query = query_of(&answer);
    let again = AuthorizationAnswer::parse(&query).expect("a query written from an answer parses");
    assert_eq!(again, answer, "the answer changed on its way through a query");
}

/// The forwarded SDK answer's parser (`MobileSubscribeResponse::parse`) on arbitrary text: an
/// accepted answer carries an `openId` only when confirmed, reads back unchanged from the JSON
/// written from it, and becomes the same answer the web callback's parser reads from the
/// equivalent query.
///
/// # Panics
/// When one of those properties breaks.
pub fn mobile_answer(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = MobileSubscribeResponse::parse(input) else { return };
    assert!(
        parsed.open_id.is_none() || parsed.action == Action::Confirm,
        "an openId on a cancellation was kept"
    );
    let json = serde_json::to_string(&parsed).expect("an answer serializes");
    let again = MobileSubscribeResponse::parse(&json).expect("JSON written from an answer parses");
    assert_eq!(again, parsed, "the answer changed on its way through JSON");
    let Ok(answer) = parsed.into_answer() else { return };
    let query = query_of(&answer);
    assert_eq!(
        AuthorizationAnswer::parse(&query).as_ref(),
        Ok(&answer),
        "the two flows read different answers"
    );
}

static SANDBOX: LazyLock<SandboxState> = LazyLock::new(|| router(SandboxConfig::demo()).1);

/// The authorization request's parsers (`AuthorizeRequest::from_query` for a URL,
/// `from_bare_query` for the bare query the sandbox's page reads) and the page itself
/// (`SandboxState::authorization_page`): an accepted request parses back unchanged from its
/// own `url()`, a bare query reads as the same query behind a `?` does, an accepted
/// `RedirectUrl` reads back the answer appended to it, and the page never carries the query's
/// markup unescaped.
///
/// # Panics
/// When one of those properties breaks.
pub fn authorize_url(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    if let Ok(request) = AuthorizeRequest::from_query(input) {
        let again = AuthorizeRequest::from_query(&request.url()).expect("a built URL parses");
        assert_eq!(again, request, "the request changed on its way through its URL");
    }
    if !input.contains('#') && input.len() < subscribe_types::MAX_QUERY_LEN {
        assert_eq!(
            AuthorizeRequest::from_bare_query(input),
            AuthorizeRequest::from_query(&format!("?{input}")),
            "a bare query read otherwise than the same query in a URL"
        );
    }
    // A redirect URL the type accepts reads back the answer WeChat appends to it, exactly.
    if let Ok(redirect) = subscribe_types::RedirectUrl::new(input) {
        let sep = if redirect.as_str().contains('?') { '&' } else { '?' };
        let back = format!("{redirect}{sep}openid=oU&template_id=tpl&action=confirm&scene=7&reserved=abc");
        let answer =
            subscribe_types::AuthorizationAnswer::parse(&back).expect("an accepted redirect URL reads back");
        assert_eq!(answer.openid().map(subscribe_types::OpenId::as_str), Some("oU"));
        assert_eq!((answer.template_id().as_str(), answer.scene().get()), ("tpl", 7));
        assert_eq!(answer.reserved().as_str(), "abc");
    }
    if let Ok(page) = SANDBOX.authorization_page(input) {
        assert!(!page.contains("<script"), "the authorization page must not carry a script");
        if input.contains('<') {
            assert!(!page.contains(input), "the raw query must not appear unescaped");
        }
    }
}

/// WeChat's answers: the send endpoint's envelope (`ApiResponse::parse`, then classification)
/// and the token endpoints' answer (`IssuedToken::parse`). Neither panics; an accepted token
/// has a positive lifetime and never shows in the value's `Debug`.
///
/// # Panics
/// When one of those properties breaks.
pub fn responses(body: &[u8]) {
    if let Ok(response) = ApiResponse::parse(body)
        && let Err(e) = response.into_result()
    {
        let code = e.code();
        let _ = (code.class(), code.class_at_token_endpoint(), code.description(), e.reported_ip());
        let _ = e.to_string();
    }
    match IssuedToken::parse(body) {
        Ok(token) => {
            assert!(token.expires_in > 0, "a token must have a lifetime");
            // The whole text, not "does not contain the token": a token may be spelled like
            // a field name (the fuzzer found `expires_`).
            let expected = format!(
                "IssuedToken {{ access_token: AccessToken([redacted]), expires_in: {} }}",
                token.expires_in
            );
            assert_eq!(format!("{token:?}"), expected, "Debug must show no token");
        }
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
        }
    }
}

/// The sandbox's send-body validation (`check_send_body`): a body it accepts serializes back to
/// a body it accepts as the same message, within the title and content limits; every refusal
/// carries one of WeChat's codes for bad bodies (44002, 47001, 47003).
///
/// # Panics
/// When one of those properties breaks.
pub fn send_body(body: &[u8]) {
    match check_send_body(body) {
        Ok(message) => {
            let again =
                OneTimeMessage::from_json(&message.to_json()).expect("our own serialization is accepted");
            assert_eq!(again, message, "the message changed on its way through its JSON");
            assert!(message.title().as_str().chars().count() <= 15, "title over 15 characters");
            assert!(message.content().as_str().chars().count() <= 200, "content over 200 characters");
        }
        Err(e) => {
            assert!(matches!(e.code().get(), 44002 | 47001 | 47003), "unexpected code {}", e.code());
        }
    }
}

/// The successors' `data` (`MessageData`) and a template's keys (`Template::keys`) on
/// arbitrary text: the first line is a template's content, each further line a `key=value`.
/// Accepted data serializes to `{"key":{"value":…}}` with every value as given and still
/// keeping its type's rule; an error names a `data` field; checking against the template
/// answers without panicking, and passes when the data has exactly the template's keys.
///
/// # Panics
/// When one of those properties breaks.
pub fn message_data(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let mut lines = input.lines();
    let content = lines.next().unwrap_or_default();
    let pairs: Vec<(&str, &str)> = lines.map(|l| l.split_once('=').unwrap_or((l, ""))).collect();
    let template: Template = serde_json::from_value(serde_json::json!({
        "priTmplId": "FuzzTemplate", "content": content, "type": 2,
    }))
    .expect("a template with any content reads");
    let keys = template.keys();
    assert!(keys.iter().all(|k| content.contains(k)), "a key that is not in the content");
    match MessageData::from_pairs(pairs.iter().copied()) {
        Ok(parsed) => {
            let json: serde_json::Value = serde_json::to_value(&parsed).expect("data serializes");
            for (key, value) in &pairs {
                assert_eq!(json[*key]["value"].as_str(), Some(*value), "a value changed in the JSON");
                let key: subscribe_types::DataKey = key.parse().expect("an accepted key parses again");
                assert!(key.keyword_type().check(value).is_ok(), "an accepted value breaks its rule");
            }
            let exact = keys.len() == parsed.len() && keys.iter().all(|k| parsed.get(k).is_some());
            let checked = parsed.check_against(&template);
            assert!(
                !exact || checked.is_ok(),
                "data with exactly the template's keys was refused: {checked:?}"
            );
        }
        Err(e) => assert!(e.field().starts_with("data"), "an error outside data: {e}"),
    }
}

/// The user-side answers (`SubscribeAnswers`, both shapes) on arbitrary text: every accepted
/// template has a decision that is an acceptance, and an error's text is bounded (it never
/// carries the input).
///
/// # Panics
/// When one of those properties breaks.
pub fn subscribe_answers(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    for parsed in [
        SubscribeAnswers::from_request_subscribe_message(input),
        SubscribeAnswers::from_open_subscribe(input),
    ] {
        match parsed {
            Ok(answers) => {
                for t in answers.accepted() {
                    assert!(answers.get(t).is_some_and(subscribe_types::SubscribeDecision::is_accept));
                }
            }
            // The error's text is bounded whatever the input, so it cannot carry the input (an
            // input can still be a piece of the error's own words).
            Err(e) => assert!(e.to_string().len() <= 160, "an error grows with its input: {e}"),
        }
    }
}

/// The pushed events' parsers (`Event::from_xml`, `Event::from_json`) on arbitrary text: an
/// answer, never a panic, the same answer every time; an unknown event keeps the whole input.
///
/// # Panics
/// When one of those properties breaks.
pub fn push_event(data: &[u8]) {
    use subscribe_events::{Event, EventKind};
    let Ok(input) = std::str::from_utf8(data) else { return };
    for parse in [Event::from_xml, Event::from_json] {
        let (first, second) = (parse(input), parse(input));
        assert_eq!(first, second, "two readings of one push differ");
        if let Ok(Event { kind: EventKind::Other { raw, .. }, .. }) = first {
            assert_eq!(raw, input, "an unknown event lost its text");
        }
    }
}

/// The safe mode's decryptor on arbitrary input: an answer, never a panic, and every refusal
/// the same refusal (one text, one status: anything else is a padding oracle); and a message
/// encrypted for the app (its text and random prefix taken from the input) decrypts back to
/// itself, and for another app is refused.
///
/// # Panics
/// When one of those properties breaks.
pub fn push_decrypt(data: &[u8]) {
    let key = subscribe_events::EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .expect("a valid key");
    let text = String::from_utf8_lossy(data);
    if let Err(e) = key.decrypt(&text, "wx5a1db0c0ffee0001") {
        assert!(matches!(e, subscribe_events::PushError::Unopened(_)), "{e:?}");
        assert_eq!((e.to_string().as_str(), e.http_status()), ("the push could not be opened", 400));
    }
    let mut random = [0u8; 16];
    for (r, d) in random.iter_mut().zip(data) {
        *r = *d;
    }
    let sealed = key.encrypt(&text, "wx5a1db0c0ffee0001", random);
    assert_eq!(
        key.decrypt(&sealed, "wx5a1db0c0ffee0001").as_deref(),
        Ok(text.as_ref()),
        "a round trip changed the message"
    );
    assert_eq!(
        key.decrypt(&sealed, "wxAnotherApp0000001"),
        Err(subscribe_events::PushError::Unopened(subscribe_events::OpenFailure::WrongAppId))
    );
}
