//! The per-message work, each step on its own: build + validate + serialize one message, parse
//! and verify one callback, build one authorization URL, classify one response.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use subscribe_client::test_util::mock_with_stable_token;
use subscribe_client::{Answer, Client};
use subscribe_types::{
    ApiResponse, AppId, AppSecret, AuthorizationAnswer, OneTimeMessage, OpenId, RedirectUrl, Scene,
    TemplateId,
};

fn client() -> Client {
    Client::builder(
        AppId::new("wx5a1db0c0ffee0001").unwrap(),
        AppSecret::new("sandbox-demo-secret-0123456789ab").unwrap(),
    )
    .transport(mock_with_stable_token("T", 7200))
    .build()
    .unwrap()
}

fn micro(c: &mut Criterion) {
    let openid = OpenId::new("oyAaTjt-xXvP87pubE4eUOF-ttD4").unwrap();
    let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM").unwrap();
    let scene = Scene::new(1000).unwrap();
    c.bench_function("message: build + validate + serialize", |b| {
        b.iter(|| {
            let m = OneTimeMessage::builder(black_box(openid.clone()), template.clone(), scene)
                .title("到货提醒")
                .content("您关注的商品已到货，点击查看详情。")
                .url("https://shop.example.com/items/1")
                .color("#173177")
                .build()
                .unwrap();
            // What the client sends (`Endpoint::body`).
            m.to_json()
        });
    });

    let client = client();
    let redirect = RedirectUrl::new("https://shop.example.com/wechat/callback").unwrap();
    let session = subscribe_client::Session::new("session-1").unwrap();
    c.bench_function("authorization URL (signed state)", |b| {
        b.iter(|| client.authorize_url(&template, scene, black_box(&redirect), &session).url);
    });

    let link = client.authorize_url(&template, scene, &redirect, &session);
    let reserved = link.url.split("reserved=").nth(1).unwrap().split(['&', '#']).next().unwrap().to_owned();
    let callback = format!(
        "https://shop.example.com/wechat/callback?openid={openid}&template_id={template}&action=confirm&scene=1000&reserved={reserved}",
        openid = openid.as_str(),
        template = template.as_str()
    );
    c.bench_function("callback: parse only", |b| {
        b.iter(|| AuthorizationAnswer::parse(black_box(&callback)).unwrap());
    });
    // Verifying a state is synchronous work behind an async call: run it to completion on a
    // current-thread runtime (no I/O, so the future is ready at once). The time driver is on
    // because marking a state used is bounded by the client's store timeout.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    // A cancellation uses up nothing: the same callback verifies on every iteration.
    let cancel = callback
        .replace(&format!("openid={}&", openid.as_str()), "")
        .replace("action=confirm", "action=cancel");
    c.bench_function("callback: parse + verify state", |b| {
        b.iter(|| {
            rt.block_on(async {
                client.complete(Answer::Redirect(black_box(&cancel)), &session).await.unwrap().accept().await
            })
        });
    });
    // A confirmation also marks its state used, then seals the mark (in memory): each iteration
    // needs a fresh one.
    c.bench_function("callback: parse + verify + mark used (confirm)", |b| {
        b.iter_batched(
            || {
                let link = client.authorize_url(&template, scene, &redirect, &session);
                callback.replace(&reserved, link.request.reserved.as_str())
            },
            |fresh| {
                rt.block_on(async {
                    client.complete(Answer::Redirect(&fresh), &session).await.unwrap().accept().await
                })
            },
            criterion::BatchSize::SmallInput,
        );
    });

    let ok = br#"{"errcode":0,"errmsg":"ok"}"#;
    let refused = br#"{"errcode":43101,"errmsg":"user refuse to accept the msg rid: 5f1e-0a1b"}"#;
    c.bench_function("response: parse + classify (ok)", |b| {
        b.iter(|| ApiResponse::parse(black_box(ok)).unwrap().into_result().is_ok());
    });
    c.bench_function("response: parse + classify (43101)", |b| {
        b.iter(|| ApiResponse::parse(black_box(refused)).unwrap().into_result().unwrap_err().code().class());
    });
}

criterion_group! {
    name = benches;
    // Changes under 20% against the previous run (kept in target/criterion) count as noise;
    // above it criterion prints "Performance has regressed" and `cargo xtask bench` repeats
    // the line in its summary.
    config = Criterion::default().noise_threshold(0.20);
    targets = micro
}
criterion_main!(benches);
