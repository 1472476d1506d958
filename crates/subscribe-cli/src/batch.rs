//! `wxsub send-batch`: JSON lines in, one JSON line out per input line.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use subscribe_client::{Client, RateLimiter};
use subscribe_types::{OpenId, Scene, SubscribeMessage, TemplateId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

use crate::output::{Exit, outcome_json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    touser: String,
    template_id: String,
    scene: serde_json::Value,
    title: String,
    content: String,
    color: Option<String>,
    url: Option<String>,
    miniprogram: Option<MiniProgram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MiniProgram {
    appid: Option<String>,
    pagepath: Option<String>,
}

fn message(line: &str) -> Result<(String, SubscribeMessage), (Option<String>, String)> {
    let l: Line = serde_json::from_str(line).map_err(|e| (None, format!("not a message line: {e}")))?;
    let to = l.touser.clone();
    let err = |e: subscribe_types::ValidationError| (Some(to.clone()), e.to_string());
    let scene = match &l.scene {
        serde_json::Value::Number(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) => Scene::new(v).map_err(err)?,
            None => return Err((Some(to), "`scene` must be an integer 0..=10000".into())),
        },
        serde_json::Value::String(s) => s.parse::<Scene>().map_err(err)?,
        _ => return Err((Some(to), "`scene` must be a number or a numeric string".into())),
    };
    let mut b = SubscribeMessage::builder(
        OpenId::new(l.touser.as_str()).map_err(|e| err(e.in_field("touser")))?,
        TemplateId::new(l.template_id).map_err(err)?,
        scene,
    )
    .title(l.title)
    .content(l.content);
    if let Some(c) = l.color {
        b = b.color(c);
    }
    if let Some(u) = l.url {
        b = b.url(u);
    }
    if let Some(mp) = l.miniprogram {
        b = b.miniprogram(mp.appid.unwrap_or_default(), mp.pagepath.unwrap_or_default());
    }
    Ok((l.touser, b.build().map_err(err)?))
}

#[derive(Default)]
struct Tally {
    total: usize,
    delivered: usize,
    failed: usize,
    unknown: usize,
    invalid: usize,
}

pub(crate) async fn run(
    client: Client,
    input: &str,
    concurrency: usize,
    rate: Option<f64>,
) -> Result<Exit, String> {
    let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if input == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(input).await.map_err(|e| format!("cannot read {input}: {e}"))?)
    };
    let mut lines = BufReader::new(reader).lines();
    let (tx, mut rx) = mpsc::unbounded_channel::<serde_json::Value>();
    let permits = Arc::new(Semaphore::new(concurrency));
    let limiter = rate.and_then(|r| RateLimiter::per_second(r, Arc::clone(client.clock())));
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();

    // Print results as they come, while reading and sending.
    let printer = tokio::spawn(async move {
        let mut t = Tally::default();
        while let Some(v) = rx.recv().await {
            t.total += 1;
            match v["status"].as_str() {
                Some("delivered") => t.delivered += 1,
                Some("unknown") => t.unknown += 1,
                Some("invalid") => t.invalid += 1,
                _ => t.failed += 1,
            }
            println!("{v}");
            if progress {
                eprint!(
                    "\r{} done: {} delivered, {} failed, {} unknown, {} invalid",
                    t.total, t.delivered, t.failed, t.unknown, t.invalid
                );
            }
        }
        if progress {
            eprintln!();
        }
        t
    });

    let mut n = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                eprintln!("wxsub: reading input stopped at line {}: {e}", n + 1);
                break;
            }
        };
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match message(&line) {
            Err((touser, error)) => {
                let mut v = serde_json::json!({"line": n, "status": "invalid", "error": error});
                if let Some(t) = touser {
                    v["touser"] = t.into();
                }
                let _ = tx.send(v);
            }
            Ok((touser, msg)) => {
                if let Some(limiter) = &limiter {
                    limiter.until_ready().await;
                }
                let permit = Arc::clone(&permits).acquire_owned().await.map_err(|e| e.to_string())?;
                let (client, tx) = (client.clone(), tx.clone());
                tasks.spawn(async move {
                    let (mut v, _) = outcome_json(&client.send(&msg).await);
                    v["line"] = n.into();
                    v["touser"] = touser.into();
                    let _ = tx.send(v);
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    drop(tx);
    let t = printer.await.map_err(|e| e.to_string())?;
    eprintln!(
        "wxsub: {} line(s): {} delivered, {} failed, {} unknown, {} invalid in {:.1?}",
        t.total,
        t.delivered,
        t.failed,
        t.unknown,
        t.invalid,
        started.elapsed()
    );
    Ok(if t.delivered == t.total && t.total > 0 {
        Exit::Ok
    } else if t.delivered + t.failed + t.unknown == 0 {
        Exit::Invalid
    } else {
        Exit::Failed
    })
}
