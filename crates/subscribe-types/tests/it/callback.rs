use subscribe_types::*;

use crate::{OPENID, TEMPLATE};

fn official_query() -> String {
    format!("openid={OPENID}&template_id={TEMPLATE}&action=confirm&scene=1000&reserved=hello")
}

fn expected() -> Expectation {
    Expectation::new()
        .template_id(TemplateId::new(TEMPLATE).unwrap())
        .scene(Scene::new(1000).unwrap())
        .reserved(Reserved::new("hello").unwrap())
}

#[test]
fn official_example_values_parse_and_verify() {
    for input in [
        official_query(),
        format!("?{}", official_query()),
        format!("https://app.example.com/cb?{}", official_query()),
        format!("https://app.example.com/cb?own=1&{}#frag", official_query()),
    ] {
        let answer = AuthorizationAnswer::parse(&input).unwrap();
        let AuthorizationAnswer::Confirmed(c) = &answer else { panic!("{input}: not confirmed") };
        assert_eq!(c.openid.as_str(), OPENID);
        assert_eq!(c.template_id.as_str(), TEMPLATE);
        assert_eq!(c.scene.get(), 1000);
        assert_eq!(c.reserved.as_str(), "hello");
        answer.verify(&expected()).unwrap();
    }
}

#[test]
fn cancel_has_no_openid_and_missing_reserved_reads_empty() {
    let answer =
        AuthorizationAnswer::parse(&format!("template_id={TEMPLATE}&action=cancel&scene=7")).unwrap();
    assert_eq!(answer.action(), Action::Cancel);
    assert!(answer.openid().is_none());
    assert!(answer.reserved().is_empty());
}

#[test]
fn every_rejection_is_typed() {
    let q = official_query();
    let cases: Vec<(String, QueryError)> = vec![
        (q.replace("&action=confirm", ""), QueryError::Missing { param: "action" }),
        (q.replace(&format!("&template_id={TEMPLATE}"), ""), QueryError::Missing { param: "template_id" }),
        (q.replace("&scene=1000", ""), QueryError::Missing { param: "scene" }),
        (format!("{q}&openid=other"), QueryError::Repeated { param: "openid" }),
        (format!("{q}&action=cancel"), QueryError::Repeated { param: "action" }),
        (format!("{q}&reserved=hello"), QueryError::Repeated { param: "reserved" }),
        (q.replace("action=confirm", "action=accept"), QueryError::UnknownAction),
        (q.replace("action=confirm", "action=CONFIRM"), QueryError::UnknownAction),
        (q.replace(&format!("openid={OPENID}&"), ""), QueryError::ConfirmWithoutOpenId),
        (
            q.replace("scene=1000", "scene=abc"),
            QueryError::Invalid(ValidationError::NotANumber { field: "scene", len: 3 }),
        ),
        (
            q.replace("scene=1000", "scene=-1"),
            QueryError::Invalid(ValidationError::NotANumber { field: "scene", len: 2 }),
        ),
        (
            q.replace("scene=1000", "scene=10001"),
            QueryError::Invalid(ValidationError::OutOfRange {
                field: "scene",
                min: 0,
                max: 10000,
                actual: 10001,
            }),
        ),
        (
            q.replace("reserved=hello", "reserved=he%3Cllo"),
            QueryError::Invalid(ValidationError::InvalidCharacter {
                field: "reserved",
                position: 2,
                allowed: "A-Z a-z 0-9",
            }),
        ),
        (
            q.replace(&format!("openid={OPENID}"), "openid=o%22%3E%3Cscript"),
            QueryError::Invalid(ValidationError::InvalidCharacter {
                field: "openid",
                position: 1,
                allowed: "A-Z a-z 0-9 _ -",
            }),
        ),
        (q.replace("reserved=hello", "reserved=%FF"), QueryError::BadEncoding),
        (
            format!("{q}&pad={}", "a".repeat(MAX_QUERY_LEN)),
            QueryError::TooLarge { len: q.len() + 5 + MAX_QUERY_LEN, max: MAX_QUERY_LEN },
        ),
    ];
    for (input, want) in cases {
        let got = AuthorizationAnswer::parse(&input).unwrap_err();
        assert_eq!(got, want, "input: {}", &input[..input.len().min(120)]);
        // Every rejection says what is wrong in words, naming the field where there is one.
        let text = got.to_string();
        assert!(!text.is_empty(), "{got:?}");
        if let QueryError::Invalid(v) = &got {
            assert!(text.contains(v.field()), "{text:?} does not name {}", v.field());
        }
    }
}

#[test]
fn input_of_exactly_the_limit_is_accepted() {
    let q = official_query();
    let pad = MAX_QUERY_LEN - q.len() - "&pad=".len();
    let input = format!("{q}&pad={}", "a".repeat(pad));
    assert_eq!(input.len(), MAX_QUERY_LEN);
    assert!(AuthorizationAnswer::parse(&input).is_ok());
}

#[test]
fn verify_names_the_mismatching_field() {
    let answer = AuthorizationAnswer::parse(&official_query()).unwrap();
    let other_template = Expectation::new().template_id(TemplateId::new("other").unwrap());
    assert_eq!(answer.verify(&other_template), Err(Mismatch { field: "template_id" }));
    let other_scene = Expectation::new().scene(Scene::new(1001).unwrap());
    assert_eq!(answer.verify(&other_scene), Err(Mismatch { field: "scene" }));
    for forged in ["hellp", "hell", "helloo", ""] {
        let e = Expectation::new().reserved(Reserved::new(forged).unwrap());
        assert_eq!(answer.verify(&e), Err(Mismatch { field: "reserved" }), "{forged}");
    }
    answer.verify(&Expectation::new()).unwrap();
}

#[test]
fn expectation_from_the_request_checks_all_three() {
    let request = AuthorizeRequest::new(
        AppId::new("wx0123456789abcdef").unwrap(),
        TemplateId::new(TEMPLATE).unwrap(),
        Scene::new(1000).unwrap(),
        HttpUrl::new("https://app.example.com/cb").unwrap(),
    )
    .with_reserved(Reserved::new("hello").unwrap());
    let expect = Expectation::from(&request);
    let answer = AuthorizationAnswer::parse(&official_query()).unwrap();
    answer.verify(&expect).unwrap();
    // Each of the three, changed alone, is caught and named.
    let q = official_query();
    for (changed, field) in [
        (q.replace("reserved=hello", "reserved=evil"), "reserved"),
        (q.replace("scene=1000", "scene=1001"), "scene"),
        (q.replace(&format!("template_id={TEMPLATE}"), "template_id=another_template"), "template_id"),
    ] {
        let forged = AuthorizationAnswer::parse(&changed).unwrap();
        assert_eq!(forged.verify(&expect), Err(Mismatch { field }), "{changed}");
    }
}
