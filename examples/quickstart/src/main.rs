//! `cargo run -p quickstart`: the whole one-time subscription flow against a WeChat sandbox
//! started in this process, printed step by step.
//!
//! 1. build the authorization URL (with a signed `reserved` state);
//! 2. the simulated user opens the page and confirms: the HTTP requests a browser would make;
//! 3. the callback WeChat redirects to is parsed and verified;
//! 4. the one message is sent;
//! 5. it is read back from the user's inbox; a second send without a new confirmation is
//!    refused (43101);
//! 6. the same for a mobile app: the server hands the app the Open SDK request, WeChat on the
//!    phone asks a second user, the app forwards the SDK's answer, the server verifies it and
//!    sends the one message; a second send is refused too;
//! 7. and for a mini program: a third user accepts a one-time template from the
//!    library, the message's data is checked against the template (a value breaking its
//!    keyword's rule never leaves), one message is sent, a second is refused.

// An example program talks to its user on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use subscribe_client::{Answer, Client, Session};
use subscribe_sandbox::{
    DEMO_APPID, DEMO_MP_TEMPLATE, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle,
};
use subscribe_types::{
    AppId, AppSecret, AuthorizationAnswer, MessageData, MiniProgramMessage, OneTimeMessage, RedirectUrl,
    Scene, SubscribeAnswers, TemplateId,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The mobile-app flow: the Open SDK request, WeChat on the phone, the forwarded answer.
async fn phone(client: &Client, sandbox: &SandboxHandle, template: &TemplateId, scene: Scene) -> Result<()> {
    let base = sandbox.base_url();
    let user = &sandbox.state().config().users[1];
    let session = Session::new("app-user-7")?; // the app user's session on your server

    step(7, "A mobile app asks your server for the Open SDK request");
    let request = client.mobile_request(template, scene, &session);
    println!("{}", serde_json::to_string(&request)?);

    step(
        8,
        &format!("WeChat on {}'s phone: the SDK shows the request, {} taps Confirm", user.name, user.name),
    );
    let phone = reqwest::Client::new()
        .post(format!("{base}/sandbox/api/phone"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"appid": DEMO_APPID, "request": request, "action": "confirm", "openid": user.openid})
                .to_string(),
        )
        .send()
        .await?;
    let answer = phone.text().await?;
    println!("the SDK hands the app: {answer}");

    step(9, "The app forwards the answer; your server verifies it");
    // `accept` makes the answer count: from now on the same answer is a replay. (With a grant
    // ledger, `record(&ledger)` instead: it accepts once the grant is recorded.)
    let answer = client.complete(Answer::Mobile(&answer), &session).await?.accept().await;
    let AuthorizationAnswer::Confirmed(grant) = answer else {
        return Err("the user cancelled".into());
    };
    println!("confirmed: openid {} may receive one message; state verified for this app user", grant.openid);

    step(10, "Send the one message, then try a second");
    let message = OneTimeMessage::builder(grant.openid.clone(), grant.template_id, grant.scene)
        .title("到货提醒")
        .content("您关注的「手冲咖啡壶」已到货。\nYour coffee kettle is back in stock.")
        .build()?;
    let receipt = client.send_one_time(&message).await?;
    println!(
        "delivered after {} attempt(s); {}'s inbox: {base}/sandbox/inbox/{}",
        receipt.attempts, user.name, grant.openid
    );
    match client.send_one_time(&message).await {
        Err(e) if e.is_refused_by_user() => println!("second send refused as it should be: {e}"),
        other => return Err(format!("expected 43101, got {other:?}").into()),
    }
    Ok(())
}

/// The mini-program flow: `wx.requestSubscribeMessage` in the mini program, the answer it
/// forwards, the template from the library, one message.
async fn mini_program(client: &Client, sandbox: &SandboxHandle) -> Result<()> {
    let base = sandbox.base_url();
    let user = &sandbox.state().config().users[2];
    let template = TemplateId::new(DEMO_MP_TEMPLATE)?;

    step(11, &format!("A mini program calls wx.requestSubscribeMessage; {} taps Allow", user.name));
    // WeChat records the acceptance (here: the sandbox's control API plays the popup) …
    reqwest::Client::new()
        .post(format!("{base}/sandbox/api/subscribe"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"appid": DEMO_APPID, "openid": user.openid, "template_id": DEMO_MP_TEMPLATE, "decision": "accept"})
                .to_string(),
        )
        .send()
        .await?
        .error_for_status()?;
    // … and the mini program forwards what its success callback got.
    let forwarded = format!(r#"{{"errMsg":"requestSubscribeMessage:ok","{DEMO_MP_TEMPLATE}":"accept"}}"#);
    let answers = SubscribeAnswers::from_request_subscribe_message(&forwarded)?;
    println!("accepted: {:?}", answers.accepted().map(TemplateId::as_str).collect::<Vec<_>>());

    step(12, "Check the message's data against the template from the library");
    let templates = client.templates().await?;
    let from_library = templates
        .data
        .iter()
        .find(|t| t.pri_tmpl_id == template)
        .ok_or("the template is not in the library")?;
    println!("template {} \"{}\" has keys {:?}", template, from_library.title, from_library.keys());
    let too_long = MessageData::from_pairs([("thing1", "手冲咖啡壶（不锈钢，一升装，附赠滤纸两包）")]);
    match too_long {
        Err(e) => println!("refused before sending: {e}"),
        Ok(_) => return Err("an over-long thing was accepted".into()),
    }
    let data = MessageData::from_pairs([
        ("thing1", "手冲咖啡壶"),
        ("time2", "2019-10-01 15:01"),
        ("amount3", "¥199.00"),
    ])?;
    data.check_against(from_library)?;

    step(13, "Send the one mini-program message, then try a second");
    let message =
        MiniProgramMessage::builder(user.openid.clone(), template, data).page("pages/item?id=42").build()?;
    let receipt = client.send_mini_program(&message).await?;
    println!(
        "mini-program message delivered after {} attempt(s); inbox: {base}/sandbox/inbox/{}",
        receipt.attempts, user.openid
    );
    match client.send_mini_program(&message).await {
        Err(e) if e.is_refused_by_user() => println!("second mini-program send refused as it should be: {e}"),
        other => return Err(format!("expected 43101, got {other:?}").into()),
    }
    Ok(())
}

fn step(n: u32, title: &str) {
    println!("\n── {n}. {title}");
}

async fn run() -> Result<()> {
    let sandbox = SandboxHandle::start(SandboxConfig::demo()).await?;
    let base = sandbox.base_url();
    let user = &sandbox.state().config().users[0];
    println!("WeChat sandbox running at {base} (app {DEMO_APPID}, user {} = {})", user.name, user.openid);

    // The client, pointed at the sandbox for both the API and the authorization page.
    let client = Client::builder(AppId::new(DEMO_APPID)?, AppSecret::new(DEMO_SECRET)?)
        .api_base(&base)
        .mp_base(&base)
        .build()?;
    let template = TemplateId::new(DEMO_TEMPLATE)?;
    let scene = Scene::new(1000)?;

    step(1, "Build the authorization URL (send the user here, inside WeChat)");
    let redirect = RedirectUrl::new("https://shop.example.com/wechat/subscribed")?;
    let session = Session::new("browser-session-1")?; // your user's session id: the answer verifies only in it
    let link = client.authorize_url(&template, scene, &redirect, &session);
    println!("{}", link.url);

    step(2, &format!("{} opens the page and taps Confirm", user.name));
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let page_url = link.url.split('#').next().unwrap_or(&link.url);
    let page = browser.get(page_url).send().await?;
    println!("GET  /mp/subscribemsg → HTTP {} ({} bytes of HTML)", page.status(), page.text().await?.len());
    let query = page_url.split_once('?').map_or("", |(_, q)| q);
    let decision = browser
        .post(format!("{base}/mp/subscribemsg/decide"))
        .form(&[("q", query), ("openid", user.openid.as_str()), ("decision", "confirm")])
        .send()
        .await?;
    let location = decision
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("the sandbox did not redirect")?
        .to_owned();
    println!("POST /mp/subscribemsg/decide → HTTP {} → {location}", decision.status());

    step(3, "Your callback parses and verifies WeChat's answer");
    let answer = client.complete(Answer::Redirect(&location), &session).await?.accept().await;
    let AuthorizationAnswer::Confirmed(grant) = answer else {
        return Err("the user cancelled".into());
    };
    println!(
        "confirmed: openid {} may receive one message (template {}, scene {}); state verified",
        grant.openid, grant.template_id, grant.scene
    );

    step(4, "Send the one message this confirmation allows");
    let message = OneTimeMessage::builder(grant.openid.clone(), grant.template_id, grant.scene)
        .title("到货提醒")
        .content("您关注的「手冲咖啡壶」已到货，库存有限。\nYour coffee kettle is back in stock.")
        .color("#173177")
        .url("https://shop.example.com/items/42")
        .build()?;
    let receipt = client.send_one_time(&message).await?;
    println!("delivered after {} attempt(s)", receipt.attempts);

    step(5, &format!("{}'s inbox (Service Notifications)", user.name));
    let inbox: serde_json::Value = serde_json::from_str(
        &browser.get(format!("{base}/sandbox/api/inbox/{}", grant.openid)).send().await?.text().await?,
    )?;
    let received = &inbox["messages"][0];
    println!(
        "【{}】\n{}",
        received["title"].as_str().unwrap_or(""),
        received["content"].as_str().unwrap_or("")
    );
    println!("(HTML view: {base}/sandbox/inbox/{})", grant.openid);

    step(6, "A second send without a new confirmation");
    match client.send_one_time(&message).await {
        Err(e) if e.is_refused_by_user() => println!("refused as it should be: {e}"),
        other => return Err(format!("expected 43101, got {other:?}").into()),
    }

    phone(&client, &sandbox, &template, scene).await?;
    mini_program(&client, &sandbox).await?;

    println!("\nDone: in every flow, one confirmation, one message.");
    sandbox.shutdown().await;
    Ok(())
}
