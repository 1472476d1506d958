use subscribe_types::*;

use crate::{OPENID, TEMPLATE};

fn builder() -> OneTimeMessageBuilder {
    OneTimeMessage::builder(
        OpenId::new(OPENID).unwrap(),
        TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1000).unwrap(),
    )
}

#[test]
fn title_boundaries_ascii_and_cjk() {
    assert!(builder().title("a".repeat(15)).content("x").build().is_ok());
    assert!(builder().title("订".repeat(15)).content("x").build().is_ok());
    for long in ["a".repeat(16), "订".repeat(16)] {
        let err = builder().title(long).content("x").build().unwrap_err();
        assert_eq!(err, ValidationError::TooLong { field: "title", max: 15, actual: 16, unit: "characters" });
    }
    assert_eq!(
        builder().title("").content("x").build().unwrap_err(),
        ValidationError::Empty { field: "title" }
    );
    assert_eq!(builder().content("x").build().unwrap_err(), ValidationError::Missing { field: "title" });
}

#[test]
fn content_boundaries_ascii_and_cjk() {
    assert!(builder().title("t").content("x".repeat(200)).build().is_ok());
    assert!(builder().title("t").content("货".repeat(200)).build().is_ok());
    for long in ["x".repeat(201), "货".repeat(201)] {
        let err = builder().title("t").content(long).build().unwrap_err();
        assert_eq!(
            err,
            ValidationError::TooLong {
                field: "data.content.value",
                max: 200,
                actual: 201,
                unit: "characters"
            }
        );
    }
}

#[test]
fn scene_boundaries() {
    assert_eq!(Scene::new(10_000).unwrap().get(), 10_000);
    assert_eq!(Scene::new(0).unwrap().get(), 0);
    assert_eq!(
        Scene::new(10_001).unwrap_err(),
        ValidationError::OutOfRange { field: "scene", min: 0, max: 10_000, actual: 10_001 }
    );
    assert!("99999999999999999999999".parse::<Scene>().is_err());
    assert_eq!("0010".parse::<Scene>().unwrap().get(), 10);
    assert!("+1".parse::<Scene>().is_err());
    assert!(" 1".parse::<Scene>().is_err());
}

#[test]
fn reserved_boundaries() {
    assert!(Reserved::new("A1".repeat(64)).is_ok());
    assert_eq!(
        Reserved::new("a".repeat(129)).unwrap_err(),
        ValidationError::TooLong { field: "reserved", max: 128, actual: 129, unit: "bytes" }
    );
    assert!(Reserved::new("é").is_err());
}

#[test]
fn wire_format_is_exactly_what_wechat_expects() {
    let minimal = builder().title("到货提醒").content("您关注的商品已到货").build().unwrap();
    let json = String::from_utf8(minimal.to_json()).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"touser":"{OPENID}","template_id":"{TEMPLATE}","scene":"1000","title":"到货提醒","data":{{"content":{{"value":"您关注的商品已到货"}}}}}}"#
        )
    );
    assert!(!json.contains("null"), "absent fields are omitted");
    assert!(!json.contains("\\u"), "raw UTF-8, no \\u escapes");

    let full = builder()
        .title("t")
        .content("line 1\nline 2")
        .color("#FF0000")
        .url("https://shop.example.com/item/1")
        .miniprogram("wx0123456789abcdef", "pages/item?id=1")
        .build()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&full.to_json()).unwrap();
    assert_eq!(v["scene"], "1000");
    assert_eq!(v["url"], "https://shop.example.com/item/1");
    assert_eq!(
        v["miniprogram"],
        serde_json::json!({"appid": "wx0123456789abcdef", "pagepath": "pages/item?id=1"})
    );
    assert_eq!(v["data"]["content"]["color"], "#FF0000");
    assert_eq!(v["data"]["content"]["value"], "line 1\nline 2");
}

#[test]
fn bad_optional_fields_name_themselves() {
    let cases = [
        (builder().title("t").content("c").color("blue"), "data.content.color"),
        (builder().title("t").content("c").url("/relative"), "url"),
        (builder().title("t").content("c").url("javascript:alert(1)"), "url"),
        (builder().title("t").content("c").miniprogram("", "p"), "miniprogram.appid"),
        (builder().title("t").content("c").miniprogram("wx1", ""), "miniprogram.pagepath"),
    ];
    for (b, field) in cases {
        assert_eq!(b.build().unwrap_err().field(), field);
    }
}

#[test]
fn from_json_reads_what_wechat_reads() {
    let m = builder().title("t").content("c").color("#00ff00").miniprogram("wx1", "p").build().unwrap();
    assert_eq!(OneTimeMessage::from_json(&m.to_json()).unwrap(), m);
    // A numeric scene is accepted on input.
    let numeric = format!(
        r#"{{"touser":"{OPENID}","template_id":"{TEMPLATE}","scene":1000,"title":"t","data":{{"content":{{"value":"c"}}}}}}"#
    );
    assert_eq!(OneTimeMessage::from_json(numeric.as_bytes()).unwrap().scene().get(), 1000);

    let cases: [(&str, &str); 6] = [
        (r#"{"template_id":"t","scene":"1","title":"t","data":{"content":{"value":"c"}}}"#, "touser"),
        (r#"{"touser":"o","template_id":"t","title":"t","data":{"content":{"value":"c"}}}"#, "scene"),
        (
            r#"{"touser":"o","template_id":"t","scene":true,"title":"t","data":{"content":{"value":"c"}}}"#,
            "scene",
        ),
        (r#"{"touser":"o","template_id":"t","scene":"1","title":"t","data":{}}"#, "data.content"),
        (
            r#"{"touser":"o","template_id":"t","scene":"1","title":"t","data":{"content":{"value":"c"}},"miniprogram":{"appid":"wx1"}}"#,
            "miniprogram.pagepath",
        ),
        (
            r#"{"touser":"o o","template_id":"t","scene":"1","title":"t","data":{"content":{"value":"c"}}}"#,
            "touser",
        ),
    ];
    for (body, field) in cases {
        match OneTimeMessage::from_json(body.as_bytes()) {
            Err(MessageParseError::Invalid(e)) => assert_eq!(e.field(), field, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert!(matches!(OneTimeMessage::from_json(b"{not json"), Err(MessageParseError::Json(_))));
    assert!(matches!(OneTimeMessage::from_json(br#"{"touser":5}"#), Err(MessageParseError::Json(_))));
}

#[test]
fn identifiers_are_bounded_and_restricted() {
    assert!(AppId::new("a".repeat(64)).is_ok());
    assert!(AppId::new("a".repeat(65)).is_err());
    assert!(OpenId::new("o".repeat(128)).is_ok());
    assert!(OpenId::new("o".repeat(129)).is_err());
    assert_eq!(
        TemplateId::new("abc/def").unwrap_err(),
        ValidationError::InvalidCharacter { field: "template_id", position: 3, allowed: "A-Z a-z 0-9 _ -" }
    );
}

#[test]
fn endpoint_description_of_the_send() {
    assert_eq!(<OneTimeMessage as Endpoint>::SPEC.path, "/cgi-bin/message/template/subscribe");
    assert_eq!(<OneTimeMessage as Endpoint>::SPEC.method, Method::Post);
    const { assert!(<OneTimeMessage as Endpoint>::SPEC.needs_access_token) };
    const { assert!(!endpoint::STABLE_TOKEN.needs_access_token) };
}
