//! `wxsub send-batch`: JSON lines in, one JSON line out per input line.

use std::borrow::Cow;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use subscribe_client::{Client, RateLimiter};
use subscribe_types::{
    MessageData, MiniProgramMessage, NotificationMessage, OneTimeMessage, OpenId, Scene, TemplateId,
};
use tokio::sync::mpsc;

use crate::output::{Exit, Outcome};

/// One input line. Text fields borrow from the line when they hold no escapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    /// `one_time` when present (checked by [`message`]; the other kinds are [`LibraryTemplateLine`]s).
    #[serde(borrow, rename = "kind")]
    _kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    touser: Cow<'a, str>,
    #[serde(borrow)]
    template_id: Cow<'a, str>,
    scene: SceneField<'a>,
    #[serde(borrow)]
    title: Cow<'a, str>,
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(borrow)]
    color: Option<Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    miniprogram: Option<MiniProgram<'a>>,
}

/// `scene` as a number or a numeric string.
#[derive(Deserialize)]
#[serde(untagged, expecting = "`scene` must be an integer 0..=10000 or a numeric string")]
enum SceneField<'a> {
    Number(serde_json::Number),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MiniProgram<'a> {
    #[serde(borrow)]
    appid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pagepath: Option<Cow<'a, str>>,
}

/// A line of another kind than the one-time message: `mini_program` or `notification`, with
/// `data` as plain strings (`{"thing1": "…"}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryTemplateLine<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    touser: Cow<'a, str>,
    #[serde(borrow)]
    template_id: Cow<'a, str>,
    data: std::collections::BTreeMap<String, String>,
    /// A mini program page (`mini_program`) or a web page (`notification`).
    page: Option<String>,
    miniprogram_state: Option<String>,
    lang: Option<String>,
    #[serde(borrow)]
    miniprogram: Option<MiniProgram<'a>>,
}

/// Only the `kind` of a line (other fields are left to the line's own type).
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
}

/// What one line sends.
enum Msg {
    OneTime(OneTimeMessage),
    MiniProgram(MiniProgramMessage),
    Notification(NotificationMessage),
}

impl Msg {
    fn touser(&self) -> &str {
        match self {
            Self::OneTime(m) => m.touser().as_str(),
            Self::MiniProgram(m) => m.touser().as_str(),
            Self::Notification(m) => m.touser().as_str(),
        }
    }
}

/// The message on `line`, of its `kind` (`one_time` when absent); or the recipient (when the
/// line names one) and why the line is invalid.
fn message(line: &str) -> Result<Msg, (Option<String>, String)> {
    // Only a line that mentions `kind` pays for reading it first.
    if line.contains("\"kind\"") {
        let k: Kind<'_> =
            serde_json::from_str(line).map_err(|e| (None, format!("not a message line: {e}")))?;
        match k.kind.as_deref() {
            None | Some("one_time") => {}
            Some("mini_program" | "notification") => return library_template_message(line),
            Some(_) => return Err((None, "`kind` must be one_time, mini_program or notification".into())),
        }
    }
    one_time(line).map(Msg::OneTime)
}

fn library_template_message(line: &str) -> Result<Msg, (Option<String>, String)> {
    let l: LibraryTemplateLine<'_> =
        serde_json::from_str(line).map_err(|e| (None, format!("not a message line: {e}")))?;
    let to = || Some(l.touser.clone().into_owned());
    let err = |e: subscribe_types::ValidationError| (to(), e.to_string());
    let touser = OpenId::new(&*l.touser).map_err(|e| err(e.in_field("touser")))?;
    let template_id = TemplateId::new(&*l.template_id).map_err(err)?;
    let data = MessageData::from_pairs(&l.data).map_err(|e| (to(), e.to_string()))?;
    if l.kind == "mini_program" {
        if l.miniprogram.is_some() {
            return Err((
                to(),
                "`miniprogram` is for notifications; a mini-program message has `page`".into(),
            ));
        }
        let mut b = MiniProgramMessage::builder(touser, template_id, data);
        if let Some(p) = &l.page {
            b = b.page(p.as_str());
        }
        if let Some(s) = &l.miniprogram_state {
            b = b.state(s.parse().map_err(err)?);
        }
        if let Some(lang) = &l.lang {
            b = b.lang(lang.parse().map_err(err)?);
        }
        return b.build().map(Msg::MiniProgram).map_err(err);
    }
    if l.miniprogram_state.is_some() || l.lang.is_some() {
        return Err((to(), "`miniprogram_state` and `lang` are for mini-program messages".into()));
    }
    let mut b = NotificationMessage::builder(touser, template_id, data);
    if let Some(p) = &l.page {
        b = b.page(p.as_str());
    }
    if let Some(mp) = &l.miniprogram {
        b = b
            .miniprogram(mp.appid.as_deref().unwrap_or_default(), mp.pagepath.as_deref().unwrap_or_default());
    }
    b.build().map(Msg::Notification).map_err(err)
}

/// A one-time message line.
fn one_time(line: &str) -> Result<OneTimeMessage, (Option<String>, String)> {
    let l: Line<'_> = serde_json::from_str(line).map_err(|e| (None, format!("not a message line: {e}")))?;
    let to = || Some(l.touser.clone().into_owned());
    let err = |e: subscribe_types::ValidationError| (to(), e.to_string());
    let scene = match &l.scene {
        SceneField::Number(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) => Scene::new(v).map_err(err)?,
            None => return Err((to(), "`scene` must be an integer 0..=10000".into())),
        },
        SceneField::Text(s) => s.parse::<Scene>().map_err(err)?,
    };
    let mut b = OneTimeMessage::builder(
        OpenId::new(&*l.touser).map_err(|e| err(e.in_field("touser")))?,
        TemplateId::new(&*l.template_id).map_err(err)?,
        scene,
    )
    .title(&*l.title)
    .content(&*l.content);
    if let Some(c) = &l.color {
        b = b.color(&**c);
    }
    if let Some(u) = &l.url {
        b = b.url(&**u);
    }
    if let Some(mp) = &l.miniprogram {
        b = b
            .miniprogram(mp.appid.as_deref().unwrap_or_default(), mp.pagepath.as_deref().unwrap_or_default());
    }
    b.build().map_err(err)
}

/// Lines by status, counted as results come in (by any worker).
#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    delivered: AtomicUsize,
    failed: AtomicUsize,
    unknown: AtomicUsize,
    invalid: AtomicUsize,
}

impl Tally {
    fn count(&self, status: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let counter = match status {
            "delivered" => &self.delivered,
            "unknown" => &self.unknown,
            "invalid" => &self.invalid,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (total, delivered, failed, unknown, invalid).
    fn get(&self) -> (usize, usize, usize, usize, usize) {
        let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        (n(&self.total), n(&self.delivered), n(&self.failed), n(&self.unknown), n(&self.invalid))
    }
}

/// The output is flushed at least this often while anything waits in its buffer, so a person
/// watching sees progress and an idle batch shows everything it has.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Input is read in blocks of this size.
const BUFFER: usize = 64 * 1024;
/// Each worker writes its results in blocks of about this size.
const BLOCK: usize = 32 * 1024;

/// Lines the reading thread hands over at a time, at most.
const BATCH: usize = 32;
/// Batches read ahead.
const READ_AHEAD: usize = 256;

/// Consecutive input lines in one allocation: their text, and each line's number and place.
#[derive(Default)]
struct Batch {
    text: String,
    lines: Vec<(usize, std::ops::Range<usize>)>,
}

/// Reads `input` on a thread of its own (so a slow read never holds up the workers), in
/// numbered batches of non-empty lines, at most [`READ_AHEAD`] batches ahead of the workers. A
/// batch is handed over when it holds [`BATCH`] lines or when no more input is buffered, so
/// lines arriving one by one (a pipe) are sent as they come.
fn read_ahead(input: Box<dyn std::io::Read + Send>) -> mpsc::Receiver<Batch> {
    let (tx, batches) = mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        let mut input = std::io::BufReader::with_capacity(BUFFER, input);
        let mut batch = Batch::default();
        let mut number = 0;
        loop {
            let start = batch.text.len();
            match input.read_line(&mut batch.text) {
                Ok(0) => break,
                Ok(_) => {
                    number += 1;
                    let line = batch.text[start..].trim_end_matches(['\n', '\r']);
                    if line.trim().is_empty() {
                        batch.text.truncate(start);
                    } else {
                        let end = start + line.len();
                        batch.lines.push((number, start..end));
                    }
                }
                Err(e) => {
                    eprintln!("wxsub: reading input stopped at line {}: {e}", number + 1);
                    batch.text.truncate(start);
                    break;
                }
            }
            let ready = batch.lines.len() == BATCH || (input.buffer().is_empty() && !batch.lines.is_empty());
            if ready && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(batch);
    });
    batches
}

/// The input lines, taken one at a time by whichever worker is free: a lock held only to take
/// a line from the current batch, and an async one to wait for the next batch.
struct Lines {
    current: Mutex<(Arc<Batch>, usize)>,
    batches: tokio::sync::Mutex<mpsc::Receiver<Batch>>,
}

/// One input line: its number, and where it is in its batch.
struct InputLine {
    number: usize,
    batch: Arc<Batch>,
    at: std::ops::Range<usize>,
}

impl InputLine {
    fn text(&self) -> &str {
        &self.batch.text[self.at.clone()]
    }
}

impl Lines {
    fn new(batches: mpsc::Receiver<Batch>) -> Self {
        Self { current: Mutex::default(), batches: tokio::sync::Mutex::new(batches) }
    }

    /// A line from the current batch, if one is left.
    fn take(&self) -> Option<InputLine> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (batch, next) = &mut *current;
        let (number, at) = batch.lines.get(*next).cloned()?;
        *next += 1;
        Some(InputLine { number, batch: Arc::clone(batch), at })
    }

    /// The next line; `None` at the end of the input.
    async fn next(&self) -> Option<InputLine> {
        loop {
            if let Some(line) = self.take() {
                return Some(line);
            }
            let mut batches = self.batches.lock().await;
            // Another worker may have fetched a batch while this one waited.
            if let Some(line) = self.take() {
                return Some(line);
            }
            let batch = batches.recv().await?;
            *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(batch), 0);
        }
    }
}

/// Each worker's results waiting to be written: a worker appends to its own buffer (the lock
/// is only ever shared with the flusher), and writes it out when it holds [`BLOCK`] bytes.
struct Pending(Mutex<Vec<u8>>);

impl Pending {
    /// Appends one line; hands back a full block for the caller to write.
    fn push(&self, line: &[u8]) -> Option<Vec<u8>> {
        let mut buffer = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        (buffer.len() >= BLOCK).then(|| std::mem::replace(&mut *buffer, Vec::with_capacity(BLOCK + 512)))
    }

    /// Everything waiting.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Writes a block of whole lines to stdout (its lock keeps blocks from interleaving).
fn write_block(block: &[u8]) -> std::io::Result<()> {
    if block.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(block)?;
    out.flush()
}

/// Reads JSON lines from `input` and sends each with `client`, `concurrency` sends in flight,
/// at most `rate` started per second; prints one result line per input line.
///
/// Memory stays flat whatever the number of lines: `concurrency` long-lived workers each take
/// the next line read ahead by a thread of its own, parse and check it, wait for the rate
/// limiter, send,
/// and append the result to its own small buffer, written out in blocks of whole lines when it
/// fills and by the flusher at least every [`FLUSH_EVERY`]. Results come out in completion
/// order, each with its `line` number.
pub(crate) async fn run(
    client: Client,
    input: &str,
    concurrency: usize,
    rate: Option<f64>,
) -> Result<Exit, String> {
    let source: Box<dyn std::io::Read + Send> = if input == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(input).map_err(|e| format!("cannot read {input}: {e}"))?)
    };
    let limiter = rate.and_then(|r| RateLimiter::per_second(r, Arc::clone(client.clock()))).map(Arc::new);
    let started = Instant::now();
    let lines = Arc::new(Lines::new(read_ahead(source)));
    let workers = concurrency.max(1);
    let pending: Arc<Vec<Pending>> = Arc::new((0..workers).map(|_| Pending(Mutex::default())).collect());
    let tally = Arc::new(Tally::default());
    let progress = std::io::stderr().is_terminal();
    let show_progress = {
        let tally = Arc::clone(&tally);
        move || {
            let (total, delivered, failed, unknown, invalid) = tally.get();
            eprint!(
                "\r{total} done: {delivered} delivered, {failed} failed, {unknown} unknown, {invalid} invalid"
            );
        }
    };
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (lines, pending, tally, client, limiter) = (
                Arc::clone(&lines),
                Arc::clone(&pending),
                Arc::clone(&tally),
                client.clone(),
                limiter.clone(),
            );
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(256);
                loop {
                    let Some(line) = lines.next().await else { break };
                    out.clear();
                    let status =
                        process(&client, limiter.as_deref(), line.number, line.text(), &mut out).await;
                    tally.count(status);
                    if let Some(block) = pending[i].push(&out) {
                        write_block(&block)?;
                    }
                }
                Ok::<(), std::io::Error>(())
            })
        })
        .collect();
    let flusher = tokio::spawn({
        let (pending, show_progress) = (Arc::clone(&pending), show_progress.clone());
        async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tick.tick().await;
                for p in pending.iter() {
                    // A failing stdout fails the workers' writes and the last one too, which
                    // report it.
                    if write_block(&p.take()).is_err() {
                        return;
                    }
                }
                if progress {
                    show_progress();
                }
            }
        }
    });
    let cannot_write = |e: std::io::Error| format!("cannot write the results: {e}");
    let mut write_failure = None;
    for task in tasks {
        if let Err(e) = task.await.map_err(|e| e.to_string())? {
            write_failure.get_or_insert(e);
        }
    }
    flusher.abort();
    if let Some(e) = write_failure {
        return Err(cannot_write(e));
    }
    for p in pending.iter() {
        write_block(&p.take()).map_err(cannot_write)?;
    }
    if progress {
        show_progress();
        eprintln!();
    }
    let (total, delivered, failed, unknown, invalid) = tally.get();
    eprintln!(
        "wxsub: {total} line(s): {delivered} delivered, {failed} failed, {unknown} unknown, {invalid} invalid in {:.1?}",
        started.elapsed()
    );
    Ok(if delivered == total && total > 0 {
        Exit::Ok
    } else if delivered + failed + unknown == 0 {
        Exit::Invalid
    } else {
        Exit::Failed
    })
}

/// Sends one input line and appends its result line to `out`; returns its status.
async fn process(
    client: &Client,
    limiter: Option<&RateLimiter>,
    n: usize,
    line: &str,
    out: &mut Vec<u8>,
) -> &'static str {
    let msg = match message(line) {
        Ok(msg) => msg,
        Err((touser, error)) => {
            let outcome = Outcome { line: Some(n), ..Outcome::invalid(touser.as_deref(), error) };
            outcome.write_json(out);
            return outcome.status;
        }
    };
    if let Some(limiter) = limiter {
        limiter.until_ready().await;
    }
    let (sent, msgid) = match &msg {
        Msg::OneTime(m) => (client.send_one_time(m).await, None),
        Msg::MiniProgram(m) => (client.send_mini_program(m).await, None),
        Msg::Notification(m) => match client.send_notification(m).await {
            Ok(a) => (Ok(a.receipt), Some(a.response.msgid)),
            Err(e) => (Err(e), None),
        },
    };
    let outcome = Outcome { line: Some(n), touser: Some(msg.touser()), msgid, ..Outcome::of(&sent) };
    outcome.write_json(out);
    outcome.status
}

/// The arguments of `wxsub send-batch`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The input file, or `-` for standard input.
    #[arg(long)]
    pub(crate) input: String,
    #[command(flatten)]
    pub(crate) pacing: Pacing,
}

/// How many sends are in flight and how fast they start, as `send-batch` and `grants dispatch`
/// take them.
#[derive(Clone, Copy, Debug, clap::Args)]
pub(crate) struct Pacing {
    /// Sends in flight at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: usize,
    /// At most this many sends started per second.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
}

impl Pacing {
    /// At least one in flight, and a rate (when given) that is a positive number.
    pub(crate) fn checked(self) -> Result<Self, crate::options::Usage> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be a positive number".into());
        }
        Ok(self)
    }
}

/// `wxsub send-batch`: checks the options, then [`run`]s.
pub(crate) async fn command(cli: &crate::options::Cli, args: &Args) -> Result<Exit, crate::options::Usage> {
    let Pacing { concurrency, rate } = args.pacing.checked()?;
    let client = crate::options::client(cli)?;
    run(client, &args.input, concurrency, rate).await
}
