use subscribe_types::*;

fn official_request() -> AuthorizeRequest {
    AuthorizeRequest::new(
        AppId::new("wxaba38c7f163da69b").unwrap(),
        TemplateId::new("1uDxHNXwYQfBmXOfPJcjAS3FynHArD8aWMEFNRGSbCc").unwrap(),
        Scene::new(1000).unwrap(),
        HttpUrl::new("http://support.qq.com").unwrap(),
    )
    .with_reserved(Reserved::new("test").unwrap())
}

/// Lower-cases the hex digits of percent-escapes, so URLs compare up to escape case.
fn fold_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

#[test]
fn official_example_url_is_reproduced_up_to_escape_case() {
    let official = crate::fixtures()["authorize_url"].as_str().unwrap().to_owned();
    let ours = official_request().url();
    assert_ne!(ours, official, "case differs: ours are upper-case escapes");
    assert_eq!(fold_escapes(&ours), fold_escapes(&official));
}

#[test]
fn parameters_come_in_the_documented_order_and_fragment_is_literal() {
    let url = official_request().url();
    let names: Vec<&str> = url
        .split_once('?')
        .unwrap()
        .1
        .split('#')
        .next()
        .unwrap()
        .split('&')
        .map(|p| p.split('=').next().unwrap())
        .collect();
    assert_eq!(names, ["action", "appid", "scene", "template_id", "redirect_url", "reserved"]);
    assert!(url.ends_with("#wechat_redirect"));
    assert_eq!(url.matches('#').count(), 1);
}

#[test]
fn redirect_url_is_encoded_as_a_component() {
    let mut r = official_request();
    r.redirect_url = HttpUrl::new("https://app.example.com/cb?x=1&y=%C3%A9").unwrap();
    let url = r.url();
    assert!(
        url.contains("&redirect_url=https%3A%2F%2Fapp.example.com%2Fcb%3Fx%3D1%26y%3D%25C3%25A9&reserved="),
        "{url}"
    );
    // Decoding the parameter gives the redirect URL back, byte for byte.
    assert_eq!(AuthorizeRequest::from_query(&url).unwrap().redirect_url, r.redirect_url);
}

#[test]
fn configurable_base_serves_the_sandbox() {
    let url = official_request().url_with_base("http://127.0.0.1:8080/");
    assert!(url.starts_with("http://127.0.0.1:8080/mp/subscribemsg?action=get_confirm&"), "{url}");
}

#[test]
fn the_official_url_parses_back() {
    let official = crate::fixtures()["authorize_url"].as_str().unwrap().to_owned();
    assert_eq!(AuthorizeRequest::from_query(&official).unwrap(), official_request());
}

type Check = fn(&QueryError) -> bool;

#[test]
fn authorization_request_parse_rejections() {
    let ok = official_request().url();
    let cases: Vec<(String, Check)> = vec![
        (ok.replace("action=get_confirm", "action=confirm"), |e| matches!(e, QueryError::UnknownAction)),
        (ok.replace("&appid=wxaba38c7f163da69b", ""), |e| {
            matches!(e, QueryError::Missing { param: "appid" })
        }),
        (ok.replace("scene=1000", "scene=10001"), |e| {
            matches!(e, QueryError::Invalid(ValidationError::OutOfRange { .. }))
        }),
        (
            ok.replace("redirect_url=http%3A%2F%2Fsupport.qq.com", "redirect_url=%2Fcb"),
            |e| matches!(e, QueryError::Invalid(v) if v.field() == "redirect_url"),
        ),
        (ok.replace("#wechat_redirect", "&scene=1#wechat_redirect"), |e| {
            matches!(e, QueryError::Repeated { param: "scene" })
        }),
        (
            ok.replace("reserved=test", "reserved=te-st"),
            |e| matches!(e, QueryError::Invalid(v) if v.field() == "reserved"),
        ),
    ];
    for (input, check) in cases {
        let err = AuthorizeRequest::from_query(&input).unwrap_err();
        assert!(check(&err), "{input}: {err:?}");
    }
}

#[test]
fn mobile_request_uses_sdk_field_names_and_accepts_android_spelling() {
    let req: MobileSubscribeRequest = serde_json::from_str(&format!(
        r#"{{"scene":1000,"templateID":"{}","reserved":"hello"}}"#,
        crate::TEMPLATE
    ))
    .unwrap();
    let json = serde_json::to_value(&req).unwrap();
    assert_eq!(json["templateId"], crate::TEMPLATE);
    assert_eq!(json["scene"], 1000);
    assert!(serde_json::from_str::<MobileSubscribeRequest>(r#"{"scene":10001,"templateId":"t"}"#).is_err());
}

#[test]
fn mobile_response_official_example_and_cancel() {
    let resp: MobileSubscribeResponse =
        serde_json::from_value(crate::fixtures()["mobile_response"].clone()).unwrap();
    let answer = resp.into_answer().unwrap();
    assert_eq!(answer.openid().unwrap().as_str(), crate::OPENID);
    assert_eq!(answer.reserved().as_str(), "hello");
    assert_eq!(answer.scene().get(), 1000);

    let cancel: MobileSubscribeResponse = serde_json::from_str(&format!(
        r#"{{"templateId":"{}","scene":1,"action":"cancel"}}"#,
        crate::TEMPLATE
    ))
    .unwrap();
    assert_eq!(cancel.into_answer().unwrap().action(), Action::Cancel);

    let no_openid: MobileSubscribeResponse = serde_json::from_str(&format!(
        r#"{{"templateId":"{}","scene":1,"action":"confirm"}}"#,
        crate::TEMPLATE
    ))
    .unwrap();
    assert_eq!(no_openid.into_answer().unwrap_err(), QueryError::ConfirmWithoutOpenId);
}

#[test]
fn the_longest_url_a_valid_request_builds_parses_back() {
    // Found by the `authorize_url` fuzz target: with a 4 KiB read limit, a request with a long
    // redirect URL of characters that need escaping built a URL its own parser refused.
    let redirect = format!("https://h/{}", "\"".repeat(HttpUrl::MAX_LEN - "https://h/".len()));
    let request = AuthorizeRequest::new(
        AppId::new("w".repeat(AppId::MAX_LEN)).unwrap(),
        TemplateId::new("t".repeat(TemplateId::MAX_LEN)).unwrap(),
        Scene::new(10_000).unwrap(),
        HttpUrl::new(redirect).unwrap(),
    )
    .with_reserved(Reserved::new("r".repeat(Reserved::MAX_LEN)).unwrap());
    let url = request.url();
    assert!(url.len() > 6_000, "the redirect URL is escaped to three bytes per byte: {}", url.len());
    assert!(url.len() <= MAX_QUERY_LEN);
    assert_eq!(AuthorizeRequest::from_query(&url).unwrap(), request);
}

/// A field given twice, in one spelling or two, is refused by name: a proxy or a log that reads
/// the first key would otherwise see another openid, or another action, than this reader.
#[test]
fn a_mobile_answer_with_a_field_given_twice_is_refused_naming_the_field() {
    use subscribe_types::{MobileSubscribeResponse, QueryError};
    const TEMPLATE: &str = "7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM";
    let answer = |extra: &str| {
        format!(
            r#"{{"openId":"oVictim","templateId":"{TEMPLATE}","scene":1000,"action":"confirm","reserved":"abc"{extra}}}"#
        )
    };
    assert!(MobileSubscribeResponse::parse(&answer("")).is_ok());
    for (extra, param) in [
        (r#","openId":"oMallory""#, "openId"),
        (r#","openid":"oMallory""#, "openId"),
        (r#","openId":"oVictim""#, "openId"),
        (r#","openId":null"#, "openId"),
        (r#","action":"cancel""#, "action"),
        (r#","templateID":"other""#, "templateId"),
        (r#","template_id":"other""#, "templateId"),
        (r#","scene":"1000""#, "scene"),
        (r#","reserved":"def""#, "reserved"),
        (r#","open\u0049d":"oMallory""#, "openId"),
    ] {
        let json = answer(extra);
        let err = MobileSubscribeResponse::parse(&json).unwrap_err();
        assert_eq!(err, QueryError::Repeated { param }, "{json}");
        assert!(!err.to_string().contains("oMallory") && !err.to_string().contains("oVictim"), "{err}");
    }
    // The first repeated field is named, whichever comes next.
    let two = format!(
        r#"{{"action":"confirm","openid":"oA","action":"cancel","templateId":"{TEMPLATE}","scene":1,"openId":"oB"}}"#
    );
    assert_eq!(MobileSubscribeResponse::parse(&two), Err(QueryError::Repeated { param: "action" }));
    // Fields the reader ignores may repeat; an array is still not an object.
    assert!(MobileSubscribeResponse::parse(&answer(r#","errCode":0,"errCode":1"#)).is_ok());
    assert!(matches!(MobileSubscribeResponse::parse("[1,2]"), Err(QueryError::NotJson { .. })));
}
