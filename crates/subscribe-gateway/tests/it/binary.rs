//! The binary as an operator runs it: its log lines (JSON, filtered by `RUST_LOG`, without a
//! secret) and its stop on SIGTERM (requests in flight finish, new connections are refused,
//! exit 0).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, Faults, SandboxHandle, TokenFault};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::*;

/// The binary, serving the test configuration against a sandbox, its stderr collected.
pub(crate) struct Binary {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// Where `/metrics` is served, when `server.metrics_listen` is set.
    pub(crate) metrics: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
    _dir: TempDir,
}

/// The test configuration, changed by `edit`, in a directory of its own, for `sandbox`.
fn config_file(sandbox: &SandboxHandle, edit: impl FnOnce(String) -> String) -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, edit(config_text(dir.path(), &sandbox.base_url()))).unwrap();
    (dir, path)
}

impl Binary {
    /// Starts the binary on the configuration at `path` with `RUST_LOG` set to `rust_log`
    /// (unset for `None`) and waits for its "listening" line, which gives its address.
    async fn start(dir: TempDir, path: &Path, rust_log: Option<&str>) -> Self {
        Self::start_with_env(dir, path, rust_log, &[]).await
    }

    /// As [`start`](Self::start), with the variables `env` set in the process's environment
    /// (a store's URL for `url_env`).
    pub(crate) async fn start_with_env(
        dir: TempDir,
        path: &Path,
        rust_log: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_subscribe-gateway"));
        command
            .arg("--config")
            .arg(path)
            .env_remove("RUST_LOG")
            .env_remove("SUBSCRIBE_GATEWAY_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let reader = tokio::spawn({
            let lines = Arc::clone(&lines);
            async move {
                let mut stderr = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = stderr.next_line().await {
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }
        });
        let wants_metrics = std::fs::read_to_string(path).unwrap().contains("metrics_listen");
        let said = Arc::clone(&lines);
        let listening = async {
            let (mut addr, mut metrics) = (None, None);
            while let Some(line) = rx.recv().await {
                let event: serde_json::Value = serde_json::from_str(&line).expect(&line);
                let at = || event["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                if event["message"] == "subscribe-gateway listening" {
                    addr = Some(at());
                } else if event["message"] == "metrics listening" {
                    metrics = Some(at());
                }
                if let Some(addr) = addr
                    && (metrics.is_some() || !wants_metrics)
                {
                    return (addr, metrics);
                }
            }
            panic!("the gateway exited before it listened: {:#?}", said.lock().unwrap())
        };
        let (addr, metrics) =
            tokio::time::timeout(Duration::from_secs(20), listening).await.expect("the gateway listens");
        Self { child, addr, metrics, lines, reader, _dir: dir }
    }

    fn token_url(&self) -> String {
        format!("http://{}/v1/apps/{DEMO_APPID}/access_token", self.addr)
    }

    /// Sends SIGTERM, as systemd and container runtimes do.
    pub(crate) fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit: its status and every line it wrote to stderr.
    pub(crate) async fn exit(mut self) -> (ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the gateway exits after SIGTERM")
            .unwrap();
        self.reader.await.unwrap();
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }
}

/// Every line parsed as a JSON object with a level and a message.
pub(crate) fn events(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|line| {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(event["level"].is_string(), "no level: {line}");
            assert!(event["message"].is_string(), "no message: {line}");
            event
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_json_lines_that_show_no_secret_key_or_token() {
    let sandbox = sandbox().await;
    let (dir, path) = config_file(&sandbox, |text| {
        text.replacen("[server]\n", "[server]\nmetrics_listen = \"127.0.0.1:0\"\n", 1)
    });
    let gw = Binary::start(dir, &path, None).await;
    let http = reqwest::Client::new();
    let first: serde_json::Value =
        http.get(gw.token_url()).bearer_auth(KEY_A).send().await.unwrap().json().await.unwrap();
    let stale = first["access_token"].as_str().unwrap().to_owned();
    sandbox.state().revoke_tokens(Duration::ZERO);
    let report = serde_json::json!({ "access_token": stale });
    let r = http.post(format!("{}/invalidate", gw.token_url())).bearer_auth(KEY_A).json(&report).send().await;
    let fresh: serde_json::Value = r.unwrap().json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, stale);
    assert_eq!(http.get(gw.token_url()).bearer_auth(KEY_B).send().await.unwrap().status(), 403);
    assert_eq!(
        http.get(gw.token_url())
            .bearer_auth("wrong-key-wrong-key-wrong-key-wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The metrics, on their own listener, without a key; not on the API's.
    let metrics = format!("http://{}/metrics", gw.metrics.expect("metrics_listen is set"));
    let metrics = http.get(metrics).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"subscribe_gateway_token_refreshes_total{app="wx5a1db0c0ffee0001"} 2"#),
        "{metrics}"
    );
    assert_eq!(http.get(format!("http://{}/metrics", gw.addr)).send().await.unwrap().status(), 404);
    gw.terminate();
    let (status, lines) = gw.exit().await;
    assert!(status.success(), "{status:?}");

    let events = events(&lines);
    let said = |message: &str| events.iter().any(|e| e["message"] == message);
    assert!(said("subscribe-gateway listening") && said("subscribe-gateway stopped"), "{lines:#?}");
    // At the default level (info) the client's own lines are there, with their fields.
    let request =
        events.iter().find(|e| e["message"] == "requesting an access token").expect("the token flow");
    assert_eq!(request["level"], "INFO");
    assert_eq!(request["appid"], DEMO_APPID);
    let all = lines.join("\n");
    for secret in [DEMO_SECRET, SECRET_B, KEY_A, KEY_B, &stale, &fresh] {
        assert!(!all.contains(secret), "the logs show a secret: {all}");
        assert!(!metrics.contains(secret), "the metrics show a secret: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_and_refuses_new_connections() {
    let sandbox = sandbox().await;
    // Each token request stalls 2 s at WeChat: the first read is in flight that long.
    sandbox.state().set_faults(Faults {
        token_fault: Some(TokenFault::Stall),
        token_stall_ms: Some(2000),
        ..Faults::default()
    });
    let (dir, path) = config_file(&sandbox, |text| text);
    let gw = Binary::start(dir, &path, Some("info,subscribe_client=warn")).await;
    let in_flight = tokio::spawn({
        let (http, url) = (reqwest::Client::new(), gw.token_url());
        async move {
            let r = http.get(url).bearer_auth(KEY_A).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    });
    // Until the gateway's token request reached WeChat.
    tokio::time::timeout(Duration::from_secs(10), async {
        while sandbox.state().stats().stable_token_requests == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request reaches the token endpoint");
    gw.terminate();
    // New connections are refused (the listener is closed) while the request is in flight.
    let refused = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match tokio::net::TcpStream::connect(gw.addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "new connections are refused after SIGTERM");
    assert!(!in_flight.is_finished(), "refused while the request is still in flight");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the request in flight finishes: {body}");
    assert!(body["access_token"].is_string());
    let (exit, lines) = gw.exit().await;
    assert_eq!(exit.code(), Some(0), "{lines:#?}");

    let events = events(&lines);
    assert!(events.iter().any(|e| e["message"].as_str().unwrap().starts_with("stopping")), "{lines:#?}");
    // RUST_LOG is obeyed: the client's info lines are filtered out, the gateway's are not.
    assert!(
        !events
            .iter()
            .any(|e| e["level"] == "INFO" && e["target"].as_str().unwrap().starts_with("subscribe_client")),
        "{lines:#?}"
    );
    assert!(events.iter().any(|e| e["message"] == "subscribe-gateway listening"));
}
