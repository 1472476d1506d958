use subscribe_types::*;

#[test]
fn every_documented_code_is_named_and_classified() {
    let documented = [
        -1, 0, 40001, 40002, 40003, 40013, 40014, 40033, 40036, 40037, 40039, 40048, 40125, 40164, 40243,
        41001, 41002, 41004, 42001, 43002, 43004, 43101, 44002, 45009, 45011, 47001, 47003, 48001, 48004,
        50001, 50002, 61004, 89501, 89503, 89506, 89507,
        // The successors (successors.md §4–5).
        40038, 41030, 43107, 43108, 45168, 200_011, 200_012, 200_013, 200_014, 200_015, 200_016, 200_017,
        200_018, 200_019, 200_020, 200_021,
    ];
    for code in documented {
        let c = ErrCode::new(code);
        assert!(ErrCode::KNOWN.contains(&c), "{code} has no named constant");
        assert!(c.description().is_some(), "{code} has no description");
        assert_eq!(c.class().is_none(), code == 0, "{code}");
    }
    assert_eq!(ErrCode::KNOWN.len(), documented.len());
}

#[test]
fn classes_follow_the_protocol() {
    use ErrorClass::*;
    for (code, class) in [
        (ErrCode::INVALID_CREDENTIAL, RefreshToken),
        (ErrCode::INVALID_ACCESS_TOKEN, RefreshToken),
        (ErrCode::ACCESS_TOKEN_EXPIRED, RefreshToken),
        (ErrCode::SYSTEM_BUSY, Backoff),
        (ErrCode::DAILY_QUOTA_EXCEEDED, RetryLater),
        (ErrCode::MINUTE_QUOTA_EXCEEDED, RetryLater),
        (ErrCode::IP_NOT_IN_WHITELIST, Configuration),
        (ErrCode::CLIENT_IP_NOT_REGISTERED, Configuration),
        (ErrCode::APPSECRET_FROZEN, Configuration),
        (ErrCode::USER_REFUSED, UserRefused),
        (ErrCode::INVALID_OPENID, InvalidRecipient),
        (ErrCode::ARGUMENT_INVALID, InvalidRequest),
        (ErrCode::DATA_FORMAT_ERROR, InvalidRequest),
        (ErrCode::EMPTY_POST_DATA, InvalidRequest),
        (ErrCode::REQUIRE_SUBSCRIBE, Permanent),
        (ErrCode::new(99_999), Permanent),
        // The successors: a concurrent send to one openid did nothing and is retried; the
        // rest are the request's or the account's to fix.
        (ErrCode::CONCURRENT_SEND, Backoff),
        (ErrCode::PAGE_NOT_RELEASED, InvalidRequest),
        (ErrCode::SENSITIVE_CONTENT, InvalidRequest),
        (ErrCode::SUBSCRIBE_BANNED, Configuration),
        (ErrCode::LONG_TERM_DAILY_LIMIT, Permanent),
        (ErrCode::LIBRARY_TEMPLATE_LIMIT, Configuration),
        (ErrCode::LIBRARY_INVALID_KID_LIST, InvalidRequest),
        (ErrCode::LIBRARY_INVALID_SCENE_DESC, InvalidRequest),
    ] {
        assert_eq!(code.class(), Some(class), "{code}");
    }
    // Only the three token codes mean "refresh and replay".
    for &code in ErrCode::KNOWN {
        assert_eq!(code.is_token_rejected(), [40001, 40014, 42001].contains(&code.get()), "{code}");
    }
    assert_eq!(ErrCode::INVALID_CREDENTIAL.class_at_token_endpoint(), Some(Configuration));
    assert_eq!(ErrCode::SYSTEM_BUSY.class_at_token_endpoint(), Some(Backoff));
    assert_eq!(ErrCode::DAILY_QUOTA_EXCEEDED.class_at_token_endpoint(), Some(RetryLater));
    assert_eq!(ErrCode::IP_NOT_IN_WHITELIST.class_at_token_endpoint(), Some(Configuration));
    assert_eq!(ErrCode::OK.class_at_token_endpoint(), None);
}

#[test]
fn token_endpoint_meanings_come_from_the_same_table() {
    use TokenEndpointFailure::*;
    for (code, meaning) in [
        (40013, InvalidAppId),
        (41002, InvalidAppId),
        (40001, InvalidSecret),
        (40125, InvalidSecret),
        (41004, InvalidSecret),
        (40164, IpNotWhitelisted),
        (61004, IpNotWhitelisted),
        (40243, SecretFrozen),
        (45009, QuotaExceeded),
        (45011, QuotaExceeded),
        (-1, Busy),
        (43101, Other),
        (99_999, Other),
    ] {
        assert_eq!(ErrCode::new(code).at_token_endpoint(), Some(meaning), "{code}");
    }
    assert_eq!(ErrCode::OK.at_token_endpoint(), None);
    assert!(
        ErrCode::IP_NOT_IN_WHITELIST.is_ip_whitelist() && ErrCode::CLIENT_IP_NOT_REGISTERED.is_ip_whitelist()
    );
    assert!(!ErrCode::INVALID_APPID.is_ip_whitelist());
}

#[test]
fn envelope_missing_errcode_is_success_and_errmsg_is_kept_verbatim() {
    let f = crate::fixtures();
    assert!(ApiResponse::parse(f["send_ok"].to_string().as_bytes()).unwrap().into_result().is_ok());
    assert!(ApiResponse::parse(br#"{"errmsg":"ok"}"#).unwrap().into_result().is_ok());
    let err =
        ApiResponse::parse(f["send_refused"].to_string().as_bytes()).unwrap().into_result().unwrap_err();
    assert_eq!(err.code(), ErrCode::USER_REFUSED);
    assert_eq!(err.message(), "user refuse to accept the msg rid: 64f1a2b3-1c2d3e4f-5a6b7c8d");
}

#[test]
fn decode_errors_never_quote_the_body() {
    let body = br#"{"errcode":"SECRET_IN_BODY"}"#;
    let err = ApiResponse::parse(body).unwrap_err();
    assert_eq!(err.category(), DecodeCategory::Data);
    assert!(!format!("{err} {err:?}").contains("SECRET_IN_BODY"));
}

#[test]
fn reported_ip_from_whitelist_errors() {
    let f = crate::fixtures();
    let TokenResponseError::Api(e) = IssuedToken::parse(f["token_ip"].to_string().as_bytes()).unwrap_err()
    else {
        panic!("api error expected")
    };
    assert_eq!(e.reported_ip(), Some("47.96.12.34"));
    let e = ApiError::new(
        ErrCode::CLIENT_IP_NOT_REGISTERED,
        "access clientip is not registered, requestIp:2001:db8::1 rid: x",
    );
    assert_eq!(e.reported_ip(), Some("2001:db8::1"));
    assert_eq!(ApiError::new(ErrCode::USER_REFUSED, "invalid ip 1.2.3.4").reported_ip(), None);
    assert_eq!(ApiError::new(ErrCode::IP_NOT_IN_WHITELIST, "no address here").reported_ip(), None);
}
