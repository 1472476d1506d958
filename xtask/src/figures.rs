//! Figures a command writes: the tables of `docs/performance.md` and `docs/reliability.md` are
//! rendered from the JSON that `cargo xtask bench` and `cargo xtask faults` save beside them
//! (`docs/figures/*.json`, with the commit, the date and the machine's core count), into a
//! generated section between `<!-- NAME:start -->` and `<!-- NAME:end -->`. The repository
//! check (`tidy`) renders each table again from the committed JSON and fails when the committed
//! section differs, or when a figure in the document's prose is not in its table.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::run::{Result, root};

/// A document with a generated section: its path, the JSON it is rendered from, the section's
/// marker name and the renderer.
pub(crate) struct Generated {
    pub(crate) doc: &'static str,
    pub(crate) json: &'static str,
    pub(crate) name: &'static str,
    pub(crate) render: fn(&Value) -> Result<String>,
}

pub(crate) const GENERATED: &[Generated] = &[
    Generated {
        doc: "docs/performance.md",
        json: "docs/figures/bench.json",
        name: "bench",
        render: render_bench,
    },
    Generated {
        doc: "docs/reliability.md",
        json: "docs/figures/faults.json",
        name: "faults",
        render: render_faults,
    },
];

/// What every saved run carries: which command, the commit (with `+dirty` when the tree had
/// uncommitted changes), the date (UTC), the machine's cores and the sizes run.
pub(crate) fn run_meta(command: &str, mode: &str) -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let mut commit = git(&["rev-parse", "--short=7", "HEAD"]);
    if !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit.push_str("+dirty");
    }
    let date = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    serde_json::json!({ "generated_by": command, "commit": commit, "date": date, "cores": cores, "mode": mode })
}

/// Writes `value` to `json` (pretty, so a diff reads well) and renders `doc`'s section from it.
pub(crate) fn publish(g: &Generated, value: &Value) -> Result {
    let json_path = root().join(g.json);
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&json_path, text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let doc_path = root().join(g.doc);
    let doc = std::fs::read_to_string(&doc_path).map_err(|e| format!("{}: {e}", doc_path.display()))?;
    let updated = replace_section(&doc, g.name, &(g.render)(value)?)?;
    std::fs::write(&doc_path, updated).map_err(|e| format!("{}: {e}", doc_path.display()))?;
    eprintln!("{}: figures in {}, table in {}", g.name, g.json, g.doc);
    Ok(())
}

/// `cargo xtask figures`: renders each document's table again from its committed JSON (after a
/// change to a renderer; the figures themselves come only from `cargo xtask bench` and `cargo
/// xtask faults`).
pub(crate) fn rerender() -> Result {
    let mut missing = Vec::new();
    for g in GENERATED {
        let path = root().join(g.json);
        if !path.is_file() {
            missing.push(format!("{} (run `{}`)", g.json, command(g)));
            continue;
        }
        let json = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc_path = root().join(g.doc);
        let doc = std::fs::read_to_string(&doc_path).map_err(|e| format!("{}: {e}", doc_path.display()))?;
        let updated = replace_section(&doc, g.name, &(g.render)(&value)?)?;
        std::fs::write(&doc_path, updated).map_err(|e| format!("{}: {e}", doc_path.display()))?;
        eprintln!("figures: {} rendered from {}", g.doc, g.json);
    }
    if missing.is_empty() { Ok(()) } else { Err(format!("no figures to render: {}", missing.join(", "))) }
}

fn markers(name: &str) -> (String, String) {
    (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"))
}

/// The text between the section's markers.
pub(crate) fn section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let (start, end) = markers(name);
    let a = doc.find(&start)? + start.len();
    let b = doc[a..].find(&end)? + a;
    Some(doc[a..b].trim_matches('\n'))
}

/// `doc` with its section's content replaced by `body`.
pub(crate) fn replace_section(doc: &str, name: &str, body: &str) -> Result<String> {
    let (start, end) = markers(name);
    let (Some(a), Some(b)) = (doc.find(&start), doc.find(&end)) else {
        return Err(format!("the document lacks the {start} … {end} markers"));
    };
    Ok(format!("{}{start}\n{}\n{}", &doc[..a], body.trim_matches('\n'), &doc[b..]))
}

/// The repository check: each generated section is what its committed JSON renders to, from a
/// full run of committed code; every figure of the document's prose is in that section's
/// tables; and every performance figure stated in another document (a README, the operations
/// guide) is in the bench table.
pub(crate) fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut bench_figures = Vec::new();
    for g in GENERATED {
        let (Ok(doc), Ok(json)) =
            (std::fs::read_to_string(root.join(g.doc)), std::fs::read_to_string(root.join(g.json)))
        else {
            problems.push(format!("{} or {} is missing (run `{}`)", g.doc, g.json, command(g)));
            continue;
        };
        let value = match serde_json::from_str::<Value>(&json) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{} does not parse: {e}", g.json));
                continue;
            }
        };
        if value["mode"] != "full" {
            problems.push(format!(
                "{} is from a `{}` run: publish the full run's figures",
                g.json, value["mode"]
            ));
        }
        if value["commit"].as_str().is_none_or(|c| c.ends_with("+dirty")) {
            problems.push(format!(
                "{} was measured on uncommitted code (commit {}): measure a commit",
                g.json, value["commit"]
            ));
        }
        let rendered = match (g.render)(&value) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{} does not render: {e}", g.json));
                continue;
            }
        };
        let Some(committed) = section(&doc, g.name) else {
            problems.push(format!("{} lacks its generated section <!-- {}:start --> … end", g.doc, g.name));
            continue;
        };
        if committed.trim() != rendered.trim() {
            problems.push(format!(
                "{}'s generated table differs from what {} renders to: edit neither by hand; `{}` writes both",
                g.doc,
                g.json,
                command(g)
            ));
        }
        let known = table_figures(&rendered);
        for figure in prose_figures(&doc, Some(g.name)) {
            if !known.iter().any(|k| k.same(&figure)) {
                problems.push(unknown(g.doc, &figure));
            }
        }
        if g.name == "bench" {
            bench_figures = known;
        }
    }
    // Performance figures quoted elsewhere must be the bench table's too.
    for file in other_markdown(root) {
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for figure in prose_figures(&text, None) {
            if !bench_figures.iter().any(|k| k.same(&figure)) {
                problems.push(unknown(&rel, &figure));
            }
        }
    }
    problems
}

fn unknown(doc: &str, figure: &Figure) -> String {
    format!(
        "{doc}: the figure `{}` is not in the generated tables (state figures from docs/performance.md's or \
         docs/reliability.md's table, word a target or bound as one, or date it under a `History` heading)",
        figure.text
    )
}

/// The repository's markdown files other than the generated documents (and outside `target/`
/// and hidden directories).
fn other_markdown(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md")
                && !GENERATED.iter().any(|g| root.join(g.doc) == path)
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn command(g: &Generated) -> String {
    format!("cargo xtask {}", if g.name == "bench" { "bench" } else { "faults" })
}

/// A measured-looking figure: a number followed by a unit of measure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) text: String,
}

impl Figure {
    /// The same quantity: the same unit and value (`1.0 ×` is `1 ×`, `64,071` is `64071`).
    fn same(&self, other: &Figure) -> bool {
        self.unit == other.unit && (self.value - other.value).abs() < 1e-9
    }
}

/// The units whose figures must come from a table, spelled as written and as compared:
/// ratios, rates, memory, times and shares.
const UNITS: &[(&str, &str)] = &[
    ("msg/s", "msg/s"),
    ("lines/s", "lines/s"),
    ("req/s", "req/s"),
    ("MiB", "MiB"),
    ("µs", "µs"),
    ("ns", "ns"),
    ("ms", "ms"),
    ("×", "×"),
    ("x", "×"),
    ("X", "×"),
    ("%", "%"),
];

/// What, ending the clause just before a figure, makes it a target or a bound rather than a
/// measurement.
const BOUND_WORDS: &[&str] = &[
    "target",
    "at least",
    "at most",
    "under",
    "below",
    "above",
    "over",
    "more than",
    "less than",
    "fewer than",
    "floor",
    "within",
    "up to",
    "limit",
    "threshold",
    "threshold of",
    "budget",
    "every",
];

/// The figures of `doc` outside its generated section (`name`), code blocks, inline code and
/// any section headed `History` (records of their day, dated, not regenerated).
pub(crate) fn prose_figures(doc: &str, name: Option<&str>) -> Vec<Figure> {
    let (start, end) = name.map(markers).unwrap_or_default();
    let mut figures = Vec::new();
    let (mut in_code, mut in_generated) = (false, false);
    // The level of the `History` heading we are under, if any: it lasts until a heading of
    // the same level or above.
    let mut history: Option<usize> = None;
    for line in doc.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if name.is_some() && line.contains(&start) {
            in_generated = true;
        }
        if name.is_some() && line.contains(&end) {
            in_generated = false;
            continue;
        }
        if !in_code && trimmed.starts_with('#') {
            let level = trimmed.chars().take_while(|c| *c == '#').count();
            if history.is_some_and(|h| level <= h) {
                history = None;
            }
            if history.is_none() && trimmed[level..].trim_start().starts_with("History") {
                history = Some(level);
            }
        }
        if in_code || in_generated || history.is_some() {
            continue;
        }
        figures.extend(line_figures(&strip_inline_code(line), true));
    }
    figures
}

/// The figures of a rendered table (its first line, the header, names the commit and date and
/// is left out), bounds included.
fn table_figures(rendered: &str) -> Vec<Figure> {
    rendered.lines().skip(1).flat_map(|l| line_figures(l, false)).collect()
}

fn strip_inline_code(line: &str) -> String {
    line.split('`').enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, s)| s).collect::<Vec<_>>().join(" ")
}

/// The number starting at `chars[i]`, if one does: its end and its text.
fn number_at(chars: &[(usize, char)], i: usize) -> Option<usize> {
    let starts = chars.get(i)?.1.is_ascii_digit() && (i == 0 || !is_word(chars[i - 1].1));
    if !starts {
        return None;
    }
    let mut j = i;
    while j < chars.len()
        && (chars[j].1.is_ascii_digit()
            || (matches!(chars[j].1, ',' | '.') && chars.get(j + 1).is_some_and(|c| c.1.is_ascii_digit())))
    {
        j += 1;
    }
    Some(j)
}

/// The figures of one line: a number, or a range `a–b` / `a-b` (both count), then an optional
/// space and a unit not followed by a letter. With `skip_bounds`, figures whose clause ends in
/// a bound word ("at least 0.5 ×", "(floor 0.25 ×)") are left out.
fn line_figures(line: &str, skip_bounds: bool) -> Vec<Figure> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let at = |k: usize| chars.get(k).map_or(line.len(), |c| c.0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let Some(mut j) = number_at(&chars, i) else {
            i += 1;
            continue;
        };
        let mut numbers = vec![(i, j)];
        // A range: `0.59–0.63 ×` states two figures.
        if chars.get(j).is_some_and(|c| matches!(c.1, '–' | '-'))
            && let Some(k) = number_at(&chars, j + 1).filter(|_| chars[j + 1].1.is_ascii_digit())
        {
            numbers.push((j + 1, k));
            j = k;
        }
        let rest = &line[at(j)..];
        let after_space = rest.strip_prefix(' ').unwrap_or(rest);
        let unit = UNITS.iter().find(|(spelled, _)| {
            after_space
                .strip_prefix(spelled)
                .is_some_and(|r| r.chars().next().is_none_or(|c| !c.is_alphanumeric()))
        });
        if let Some((_, unit)) = unit
            && !(skip_bounds && is_bound(&line[..at(i)]))
        {
            for (a, b) in numbers {
                let text = &line[at(a)..at(b)];
                if let Ok(value) = text.replace(',', "").parse::<f64>() {
                    out.push(Figure { value, unit, text: format!("{text} {unit}") });
                }
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// Whether the clause that ends at a figure (`before` is the line up to it) ends in a bound
/// word. Clauses end at `,;:()—` and at a sentence's full stop.
fn is_bound(before: &str) -> bool {
    let clause = before
        .rsplit([',', ';', ':', '(', ')', '—'])
        .next()
        .unwrap_or(before)
        .rsplit(". ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    BOUND_WORDS.iter().any(|w| clause == *w || clause.ends_with(&format!(" {w}")))
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

/// `1234567` as `1,234,567` and `2091.1` as `2,091.1`: the number as JSON wrote it (a whole
/// number without its `.0`), its integer digits grouped by three.
pub(crate) fn thousands(v: &Value) -> String {
    let Some(f) = v.as_f64() else { return v.to_string() };
    let written = if f.fract() == 0.0 && f.abs() < 1e15 { format!("{f:.0}") } else { v.to_string() };
    let (sign, rest) = written.strip_prefix('-').map_or(("", written.as_str()), |r| ("-", r));
    let (digits, fraction) = rest.split_once('.').map_or((rest, None), |(d, f)| (d, Some(f)));
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// A field every renderer needs: missing or `null` is an error naming it, so a renamed field
/// fails the render instead of printing a blank.
fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    match v.get(key) {
        Some(Value::Null) | None => Err(format!("{} lacks `{key}`", who(v))),
        Some(x) => Ok(x),
    }
}

fn who(v: &Value) -> &str {
    v.get("scenario").or_else(|| v.get("name")).and_then(Value::as_str).unwrap_or("a row")
}

/// A number field, with thousands separators; another type is an error naming it.
fn n(v: &Value, key: &str) -> Result<String> {
    let x = field(v, key)?;
    if x.is_number() { Ok(thousands(x)) } else { Err(format!("{}: `{key}` is not a number: {x}", who(v))) }
}

/// A ratio field, with its sign: `0.92 ×`.
fn ratio(v: &Value, key: &str) -> Result<String> {
    Ok(format!("{} ×", n(v, key)?))
}

/// A text field; another type is an error naming it.
fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    let x = field(v, key)?;
    x.as_str().ok_or_else(|| format!("{}: `{key}` is not text: {x}", who(v)))
}

fn header(doc: &Value, source: &str) -> Result<String> {
    Ok(format!(
        "Generated by `{}` from [`{source}`]({source}) (do not edit by hand): commit {}, {}, {} cores, {} sizes.\n",
        text(doc, "generated_by")?,
        text(doc, "commit")?,
        text(doc, "date")?,
        n(doc, "cores")?,
        text(doc, "mode")?,
    ))
}

/// `docs/performance.md`'s tables from `docs/figures/bench.json`.
pub(crate) fn render_bench(doc: &Value) -> Result<String> {
    let mut out = header(doc, "figures/bench.json")?;
    out.push_str(
        "\n| Scenario | Figure | Baseline in the same run | Ratio | Runs |\n|---|---|---|---|---|\n",
    );
    let scenarios = field(doc, "scenarios")?.as_array().ok_or("`scenarios` is not a list")?;
    for s in scenarios {
        let stat = text(s, "stat")?;
        for cells in bench_rows(s)? {
            let _ = writeln!(out, "| {} | {stat} |", cells.join(" | "));
        }
    }
    let micro = field(doc, "micro")?.as_array().ok_or("`micro` is not a list")?;
    if !micro.is_empty() {
        out.push_str(
            "\nPer operation (criterion, `crates/subscribe-client/benches/micro.rs`, the median of its samples):\n\n\
             | Operation | Median |\n|---|---|\n",
        );
        for m in micro {
            let _ = writeln!(out, "| {} | {} ns |", text(m, "name")?, n(m, "median_ns")?);
        }
    }
    Ok(out)
}

/// One scenario's rows: scenario, figure, baseline, ratio.
#[allow(clippy::too_many_lines)] // one arm per scenario, each its table row
fn bench_rows(s: &Value) -> Result<Vec<[String; 4]>> {
    Ok(match text(s, "scenario")? {
        "throughput" => vec![
            [
                format!(
                    "Send throughput: {} sends, concurrency {}, the whole client on its default (reqwest) transport",
                    n(s, "sends")?,
                    n(s, "concurrency")?
                ),
                format!("{} msg/s, {} µs CPU/msg", n(s, "client_per_s")?, n(s, "client_cpu_us_per_msg")?),
                format!(
                    "plain reqwest posting the same bodies: {} msg/s, {} µs CPU/msg",
                    n(s, "plain_reqwest_per_s")?,
                    n(s, "plain_cpu_us_per_msg")?
                ),
                ratio(s, "ratio")?,
            ],
            [
                "The same through `HyperTransport`".to_owned(),
                format!("{} msg/s", n(s, "hyper_client_per_s")?),
                format!("plain hyper-util: {} msg/s", n(s, "plain_hyper_per_s")?),
                ratio(s, "hyper_ratio")?,
            ],
        ],
        "gateway" => vec![
            [
                format!(
                    "Through `subscribe-gateway` (SQLite): {} token reads, concurrency {}",
                    n(s, "sends")?,
                    n(s, "concurrency")?
                ),
                format!("{} reads/s, p99 {} ms", n(s, "token_reads_per_s")?, n(s, "token_read_p99_ms")?),
                "(from the gateway's memory)".to_owned(),
                "–".to_owned(),
            ],
            [
                format!("Sends through the gateway: {} one-time messages over HTTP", n(s, "sends")?),
                format!(
                    "{} msg/s, the gateway's own {} µs CPU/msg; gateway peak {} MiB",
                    n(s, "gateway_send_per_s")?,
                    n(s, "gateway_cpu_us_per_send")?,
                    n(s, "gateway_peak_mib")?
                ),
                format!(
                    "`wxsub send-batch`, the same sends: {} msg/s, {} µs CPU/line",
                    n(s, "send_batch_per_s")?,
                    n(s, "send_batch_cpu_us_per_line")?
                ),
                ratio(s, "ratio")?,
            ],
            [
                "The same with an `Idempotency-Key` each (a record claimed and settled in SQLite)".to_owned(),
                format!(
                    "{} msg/s, the gateway's own {} µs CPU/msg",
                    n(s, "gateway_keyed_send_per_s")?,
                    n(s, "gateway_cpu_us_per_keyed_send")?
                ),
                format!("`wxsub send-batch`: {} msg/s", n(s, "send_batch_per_s")?),
                ratio(s, "keyed_ratio")?,
            ],
        ],
        "sandbox" => vec![[
            format!(
                "The client through the sandbox: {} sends, concurrency {}",
                n(s, "sends")?,
                n(s, "concurrency")?
            ),
            format!("{} msg/s, {} µs CPU/msg", n(s, "client_per_s")?, n(s, "cpu_us_per_msg")?),
            format!("the client against the fixed server: {} msg/s", n(s, "fixed_server_client_per_s")?),
            ratio(s, "ratio_to_fixed_server")?,
        ]],
        "send-batch" => vec![[
            format!(
                "`wxsub send-batch`: {} lines, concurrency {}, the whole command (default `--transport hyper`)",
                n(s, "lines")?,
                n(s, "concurrency")?
            ),
            format!(
                "{} lines/s, {} µs CPU/line; peak RSS {} MiB, {} MiB for ten times the lines",
                n(s, "wxsub_per_s")?,
                n(s, "wxsub_cpu_us_per_line")?,
                n(s, "wxsub_peak_rss_mib")?,
                n(s, "wxsub_peak_rss_mib_10x_lines")?
            ),
            format!(
                "the library (a child process): {} msg/s, {} µs CPU/msg; plain reqwest: {} msg/s",
                n(s, "library_per_s")?,
                n(s, "library_cpu_us_per_msg")?,
                n(s, "plain_reqwest_per_s")?
            ),
            format!(
                "{} the library, {} plain reqwest",
                ratio(s, "ratio")?,
                ratio(s, "ratio_to_plain_reqwest")?
            ),
        ]],
        "cold-start" => vec![[
            format!("Cold start: {} concurrent sends on a fresh client", n(s, "sends")?),
            format!(
                "{} token request(s); last delivery after {} ms",
                n(s, "token_requests")?,
                n(s, "ms_to_last_delivery")?
            ),
            "—".to_owned(),
            "—".to_owned(),
        ]],
        "dispatch" => vec![[
            format!("Dispatch: {} grants, in-memory ledger, concurrency 64", n(s, "grants")?),
            format!(
                "{} msg/s, {} µs CPU/msg; the dispatcher's peak {} MiB above the filled ledger ({} MiB)",
                n(s, "dispatch_per_s")?,
                n(s, "cpu_us_per_msg")?,
                n(s, "peak_above_filled_ledger_mib")?,
                n(s, "rss_ledger_filled_mib")?
            ),
            format!("plain client sends: {} msg/s", n(s, "client_send_per_s")?),
            ratio(s, "ratio_to_client_send")?,
        ]],
        "dispatch-sql" => {
            let memory = format!(
                "the in-memory ledger, same rounds: {} msg/s, {} µs CPU/msg",
                n(s, "memory_per_s")?,
                n(s, "memory_cpu_us_per_msg")?
            );
            // The CPU floor is the full run's; the quick run checks the rate alone. A server
            // that is not on this machine has no CPU to read (a quick run may use one).
            let present = |key: &str| !matches!(s.get(key), None | Some(Value::Null));
            let cpu_floor = if present("postgres_cpu_floor") {
                format!(", floor {}", ratio(s, "postgres_cpu_floor")?)
            } else {
                String::new()
            };
            let (database_cpu, cpu_ratio) = if present("postgres_database_cpu_us_per_msg") {
                (
                    format!("the server's own {} µs CPU/msg", n(s, "postgres_database_cpu_us_per_msg")?),
                    format!(
                        "; CPU per message, the server's included: {}{cpu_floor}",
                        ratio(s, "postgres_cpu_ratio")?
                    ),
                )
            } else {
                ("the server's CPU not read (not on this machine)".to_owned(), String::new())
            };
            vec![
                [
                    format!("Dispatch: {} grants on `SqlGrantLedger`, SQLite (a WAL file)", n(s, "grants")?),
                    format!("{} msg/s, {} µs CPU/msg", n(s, "sqlite_per_s")?, n(s, "sqlite_cpu_us_per_msg")?),
                    memory.clone(),
                    ratio(s, "sqlite_ratio")?,
                ],
                [
                    format!(
                        "Dispatch: {} grants on `SqlGrantLedger`, PostgreSQL on the same machine",
                        n(s, "grants")?
                    ),
                    format!(
                        "{} msg/s, {} µs CPU/msg and {}",
                        n(s, "postgres_per_s")?,
                        n(s, "postgres_cpu_us_per_msg")?,
                        database_cpu
                    ),
                    memory,
                    format!(
                        "{} (floor {}){cpu_ratio}",
                        ratio(s, "postgres_ratio")?,
                        ratio(s, "postgres_floor")?
                    ),
                ],
            ]
        }
        "latency" => {
            let mut rows = Vec::new();
            for r in field(s, "rows")?.as_array().ok_or("`rows` is not a list")? {
                rows.push([
                    format!(
                        "`wxsub send-batch` at {} ms per send: {} lines, {} in flight (`--transport hyper`; \
                         then `--transport reqwest`)",
                        n(s, "latency_ms")?,
                        n(r, "lines")?,
                        n(r, "in_flight")?
                    ),
                    format!(
                        "{} msg/s ({} in flight / latency), {} connections opened, {} µs CPU/line, peak RSS \
                         {} MiB; reqwest: {} msg/s, {} connections opened, {} µs CPU/line, peak RSS {} MiB",
                        n(r, "wxsub_per_s")?,
                        ratio(r, "ratio_to_ideal")?,
                        n(r, "connections_opened")?,
                        n(r, "cpu_us_per_line")?,
                        n(r, "peak_rss_mib")?,
                        n(r, "reqwest_per_s")?,
                        n(r, "reqwest_connections_opened")?,
                        n(r, "reqwest_cpu_us_per_line")?,
                        n(r, "reqwest_peak_rss_mib")?
                    ),
                    format!(
                        "in flight / latency: {} msg/s; plain hyper on {} keep-alive connections: {} msg/s, {} µs CPU/msg",
                        n(r, "ideal_per_s")?,
                        n(r, "plain_connections_opened")?,
                        n(r, "plain_connections_per_s")?,
                        n(r, "plain_connections_cpu_us_per_msg")?
                    ),
                    format!("{} (of the lower)", ratio(r, "ratio")?),
                ]);
                rows.push([
                    format!(
                        "The same over TLS (a test authority `--ca-file` trusts), {} in flight",
                        n(r, "in_flight")?
                    ),
                    format!(
                        "{} msg/s, {} connections opened, {} TLS handshakes, {} µs CPU/line, peak RSS {} MiB",
                        n(r, "tls_per_s")?,
                        n(r, "tls_connections_opened")?,
                        n(r, "tls_handshakes")?,
                        n(r, "tls_cpu_us_per_line")?,
                        n(r, "tls_peak_rss_mib")?
                    ),
                    format!("plain HTTP, same in flight: {} µs CPU/line", n(r, "cpu_us_per_line")?),
                    format!("{} the CPU per line", ratio(r, "tls_cpu_ratio")?),
                ]);
                rows.push([
                    format!(
                        "`Dispatcher` at {} ms per send, {} grants, {} in flight (hyper transport): in memory; \
                         `SqlGrantLedger` on SQLite; on PostgreSQL",
                        n(s, "latency_ms")?,
                        n(r, "lines")?,
                        n(r, "in_flight")?
                    ),
                    format!(
                        "{} msg/s, {} µs CPU/msg; SQLite {} msg/s, {} µs CPU/msg; PostgreSQL {} msg/s, {} µs \
                         CPU/msg and the server's own {} µs CPU/msg; {} / {} / {} connections opened",
                        n(r, "dispatch_memory_per_s")?,
                        n(r, "dispatch_memory_cpu_us_per_msg")?,
                        n(r, "dispatch_sqlite_per_s")?,
                        n(r, "dispatch_sqlite_cpu_us_per_msg")?,
                        n(r, "dispatch_postgres_per_s")?,
                        n(r, "dispatch_postgres_cpu_us_per_msg")?,
                        n(r, "dispatch_postgres_database_cpu_us_per_msg")?,
                        n(r, "dispatch_memory_connections_opened")?,
                        n(r, "dispatch_sqlite_connections_opened")?,
                        n(r, "dispatch_postgres_connections_opened")?
                    ),
                    "the lower of in flight / latency and plain hyper, as above".to_owned(),
                    format!(
                        "{} / {} / {}",
                        ratio(r, "dispatch_memory_ratio")?,
                        ratio(r, "dispatch_sqlite_ratio")?,
                        ratio(r, "dispatch_postgres_ratio")?
                    ),
                ]);
            }
            // What one more send in flight costs: the peak's growth between the fewest and the
            // most in flight among the rows where every send had its connection (past that, the
            // machine's CPU, not the setting, decides how many are in flight).
            let full: Vec<&Value> = field(s, "rows")?
                .as_array()
                .ok_or("`rows` is not a list")?
                .iter()
                .filter(|r| r["connections_opened"] == r["in_flight"])
                .collect();
            if let (Some(lo), Some(hi)) = (full.first(), full.last()) {
                let number = |r: &Value, key: &str| {
                    field(r, key)?.as_f64().ok_or_else(|| format!("{}: `{key}` is not a number", who(r)))
                };
                let sends = number(hi, "in_flight")? - number(lo, "in_flight")?;
                if sends > 0.0 {
                    let growth = |key: &str| -> Result<f64> {
                        Ok((number(hi, key)? - number(lo, key)?) * 1024.0 / sends)
                    };
                    let (kib, plain) = (growth("peak_rss_mib")?, growth("plain_connections_peak_rss_mib")?);
                    rows.push([
                        "Memory per send in flight, `--transport hyper`".to_owned(),
                        format!(
                            "{kib:.1} KiB: the peak's growth from {} to {} in flight, per send",
                            n(lo, "in_flight")?,
                            n(hi, "in_flight")?
                        ),
                        format!(
                            "plain hyper, the same growth per keep-alive connection: {plain:.1} KiB (its buffers and its task's channel)"
                        ),
                        // A noisy run can show no growth for the baseline: no ratio then.
                        if plain > 0.0 {
                            format!("{:.3} × the memory per connection", kib / plain)
                        } else {
                            "—".to_owned()
                        },
                    ]);
                }
            }
            rows
        }
        other => return Err(format!("no table row for the scenario `{other}`")),
    })
}

/// `docs/reliability.md`'s table from `docs/figures/faults.json`: one row per scenario, as
/// the fault benchmark saved it (`bench/src/faults.rs`).
pub(crate) fn render_faults(doc: &Value) -> Result<String> {
    let mut out = header(doc, "figures/faults.json")?;
    let _ = write!(
        out,
        "{} messages per scenario at concurrency {}; one run of each, every row's expectations checked.\n\n",
        n(doc, "sends")?,
        n(doc, "concurrency")?
    );
    out.push_str(
        "| Scenario | Delivered | Failed (by kind) | Unknown | Token requests | Send requests (extra) | \
         Deliveries counted by the sandbox | Most messages in one inbox | Last outcome after |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in field(doc, "rows")?.as_array().ok_or("`rows` is not a list")? {
        let kinds = field(row, "failed_by_kind")?.as_object().ok_or("`failed_by_kind` is not an object")?;
        let mut failed = Vec::new();
        for (kind, count) in kinds {
            let count = count
                .as_u64()
                .ok_or_else(|| format!("{}: the count of `{kind}` is not a number", who(row)))?;
            failed.push(format!("{} × {kind}", thousands(&count.into())));
        }
        let failed = if failed.is_empty() { "0".to_owned() } else { failed.join(", ") };
        let probably =
            field(row, "probably_delivered")?.as_u64().ok_or("`probably_delivered` is not a number")?;
        let unknown = if probably > 0 {
            format!("{} ({probably} probably delivered)", n(row, "unknown")?)
        } else {
            n(row, "unknown")?
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {:.1} s |",
            text(row, "name")?,
            n(row, "delivered")?,
            failed,
            unknown,
            n(row, "token_requests")?,
            n(row, "send_requests")?,
            n(row, "extra_requests")?,
            n(row, "sandbox_deliveries")?,
            n(row, "most_in_one_inbox")?,
            field(row, "last_outcome_s")?
                .as_f64()
                .ok_or_else(|| format!("{}: `last_outcome_s` is not a number", who(row)))?,
        );
    }
    render_store_faults(doc, &mut out)?;
    Ok(out)
}

/// The second table: a dispatch through each store fault (`bench/src/stores.rs`).
fn render_store_faults(doc: &Value, out: &mut String) -> Result {
    let secs = |row: &Value, key: &str| -> Result<String> {
        match row.get(key).ok_or_else(|| format!("{} lacks `{key}`", who(row)))? {
            Value::Null => Ok("—".to_owned()),
            v => v
                .as_f64()
                .map(|x| format!("{x:.1} s"))
                .ok_or_else(|| format!("{}: `{key}` is not a number", who(row))),
        }
    };
    let _ = write!(
        out,
        "\n**When the store fails mid-dispatch**: {} grants per row at {} in flight, each on a Redis or \
         PostgreSQL server or a SQLite file of its own; one run of each, every row's expectations checked.\n\n",
        n(doc, "store_grants")?,
        n(doc, "store_concurrency")?
    );
    out.push_str(
        "| Store fault | Fault lasted | Delivered (ledger) | In review | Deliveries counted by the sandbox | \
         Send requests (token replays) | Token requests | Deliveries left unrecorded | Grants the store forgot | \
         Dispatch runs | Settling again after | Every grant settled after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in field(doc, "store_rows")?.as_array().ok_or("`store_rows` is not a list")? {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
            text(row, "name")?,
            secs(row, "fault_s")?,
            n(row, "delivered")?,
            n(row, "in_review")?,
            n(row, "sandbox_deliveries")?,
            n(row, "send_requests")?,
            n(row, "token_rejections")?,
            n(row, "token_requests")?,
            n(row, "unrecorded")?,
            n(row, "forgotten_by_the_store")?,
            n(row, "dispatch_runs")?,
            secs(row, "dispatch_back_s")?,
            secs(row, "elapsed_s")?,
        );
    }
    let _ = write!(
        out,
        "\n**The gateway under its store's restart**: {} keyed sends per row at {} in flight, each \
         caller asking again with the same `Idempotency-Key` while the answer is 409, 503 or none; \
         `/readyz` read every 100 ms.\n\n",
        n(doc, "gateway_keys")?,
        n(doc, "gateway_concurrency")?
    );
    out.push_str(
        "| Store fault | Fault lasted | Keys answered delivered | Unknown | Keys answered two ways | \
         Deliveries counted by the sandbox | Send requests | `/readyz` 503 after | `/readyz` 200 again after | \
         Last key answered after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in field(doc, "gateway_rows")?.as_array().ok_or("`gateway_rows` is not a list")? {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            text(row, "name")?,
            secs(row, "fault_s")?,
            n(row, "delivered")?,
            n(row, "unknown")?,
            n(row, "answers_changed")?,
            n(row, "sandbox_deliveries")?,
            n(row, "send_requests")?,
            secs(row, "readyz_down_after_s")?,
            secs(row, "readyz_up_after_s")?,
            secs(row, "elapsed_s")?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(figures: Vec<Figure>) -> Vec<String> {
        figures.into_iter().map(|f| f.text).collect()
    }

    #[test]
    fn figures_in_prose_are_found_with_their_units_and_bounds_are_not() {
        let doc = "The client runs at 0.92 × plain reqwest (64,071 msg/s) and 2.1 MiB.\n\
                   Target: under 64 MiB. At least 0.5 x. Growth more than 16 MiB fails.\n\
                   ```\ncargo bench 100 ms\n```\n\
                   `code 3 ms` and 12 µs, 0.59–0.63 ×, 0.48-0.54 x, 0.92X, 80 %.\n\
                   The ratio (floor 0.25 ×) came out at 0.59 x. Under load it ran at 0.9 ×.\n\
                   ## History\nonce 0.43 ×\n### Then\n0.5 ×\n## Next\n9.5 ×\n\
                   <!-- bench:start -->\n| 9 ms |\n<!-- bench:end -->\n";
        assert_eq!(
            texts(prose_figures(doc, Some("bench"))),
            [
                "0.92 ×",
                "64,071 msg/s",
                "2.1 MiB",
                "12 µs",
                "0.59 ×",
                "0.63 ×",
                "0.48 ×",
                "0.54 ×",
                "0.92 ×",
                "80 %",
                "0.59 ×",
                "0.9 ×",
                "9.5 ×"
            ]
        );
    }

    #[test]
    fn a_figure_after_wide_characters_does_not_panic() {
        assert_eq!(texts(line_figures("— the dispatcher ran at abcdefg 0.92 ×", true)), ["0.92 ×"]);
        assert_eq!(
            texts(line_figures("到货提醒，您关注的商品已到货，点击查看详情 at most 3 ms", true)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn figures_compare_by_unit_and_value() {
        let table =
            table_figures("Generated … commit 2 ms, 2026-12-06, 2 cores\n| 1 × | 64071 msg/s | 0.5 × |");
        let prose = line_figures("1.0 × and 64,071 msg/s and 0.50 ×, but 2 ms and 1 msg/s", true);
        let known: Vec<bool> = prose.iter().map(|p| table.iter().any(|t| t.same(p))).collect();
        assert_eq!(
            known,
            [true, true, true, false, false],
            "the header's numbers and other units do not count"
        );
    }

    #[test]
    fn a_section_is_replaced_between_its_markers_only() {
        let doc = "a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n";
        let new = replace_section(doc, "t", "new table\n").unwrap();
        assert_eq!(new, "a\n<!-- t:start -->\nnew table\n<!-- t:end -->\nb\n");
        assert_eq!(section(&new, "t"), Some("new table"));
        assert!(replace_section("no markers", "t", "x").is_err());
    }

    #[test]
    fn whole_numbers_get_thousands_separators() {
        assert_eq!(thousands(&serde_json::json!(1_234_567.0)), "1,234,567");
        assert_eq!(thousands(&serde_json::json!(0.92)), "0.92");
        assert_eq!(thousands(&serde_json::json!(2091.1)), "2,091.1");
        assert_eq!(thousands(&serde_json::json!(-1234)), "-1,234");
    }

    fn bench_doc() -> Value {
        serde_json::json!({
            "generated_by": "cargo xtask bench", "commit": "abc1234", "date": "2026-12-06", "cores": 2, "mode": "full",
            "scenarios": [{"scenario": "cold-start", "stat": "one run", "sends": 10000, "token_requests": 1,
                           "ms_to_last_delivery": 790}],
            "micro": [{"name": "parse", "median_ns": 412.5}],
        })
    }

    #[test]
    fn a_renamed_field_fails_the_render_naming_it() {
        let table = render_bench(&bench_doc()).unwrap();
        assert!(table.contains("| Cold start: 10,000 concurrent sends on a fresh client | 1 token request(s); last delivery after 790 ms | — | — | one run |"), "{table}");
        assert!(table.contains("| parse | 412.5 ns |"), "{table}");
        let mut renamed = bench_doc();
        let row = renamed["scenarios"][0].as_object_mut().unwrap();
        let v = row.remove("ms_to_last_delivery").unwrap();
        row.insert("ms_until_last".into(), v);
        assert_eq!(render_bench(&renamed).unwrap_err(), "cold-start lacks `ms_to_last_delivery`");
        let mut retyped = bench_doc();
        retyped["scenarios"][0]["ms_to_last_delivery"] = "790".into();
        assert!(render_bench(&retyped).unwrap_err().contains("`ms_to_last_delivery` is not a number"));
    }

    #[test]
    fn the_check_fails_a_hand_edited_table_and_a_prose_figure_not_in_it() {
        let dir = std::env::temp_dir().join(format!("xtask-figures-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("docs/figures")).unwrap();
        let json = serde_json::to_string(&bench_doc()).unwrap();
        std::fs::write(dir.join("docs/figures/bench.json"), &json).unwrap();
        let faults = serde_json::json!({"generated_by": "cargo xtask faults", "commit": "abc1234", "date": "2026-12-06",
            "cores": 2, "mode": "full", "sends": 2000, "concurrency": 32, "rows": [{"name": "no fault",
            "delivered": 2000, "failed_by_kind": {}, "unknown": 0, "probably_delivered": 0, "token_requests": 1,
            "send_requests": 2000, "extra_requests": 0, "sandbox_deliveries": 2000, "most_in_one_inbox": 1,
            "last_outcome_s": 0.1}], "store_grants": 2000, "store_concurrency": 64, "store_rows": [{
            "name": "Redis: paused 3 s", "fault_s": 3.0, "delivered": 2000, "in_review": 0,
            "sandbox_deliveries": 2000, "send_requests": 2000, "unrecorded": 0, "forgotten_by_the_store": 0,
            "dispatch_runs": 6, "dispatch_back_s": null, "elapsed_s": 6.6, "token_rejections": 0,
            "token_requests": 1}], "gateway_keys": 400, "gateway_concurrency": 16, "gateway_rows": [{
            "name": "gateway on Redis", "fault_s": 6.0, "delivered": 400, "unknown": 0, "answers_changed": 0,
            "sandbox_deliveries": 400, "send_requests": 400, "readyz_down_after_s": 2.2,
            "readyz_up_after_s": 0.4, "elapsed_s": 6.2}]});
        std::fs::write(dir.join("docs/figures/faults.json"), faults.to_string()).unwrap();
        let table = render_bench(&bench_doc()).unwrap();
        let faults_table = render_faults(&faults).unwrap();
        let write = |prose: &str, table: &str| {
            std::fs::write(
                dir.join("docs/performance.md"),
                format!("# P\n{prose}\n<!-- bench:start -->\n{table}<!-- bench:end -->\n"),
            )
            .unwrap();
            std::fs::write(
                dir.join("docs/reliability.md"),
                format!("# R\n<!-- faults:start -->\n{faults_table}<!-- faults:end -->\n"),
            )
            .unwrap();
            check(&dir)
        };
        assert_eq!(write("The last delivery came after 790 ms.", &table), Vec::<String>::new());
        let problems = write("The last delivery came after 780 ms.", &table);
        assert!(problems.len() == 1 && problems[0].contains("`780 ms`"), "{problems:?}");
        let problems = write("", &table.replace("790 ms", "700 ms"));
        assert!(problems.len() == 1 && problems[0].contains("differs"), "{problems:?}");
        // A figure quoted in another document must be in the bench table too.
        std::fs::write(dir.join("README.md"), "Dispatch runs at 0.61 × in memory; the cold start 790 ms.\n")
            .unwrap();
        let problems = write("", &table);
        assert!(
            problems.len() == 1 && problems[0].contains("README.md: the figure `0.61 ×`"),
            "{problems:?}"
        );
        std::fs::remove_file(dir.join("README.md")).unwrap();
        // Figures of a quick run, or of uncommitted code, are not published.
        for (key, value) in [("mode", "quick"), ("commit", "abc1234+dirty")] {
            let mut doc = bench_doc();
            doc[key] = value.into();
            std::fs::write(dir.join("docs/figures/bench.json"), doc.to_string()).unwrap();
            let problems = write("", &render_bench(&doc).unwrap());
            assert!(problems.len() == 1 && problems[0].contains("bench.json"), "{key}: {problems:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
