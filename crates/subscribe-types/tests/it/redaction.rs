//! Every error and every secret-holding value, formatted both ways, never shows the secret.

use secrecy::ExposeSecret;
use subscribe_types::*;

const SECRET: &str = "S3cretValueThatMustNeverPrint";

fn assert_hidden(what: &str, shown: &str) {
    assert!(!shown.contains(SECRET), "{what} leaked the secret: {shown}");
}

#[test]
fn secrets_are_redacted_everywhere() {
    let secret = AppSecret::new(SECRET).unwrap();
    let token = AccessToken::new(SECRET).unwrap();
    assert_eq!(secret.expose_secret(), SECRET);
    assert_hidden("AppSecret", &format!("{secret:?} {secret:#?}"));
    assert_hidden("AccessToken", &format!("{token:?} {token:#?}"));

    let appid = AppId::new("wx0123456789abcdef").unwrap();
    let classic = ClassicTokenRequest { appid: appid.clone(), secret: secret.clone() };
    let stable = StableTokenRequest { appid, secret, force_refresh: false };
    assert_hidden("ClassicTokenRequest", &format!("{classic:?} {:?}", classic.path_and_query()));
    assert_hidden("StableTokenRequest", &format!("{stable:?} {:?}", stable.body()));
    assert!(classic.path_and_query().expose_secret().contains(SECRET), "the transport does get it");

    let issued =
        IssuedToken::parse(format!(r#"{{"access_token":"{SECRET}","expires_in":7200}}"#).as_bytes()).unwrap();
    assert_hidden("IssuedToken", &format!("{issued:?}"));
    assert_hidden("Reserved", &format!("{:?}", Reserved::new(SECRET).unwrap()));
}

#[test]
fn errors_built_from_secret_input_do_not_echo_it() {
    let bad = format!("{SECRET} with space");
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(AppSecret::new(format!("{SECRET}\u{7f}")).unwrap_err()),
        Box::new(AccessToken::new(bad.clone()).unwrap_err()),
        Box::new(AccessToken::new(SECRET.repeat(100)).unwrap_err()),
        Box::new(OpenId::new(bad.clone()).unwrap_err()),
        Box::new(AuthorizationAnswer::parse(&format!("action={SECRET}")).unwrap_err()),
        Box::new(
            AuthorizationAnswer::parse(&format!("action=confirm&openid=x&template_id=t&scene={SECRET}"))
                .unwrap_err(),
        ),
        Box::new(
            IssuedToken::parse(
                format!(r#"{{"access_token":"{SECRET}","expires_in":"{SECRET}"}}"#).as_bytes(),
            )
            .unwrap_err(),
        ),
        Box::new(
            IssuedToken::parse(format!(r#"{{"access_token":"{SECRET} x","expires_in":1}}"#).as_bytes())
                .unwrap_err(),
        ),
        Box::new(IssuedToken::parse(SECRET.as_bytes()).unwrap_err()),
        Box::new(OneTimeMessage::from_json(format!(r#"{{"touser":{SECRET}}}"#).as_bytes()).unwrap_err()),
        Box::new(ApiResponse::parse(format!(r#"{{"errcode":"{SECRET}"}}"#).as_bytes()).unwrap_err()),
    ];
    for e in errors {
        assert_hidden("error", &format!("{e} | {e:?} | {:?}", e.source()));
    }
}
