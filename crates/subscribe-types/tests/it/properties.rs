use proptest::prelude::*;
use subscribe_types::*;

fn ident(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9_-]{{1,{max}}}")).unwrap()
}

fn reserved() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9]{0,128}").unwrap()
}

fn redirect() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "https?://[a-z0-9.-]{1,30}(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,60})?",
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid request, answered by a simulated redirect (WeChat appending its parameters to
    /// `redirect_url` with `?` or `&`), parses back to the same template, scene and reserved.
    #[test]
    fn authorization_round_trip(
        appid in ident(64), template in ident(128), scene in 0u32..=10_000, state in reserved(),
        redirect in redirect(), openid in ident(128), confirm in any::<bool>(),
    ) {
        let request = AuthorizeRequest::new(
            AppId::new(appid).unwrap(), TemplateId::new(template).unwrap(), Scene::new(scene).unwrap(),
            HttpUrl::new(redirect).unwrap(),
        ).with_reserved(Reserved::new(state).unwrap());
        // WeChat's side reads the request from the URL …
        let seen = AuthorizeRequest::from_query(&request.url()).unwrap();
        prop_assert_eq!(&seen, &request);
        // … and redirects with the answer.
        let sep = if seen.redirect_url.as_str().contains('?') { '&' } else { '?' };
        let base = seen.redirect_url.as_str().split('#').next().unwrap();
        let action = if confirm { "confirm" } else { "cancel" };
        let openid_part = if confirm { format!("openid={openid}&") } else { String::new() };
        let callback = format!(
            "{base}{sep}{openid_part}template_id={}&action={action}&scene={}&reserved={}",
            seen.template_id, seen.scene, seen.reserved.as_str()
        );
        // The redirect's own query may hold anything; only skip the case where it reuses our names.
        prop_assume!(!["action=", "openid=", "template_id=", "scene=", "reserved="].iter().any(|n| base.contains(n)));
        prop_assume!(callback.len() <= MAX_QUERY_LEN);
        let answer = AuthorizationAnswer::parse(&callback).unwrap();
        prop_assert_eq!(answer.template_id(), &request.template_id);
        prop_assert_eq!(answer.scene(), request.scene);
        prop_assert!(answer.reserved().ct_eq(&request.reserved));
        prop_assert_eq!(answer.openid().is_some(), confirm);
        prop_assert!(answer.verify(&Expectation::from(&request)).is_ok());
    }

    /// Any valid message (quotes, backslashes and control characters in its text included)
    /// serializes to JSON that reads back to the same fields.
    #[test]
    fn message_round_trip(
        openid in ident(128), template in ident(128), scene in 0u32..=10_000,
        title in "(\\PC|[\\x00-\\x1f\"\\\\\\x7f]){1,15}", content in "(\\PC|[\\x00-\\x1f\"\\\\]){1,200}",
        color in proptest::option::of("#[0-9a-fA-F]{6}"),
        url in proptest::option::of(redirect()),
        mp in proptest::option::of((ident(64), "[a-z/?=&0-9]{1,40}")),
    ) {
        let mut b = OneTimeMessage::builder(OpenId::new(openid).unwrap(), TemplateId::new(template).unwrap(), Scene::new(scene).unwrap())
            .title(title).content(content);
        if let Some(c) = color { b = b.color(c); }
        if let Some(u) = url { b = b.url(u); }
        if let Some((a, p)) = mp { b = b.miniprogram(a, p); }
        let msg = b.build().unwrap();
        let json = msg.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        prop_assert!(v["scene"].is_string());
        prop_assert!(!String::from_utf8(json.clone()).unwrap().contains(":null"));
        prop_assert_eq!(OneTimeMessage::from_json(&json).unwrap(), msg);
    }

    /// Parsers never panic, whatever they are fed.
    #[test]
    fn parsers_never_panic(input in "\\PC{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = AuthorizationAnswer::parse(&input);
        let _ = AuthorizeRequest::from_query(&input);
        let _ = input.parse::<Scene>();
        let _ = HttpUrl::new(input.clone());
        let _ = OneTimeMessage::from_json(&bytes);
        let _ = OneTimeMessage::from_json(input.as_bytes());
        let _ = IssuedToken::parse(&bytes);
        let _ = ApiResponse::parse(&bytes);
        let _ = MobileSubscribeResponse::parse(&input);
    }

    /// SDK-answer-shaped JSON (the fields in either spelling, values of any type) never panics,
    /// and whatever it reads into has valid fields.
    #[test]
    fn sdk_answer_shaped_json_never_panics(
        fields in proptest::collection::vec((
            "(openId|openid|templateId|templateID|template_id|scene|action|reserved|errCode)",
            prop_oneof![
                Just(serde_json::Value::Null),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                "(confirm|cancel|[A-Za-z0-9_-]{0,30}|\\PC{0,10})".prop_map(serde_json::Value::from),
                Just(serde_json::json!([1, "x"])),
            ],
        ), 0..8)
    ) {
        let object: serde_json::Map<String, serde_json::Value> = fields.into_iter().collect();
        if let Ok(answer) = MobileSubscribeResponse::parse(&serde_json::Value::Object(object).to_string()) {
            prop_assert!(answer.scene.get() <= 10_000);
            prop_assert!(answer.open_id.is_none() || answer.action == subscribe_types::Action::Confirm);
        }
    }

    /// Query-shaped garbage (the parser's own alphabet) never panics either.
    #[test]
    fn query_shaped_input_never_panics(
        parts in proptest::collection::vec(("(action|openid|template_id|scene|reserved|x)", "[%+=&A-Za-z0-9_-]{0,12}"), 0..10)
    ) {
        let q: Vec<String> = parts.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let q = q.join("&");
        let _ = AuthorizationAnswer::parse(&q);
        let _ = AuthorizeRequest::from_query(&q);
    }
}
