use secrecy::ExposeSecret;
use subscribe_types::*;

#[test]
fn classic_query_carries_grant_type_appid_and_encoded_secret() {
    let req = ClassicTokenRequest {
        appid: AppId::new("wx0123456789abcdef").unwrap(),
        secret: AppSecret::new("a&b=c").unwrap(),
    };
    assert_eq!(
        req.path_and_query().expose_secret(),
        "/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret=a%26b%3Dc"
    );
}

#[test]
fn stable_body_has_force_refresh() {
    let req = StableTokenRequest {
        appid: AppId::new("wx0123456789abcdef").unwrap(),
        secret: AppSecret::new("s").unwrap(),
        force_refresh: true,
    };
    let v: serde_json::Value = serde_json::from_str(req.body().expose_secret()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"grant_type":"client_credential","appid":"wx0123456789abcdef","secret":"s","force_refresh":true})
    );
}

#[test]
fn token_responses() {
    let f = crate::fixtures();
    let t = IssuedToken::parse(f["token_ok"].to_string().as_bytes()).unwrap();
    assert_eq!(t.access_token.expose_secret(), "ACCESS_TOKEN_FIXTURE_VALUE");
    assert_eq!(t.expires_in, 7200);
    // errcode 0 alongside a token is a success.
    assert!(IssuedToken::parse(br#"{"errcode":0,"access_token":"T","expires_in":1}"#).is_ok());
    for (body, field) in [
        (&br#"{"expires_in":7200}"#[..], "access_token"),
        (br#"{"access_token":"","expires_in":7200}"#, "access_token"),
        (br#"{"access_token":"T"}"#, "expires_in"),
        (br#"{"access_token":"T","expires_in":0}"#, "expires_in"),
    ] {
        match IssuedToken::parse(body) {
            Err(TokenResponseError::Invalid(e)) => assert_eq!(e.field(), field),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(IssuedToken::parse(b"<html>"), Err(TokenResponseError::Decode(_))));
}

#[test]
fn token_decode_error_does_not_keep_the_token() {
    // A token with a wrong-typed expiry: serde's own message would quote the input.
    let body = br#"{"access_token":"TOKEN_VALUE_123","expires_in":"TOKEN_VALUE_123"}"#;
    let err = IssuedToken::parse(body).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("TOKEN_VALUE_123"), "{shown}");
}
