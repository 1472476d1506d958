//! The mini-program and notification types: keyword keys and value rules, the two messages, the template
//! library's requests and answers, and what users answered on their side.

use proptest::prelude::*;
use subscribe_types::*;

const TEMPLATE: &str = "bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY";

fn value_ok(kind: &str, value: &str) -> bool {
    MessageData::from_pairs([(format!("{kind}1"), value)]).is_ok()
}

/// Every example value from WeChat's rule table and its documentation's sample messages is
/// accepted.
#[test]
fn the_documented_examples_are_accepted() {
    for (kind, value) in [
        ("thing", "5月15日下午3点领取"),
        ("thing", "TIT创意园"),
        ("number", "100"),
        ("number", "100.5"),
        ("number", "-3"),
        ("letter", "WeChat"),
        ("symbol", "%"),
        ("symbol", "★☆"),
        ("character_string", "CS123456-7"),
        ("character_string", "DH20191001#A"),
        ("time", "15:01"),
        ("time", "15:01:59"),
        ("time", "2019年10月1日 15:01"),
        ("time", "2019-10-01 15:01"),
        ("time", "2019-10-01 15:01 ~ 2019-10-01 17:01"),
        ("date", "2019年10月1日"),
        ("date", "2019-10-01"),
        ("date", "2019/10/1"),
        ("date", "2019-10-01 15:01"),
        ("date", "2019年10月1日~2019年10月7日"),
        ("date", "2020-02-29"),
        ("amount", "¥100"),
        ("amount", "￥199.00"),
        ("amount", "100.00元"),
        ("amount", "$12.5"),
        ("phone_number", "+86-0766-66888866"),
        ("phone_number", "020 1234 5678"),
        ("car_number", "粤A8Z888挂"),
        ("car_number", "京A12345"),
        ("name", "张三"),
        ("name", "Tom Smith"),
        ("name", "阿卜杜·买买提"),
        ("phrase", "配送中"),
        ("phrase", "已发货"),
        ("enum", "已发货"),
    ] {
        assert!(value_ok(kind, value), "{kind}: {value} should be accepted");
    }
}

#[test]
fn values_that_break_their_rule_are_refused_naming_the_key_and_the_rule() {
    for (kind, value, fault) in [
        ("number", "12a", "it must be"),
        ("number", "1.", "it must be"),
        ("letter", "abc1", "position 3"),
        ("symbol", "a", "position 0"),
        ("character_string", "订单123", "position 0"),
        ("time", "25:00", "it must be"),
        ("time", "2019-10-01", "it must be"),
        ("time", "15:1", "it must be"),
        ("date", "2019-02-29", "it must be"),
        ("date", "2019-13-01", "it must be"),
        ("date", "15:01", "it must be"),
        ("amount", "¥12345678901", "it must be"),
        ("amount", "¥¥1", "it must be"),
        ("phone_number", "138abc", "position 3"),
        ("car_number", "粤A粤8888", "position 2"),
        ("name", "张三3", "position 2"),
        ("phrase", "OK", "position 0"),
        ("phrase", "已经发货了呢", "at most 5"),
        ("thing", "", "empty"),
    ] {
        let err = MessageData::from_pairs([(format!("{kind}7"), value)]).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.field(), format!("{kind}7").replace(kind, &format!("data.{kind}")) + ".value");
        assert!(text.contains(KeywordType::from_name(kind).unwrap().rule()), "{text}");
        assert!(text.contains(fault), "{kind} {value}: {text}");
        // (Values of one or two characters can occur in the rule's own words.)
        if value.chars().count() >= 3 {
            assert!(!text.contains(value), "the value is never shown: {text}");
            assert!(!format!("{err:?}").contains(value), "nor debug-printed: {err:?}");
        }
    }
}

#[test]
fn keys_are_a_keyword_type_and_an_index() {
    let key: DataKey = "phone_number12".parse().unwrap();
    assert_eq!(
        (key.keyword_type(), key.index(), key.as_str()),
        (KeywordType::PhoneNumber, 12, "phone_number12")
    );
    for bad in ["thing", "thing0", "thing01", "thing1000", "Thing1", "colour1", "1thing", "thing1a", ""] {
        let err = bad.parse::<DataKey>().unwrap_err();
        assert!(matches!(err, DataError::BadKey { .. }), "{bad}: {err}");
    }
    let long = "x".repeat(10_000);
    let err = long.parse::<DataKey>().unwrap_err();
    assert!(err.to_string().len() < 200, "a long key is cut in the error");
    for kind in KeywordType::ALL {
        assert_eq!(KeywordType::from_name(kind.as_str()), Some(kind));
    }
}

#[test]
fn data_refuses_duplicates_nothing_and_too_much() {
    let err = MessageData::from_pairs([("thing1", "a"), ("thing1", "b")]).unwrap_err();
    assert!(matches!(err, DataError::Duplicate { .. }), "{err}");
    let none: [(&str, &str); 0] = [];
    assert_eq!(MessageData::from_pairs(none).unwrap_err(), DataError::Empty);
    let many: Vec<(String, &str)> = (1..=33).map(|i| (format!("thing{i}"), "x")).collect();
    assert!(matches!(MessageData::from_pairs(many).unwrap_err(), DataError::TooMany { max: 32 }));
}

fn template(content: &str, enums: &[(&str, &[&str])]) -> Template {
    let list: Vec<serde_json::Value> = enums
        .iter()
        .map(|(code, values)| serde_json::json!({"keywordCode": code, "enumValueList": values}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "priTmplId": TEMPLATE, "title": "订单发货提醒", "content": content, "example": "", "type": 2,
        "keywordEnumValueList": list,
    }))
    .unwrap()
}

#[test]
fn data_is_checked_against_the_template() {
    let t = template(
        "商品名称:{{thing1.DATA}}\n发货时间:{{time2.DATA}}\n状态:{{enum3.DATA}}\n",
        &[("enum3.DATA", &["已发货", "已签收"])],
    );
    assert_eq!(t.keys(), ["thing1", "time2", "enum3"]);
    assert_eq!(t.kind, TemplateKind::OneTime);
    assert!(t.kind.is_consumed_by_send());
    let ok = MessageData::from_pairs([("thing1", "衬衫"), ("time2", "15:01"), ("enum3", "已发货")]).unwrap();
    ok.check_against(&t).unwrap();

    let missing = MessageData::from_pairs([("thing1", "衬衫"), ("enum3", "已发货")]).unwrap();
    assert_eq!(missing.check_against(&t).unwrap_err(), DataError::MissingKey { key: "time2".into() });
    let extra = MessageData::from_pairs([
        ("thing1", "衬衫"),
        ("time2", "15:01"),
        ("enum3", "已发货"),
        ("thing4", "x"),
    ])
    .unwrap();
    assert_eq!(extra.check_against(&t).unwrap_err().field(), "data.thing4");
    let off_list =
        MessageData::from_pairs([("thing1", "衬衫"), ("time2", "15:01"), ("enum3", "已退货")]).unwrap();
    let err = off_list.check_against(&t).unwrap_err();
    assert!(matches!(err, DataError::NotInList { count: 2, .. }), "{err}");
    assert!(!err.to_string().contains("已退货"));
    // `keywordCode` without `.DATA` reads the same.
    let t = template("{{enum1.DATA}}", &[("enum1", &["a"])]);
    assert!(MessageData::from_pairs([("enum1", "b")]).unwrap().check_against(&t).is_err());
}

#[test]
fn messages_serialize_as_wechat_expects() {
    let data = MessageData::from_pairs([("thing1", "衬衫")]).unwrap();
    let to = OpenId::new(crate::OPENID).unwrap();
    let tpl = TemplateId::new(TEMPLATE).unwrap();
    let plain = MiniProgramMessage::builder(to.clone(), tpl.clone(), data.clone()).build().unwrap();
    assert_eq!(
        String::from_utf8(plain.to_json()).unwrap(),
        format!(
            r#"{{"touser":"{}","template_id":"{TEMPLATE}","data":{{"thing1":{{"value":"衬衫"}}}}}}"#,
            crate::OPENID
        )
    );
    let err = MiniProgramMessage::builder(to.clone(), tpl.clone(), data.clone())
        .page("pages/a b")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "page");
    let err =
        MiniProgramMessage::builder(to.clone(), tpl.clone(), data.clone()).page("").build().unwrap_err();
    assert_eq!(err.field(), "page");
    assert_eq!("trial".parse::<MiniProgramState>().unwrap(), MiniProgramState::Trial);
    assert_eq!("zh_TW".parse::<Lang>().unwrap(), Lang::ZhTw);
    assert_eq!("fr_FR".parse::<Lang>().unwrap_err().field(), "lang");
    assert_eq!("release".parse::<MiniProgramState>().unwrap_err().field(), "miniprogram_state");

    let n = NotificationMessage::builder(to.clone(), tpl.clone(), data.clone())
        .miniprogram("wx0123456789abcdef", "pages/index?x=1")
        .build()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&n.to_json()).unwrap();
    assert_eq!(json["miniprogram"]["pagepath"], "pages/index?x=1");
    assert!(json.get("page").is_none(), "absent links are left out, never null");
    let err = NotificationMessage::builder(to, tpl, data).page("ftp://x").build().unwrap_err();
    assert_eq!(err.field(), "page");
}

#[test]
fn library_answers_are_read_tolerantly() {
    let titles: PublicTemplates = serde_json::from_str(
        r#"{"errcode":0,"errmsg":"ok","count":55,"data":[{"tid":99,"title":"付款成功通知","type":2,"categoryId":"616"},{"tid":"100","title":"到货提醒","type":3,"categoryId":616}]}"#,
    )
    .unwrap();
    assert_eq!(titles.count, 55);
    assert_eq!(
        (titles.data[1].tid, titles.data[1].category_id, titles.data[1].kind),
        (100, 616, TemplateKind::LongTerm)
    );
    assert!(!titles.data[1].kind.is_consumed_by_send());
    let keywords: Keywords = serde_json::from_str(
        r#"{"count":2,"data":[{"kid":1,"name":"物品名称","example":"名称","rule":"thing"},{"kid":2,"name":"金额","example":"¥1","rule":"amount"}]}"#,
    )
    .unwrap();
    assert_eq!(keywords.data[1].keyword_type(), Some(KeywordType::Amount));
    let added: AddedTemplate =
        serde_json::from_str(&format!(r#"{{"errcode":0,"priTmplId":"{TEMPLATE}"}}"#)).unwrap();
    assert_eq!(added.pri_tmpl_id.as_str(), TEMPLATE);
    let categories: Categories = serde_json::from_str(r#"{"data":[{"id":616,"name":"公交"}]}"#).unwrap();
    assert_eq!(categories.data[0].id, 616);
    assert!(serde_json::from_str::<Templates>(r#"{"data":[{"priTmplId":"bad id!","type":2}]}"#).is_err());
}

#[test]
fn library_requests_are_checked() {
    assert!(AddTemplate::new(1, [1, 2], None).is_ok());
    assert!(AddTemplate::new(1, [1, 2, 3, 4, 5], Some(&"字".repeat(15))).is_ok());
    assert_eq!(AddTemplate::new(1, [1, 2, 3, 4, 5, 6], None).unwrap_err().field(), "kidList");
    assert_eq!(AddTemplate::new(1, [1, 1], None).unwrap_err().field(), "kidList");
    assert_eq!(AddTemplate::new(1, [1, 2], Some(&"字".repeat(16))).unwrap_err().field(), "sceneDesc");
    assert_eq!(AddTemplate::new(1, [1, 2], Some("")).unwrap_err().field(), "sceneDesc");
    assert_eq!(TitlesQuery::new([], 0, 10).unwrap_err().field(), "ids");
    assert_eq!(TitlesQuery::new([1], 0, 0).unwrap_err().field(), "limit");
    assert_eq!(TitlesQuery::new([1], 30, 30).unwrap().query(), "ids=1&start=30&limit=30");
}

#[test]
fn user_side_answers_parse_into_decisions() {
    let a = SubscribeAnswers::from_request_subscribe_message(&format!(
        r#"{{"errMsg":"requestSubscribeMessage:ok","{TEMPLATE}":"acceptWithAudio","other_tpl":"ban","x_tpl":"filter","y":"somethingNew","n":1}}"#
    ))
    .unwrap();
    let tpl = TemplateId::new(TEMPLATE).unwrap();
    assert_eq!(a.get(&tpl), Some(SubscribeDecision::AcceptWithAudio));
    assert_eq!(a.accepted().collect::<Vec<_>>(), [&tpl]);
    assert_eq!(a.get(&TemplateId::new("y").unwrap()), Some(SubscribeDecision::Unknown));
    assert_eq!(a.iter().count(), 4, "non-string members are not decisions");

    let failed = SubscribeAnswers::from_request_subscribe_message(
        r#"{"errMsg":"requestSubscribeMessage:fail can only be invoked by user TAP gesture.","errCode":20004}"#,
    )
    .unwrap_err();
    assert_eq!(failed, AnswerError::Failed { code: Some(20004) });

    let open = SubscribeAnswers::from_open_subscribe(&format!(
        r#"{{"{TEMPLATE}":"{{\"status\":\"reject\"}}","b_tpl":{{"status":"cancel"}}}}"#
    ))
    .unwrap();
    assert_eq!(open.get(&tpl), Some(SubscribeDecision::Reject));
    assert_eq!(open.get(&TemplateId::new("b_tpl").unwrap()), Some(SubscribeDecision::Cancel));
    assert_eq!(open.accepted().count(), 0);

    for (bad, expected) in [
        ("[1]", AnswerError::NotAnObject),
        (r#"{"a":"{\"s\":1}"}"#, AnswerError::NoStatus { field: "subscribeDetails" }),
        (r#"{"bad id":"{\"status\":\"accept\"}"}"#, AnswerError::BadTemplateId { field: "subscribeDetails" }),
    ] {
        assert_eq!(SubscribeAnswers::from_open_subscribe(bad).unwrap_err(), expected, "{bad}");
    }
    let secret = r#"{"errMsg":"requestSubscribeMessage:ok","tpl":"accept" oops-secret"#;
    let err = SubscribeAnswers::from_request_subscribe_message(secret).unwrap_err();
    assert!(matches!(err, AnswerError::NotJson { .. }) && !err.to_string().contains("oops"), "{err}");
    let huge = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_QUERY_LEN));
    assert!(matches!(
        SubscribeAnswers::from_open_subscribe(&huge).unwrap_err(),
        AnswerError::TooLarge { .. }
    ));
}

#[test]
fn an_invalid_argument_names_its_field() {
    let e = ApiError::new(ErrCode::ARGUMENT_INVALID, "argument invalid! data.thing3.value invalid rid: 5f0c");
    assert_eq!(e.invalid_field(), Some("data.thing3.value"));
    let e = ApiError::new(ErrCode::ARGUMENT_INVALID, "argument invalid! data.phrase5.value invalid");
    assert_eq!(e.invalid_field(), Some("data.phrase5.value"));
    assert_eq!(ApiError::new(ErrCode::USER_REFUSED, "data.thing3.value").invalid_field(), None);
}

/// Characters counted by each length-limited type: `n` of them, `ok` says what the rule says.
fn chars_of(kind: KeywordType) -> &'static str {
    match kind {
        KeywordType::Thing => "a字1 ",
        KeywordType::Number => "0123456789",
        KeywordType::Letter => "abcXYZ",
        KeywordType::Symbol => "%#-+",
        KeywordType::CharacterString => "a1-#",
        KeywordType::PhoneNumber => "0123-",
        KeywordType::Phrase => "已发货中",
        _ => "",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For each type with a length limit: every length up to the limit is accepted, one past
    /// it is refused as too long.
    #[test]
    fn lengths_up_to_the_limit_pass_and_one_more_fails(
        kind in prop::sample::select(vec![
            (KeywordType::Thing, 20usize), (KeywordType::Number, 32), (KeywordType::Letter, 32),
            (KeywordType::Symbol, 5), (KeywordType::CharacterString, 32), (KeywordType::PhoneNumber, 17),
            (KeywordType::Phrase, 5),
        ]),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 40),
    ) {
        let (kind, max) = kind;
        let alphabet: Vec<char> = chars_of(kind).chars().collect();
        let value = |n: usize| -> String { picks[..n].iter().map(|i| *i.get(&alphabet)).collect() };
        for n in 1..=max {
            prop_assert!(kind.check(&value(n)).is_ok(), "{} of {} chars: {:?}", kind, n, kind.check(&value(n)));
        }
        prop_assert_eq!(kind.check(&value(max + 1)), Err(ValueFault::TooLong { max, actual: max + 1 }));
    }

    /// `name`: 20 ASCII letters pass and 21 fail; with one Chinese character, 10 pass and 11 fail.
    #[test]
    fn a_name_with_chinese_counts_as_chinese(letters in "[a-zA-Z]{21}", han in "[一-龥]{11}") {
        prop_assert!(KeywordType::Name.check(&letters[..20]).is_ok());
        prop_assert!(KeywordType::Name.check(&letters).is_err());
        let han: Vec<char> = han.chars().collect();
        let ten: String = han[..10].iter().collect();
        let eleven: String = han.iter().collect();
        prop_assert!(KeywordType::Name.check(&ten).is_ok());
        prop_assert!(KeywordType::Name.check(&eleven).is_err());
        let mixed = format!("{}{}", han[0], &letters[..10]);
        prop_assert!(KeywordType::Name.check(&mixed).is_err(), "a mix of 11 counts as Chinese");
    }

    /// Every real date and time of the day passes, in each written form, alone and as a range.
    #[test]
    fn real_dates_and_times_pass(y in 1970u32..2100, m in 1u32..=12, d in 1u32..=28, h in 0u32..24, min in 0u32..60) {
        let time = format!("{h}:{min:02}");
        for date in [format!("{y}-{m:02}-{d:02}"), format!("{y}/{m}/{d}"), format!("{y}年{m}月{d}日")] {
            prop_assert!(KeywordType::Date.check(&date).is_ok(), "{}", date);
            let at = format!("{date} {time}");
            prop_assert!(KeywordType::Date.check(&at).is_ok(), "{}", at);
            prop_assert!(KeywordType::Time.check(&at).is_ok(), "{}", at);
            let range = format!("{at}~{at}");
            prop_assert!(KeywordType::Time.check(&range).is_ok(), "{}", range);
        }
        prop_assert!(KeywordType::Time.check(&time).is_ok());
        let late = format!("{}:{min:02}", h + 24);
        prop_assert!(KeywordType::Time.check(&late).is_err(), "{}", late);
    }

    /// No input makes the parsers panic, and no error repeats the value it refused.
    #[test]
    fn any_key_and_value_is_an_answer_never_a_panic(key in "\\PC{0,24}", value in "\\PC{0,40}") {
        if let Err(e) = MessageData::from_pairs([(key.as_str(), value.as_str())]) {
            let text = e.to_string();
            if value.chars().count() > 3 && !key.contains(&value) {
                prop_assert!(!text.contains(&value), "{}", text);
            }
        }
        let _ = SubscribeAnswers::from_open_subscribe(&value);
        let _ = SubscribeAnswers::from_request_subscribe_message(&value);
    }
}
