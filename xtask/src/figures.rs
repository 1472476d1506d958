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

/// The repository check: each generated section is what its committed JSON renders to, and
/// every figure of the document's prose is in that section.
pub(crate) fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for g in GENERATED {
        let (Ok(doc), Ok(json)) =
            (std::fs::read_to_string(root.join(g.doc)), std::fs::read_to_string(root.join(g.json)))
        else {
            problems.push(format!("{} or {} is missing (run `{}`)", g.doc, g.json, command(g)));
            continue;
        };
        let rendered = match serde_json::from_str::<Value>(&json)
            .map_err(|e| e.to_string())
            .and_then(|v| (g.render)(&v))
        {
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
        let known = numbers(&rendered);
        for figure in prose_figures(&doc, g.name) {
            if !known.contains(&normalize(&figure.number)) {
                problems.push(format!(
                    "{}: the figure `{}` in the prose is not in the generated table (state figures from the \
                     table, mark a target as one, or date it under a `History` heading)",
                    g.doc, figure.text
                ));
            }
        }
    }
    problems
}

fn command(g: &Generated) -> String {
    format!("cargo xtask {}", if g.name == "bench" { "bench" } else { "faults" })
}

/// A measured-looking figure in prose: a number followed by a unit of measure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Figure {
    pub(crate) number: String,
    pub(crate) text: String,
}

/// The units whose figures must come from a table: ratios, rates, memory and times.
const UNITS: &[&str] = &["×", "x", "msg/s", "lines/s", "req/s", "MiB", "µs", "ns", "ms"];

/// Words that make a nearby figure a target or a bound, not a measurement.
const NOT_MEASURED: &[&str] = &["target", "at least", "at most", "under ", "floor", "limit"];

/// The figures of `doc` outside its generated section, code blocks, inline code and any
/// section headed `History` (records of their day, dated, not regenerated).
pub(crate) fn prose_figures(doc: &str, name: &str) -> Vec<Figure> {
    let (start, end) = markers(name);
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
        if line.contains(&start) {
            in_generated = true;
        }
        if line.contains(&end) {
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
        figures.extend(line_figures(&strip_inline_code(line)));
    }
    figures
}

fn strip_inline_code(line: &str) -> String {
    line.split('`').enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, s)| s).collect::<Vec<_>>().join(" ")
}

fn line_figures(line: &str) -> Vec<Figure> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let starts_number = c.is_ascii_digit() && (i == 0 || !is_word(chars[i - 1].1));
        if !starts_number {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len()
            && (chars[j].1.is_ascii_digit()
                || (matches!(chars[j].1, ',' | '.')
                    && chars.get(j + 1).is_some_and(|c| c.1.is_ascii_digit())))
        {
            j += 1;
        }
        let end = chars.get(j).map_or(line.len(), |c| c.0);
        let number = &line[at..end];
        let rest = &line[end..];
        let after_space = rest.strip_prefix(' ').unwrap_or(rest);
        let unit = UNITS.iter().find(|u| {
            after_space
                .strip_prefix(**u)
                .is_some_and(|r| r.chars().next().is_none_or(|c| !c.is_alphanumeric()))
        });
        if let Some(unit) = unit {
            let before = line[..at].to_lowercase();
            let window = &before[before.len().saturating_sub(32)..].to_owned();
            let bound = NOT_MEASURED.iter().any(|w| window.contains(w));
            // "x" alone is a figure only when it follows a number directly or after one space
            // and is not the start of a word ("2 xs").
            if !bound {
                out.push(Figure { number: number.to_owned(), text: format!("{number} {unit}") });
            }
        }
        i = j.max(i + 1);
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// A number without its thousands separators (`64,071` and `64071` are one figure).
fn normalize(number: &str) -> String {
    number.replace(',', "")
}

/// Every number in `text`, normalized.
fn numbers(text: &str) -> std::collections::HashSet<String> {
    let mut set = std::collections::HashSet::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || (!current.is_empty() && matches!(c, ',' | '.')) {
            current.push(c);
        } else if !current.is_empty() {
            set.insert(normalize(current.trim_end_matches([',', '.'])));
            current.clear();
        }
    }
    set
}

/// `1234567` as `1,234,567`; a number with a fraction keeps it as given.
pub(crate) fn thousands(v: &Value) -> String {
    let Some(f) = v.as_f64() else { return v.to_string() };
    if f.fract() != 0.0 {
        return v.to_string();
    }
    #[allow(clippy::cast_possible_truncation)] // whole numbers well within i64
    let n = f as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A field every renderer needs: missing or `null` is an error naming it, so a renamed field
/// fails the render instead of printing a blank.
fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    match v.get(key) {
        Some(Value::Null) | None => {
            Err(format!("{} lacks `{key}`", v.get("scenario").and_then(Value::as_str).unwrap_or("a row")))
        }
        Some(x) => Ok(x),
    }
}

fn n(v: &Value, key: &str) -> Result<String> {
    field(v, key).map(thousands)
}

fn header(doc: &Value, source: &str) -> Result<String> {
    Ok(format!(
        "Generated by `{}` from [`{source}`]({source}) (do not edit by hand): commit {}, {}, {} cores, {} sizes.\n",
        field(doc, "generated_by")?.as_str().unwrap_or_default(),
        field(doc, "commit")?.as_str().unwrap_or_default(),
        field(doc, "date")?.as_str().unwrap_or_default(),
        field(doc, "cores")?,
        field(doc, "mode")?.as_str().unwrap_or_default(),
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
        let stat = field(s, "stat")?.as_str().ok_or("`stat` is not text")?;
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
            let _ = writeln!(
                out,
                "| {} | {} ns |",
                field(m, "name")?.as_str().unwrap_or_default(),
                n(m, "median_ns")?
            );
        }
    }
    Ok(out)
}

/// One scenario's rows: scenario, figure, baseline, ratio.
fn bench_rows(s: &Value) -> Result<Vec<[String; 4]>> {
    Ok(match field(s, "scenario")?.as_str().unwrap_or_default() {
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
                n(s, "ratio")?,
            ],
            [
                "The same through `HyperTransport`".to_owned(),
                format!("{} msg/s", n(s, "hyper_client_per_s")?),
                format!("plain hyper-util: {} msg/s", n(s, "plain_hyper_per_s")?),
                n(s, "hyper_ratio")?,
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
            n(s, "ratio_to_fixed_server")?,
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
            format!("{} × the library, {} × plain reqwest", n(s, "ratio")?, n(s, "ratio_to_plain_reqwest")?),
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
            n(s, "ratio_to_client_send")?,
        ]],
        "dispatch-sql" => {
            let memory = format!("the in-memory ledger, same rounds: {} msg/s", n(s, "memory_per_s")?);
            vec![
                [
                    format!("Dispatch: {} grants on `SqlGrantLedger`, SQLite (a WAL file)", n(s, "grants")?),
                    format!("{} msg/s", n(s, "sqlite_per_s")?),
                    memory.clone(),
                    n(s, "sqlite_ratio")?,
                ],
                [
                    format!(
                        "Dispatch: {} grants on `SqlGrantLedger`, PostgreSQL on the same machine",
                        n(s, "grants")?
                    ),
                    format!("{} msg/s", n(s, "postgres_per_s")?),
                    memory,
                    format!("{} (floor {})", n(s, "postgres_ratio")?, n(s, "postgres_floor")?),
                ],
            ]
        }
        other => return Err(format!("no table row for the scenario `{other}`")),
    })
}

/// `docs/reliability.md`'s table from `docs/figures/faults.json`: one row per scenario.
pub(crate) fn render_faults(doc: &Value) -> Result<String> {
    let mut out = header(doc, "figures/faults.json")?;
    let _ = write!(
        out,
        "{} messages per scenario at concurrency {}; one run of each.\n\n",
        n(doc, "sends")?,
        n(doc, "concurrency")?
    );
    out.push_str(
        "| Scenario | Delivered | Failed (by kind) | Unknown | Token requests | Extra requests (replays) | Deliveries counted by the sandbox | Last outcome after |\n\
         |---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for row in field(doc, "rows")?.as_array().ok_or("`rows` is not a list")? {
        let outcomes = field(row, "outcomes")?.as_object().ok_or("`outcomes` is not an object")?;
        let count = |prefix: &str| {
            outcomes
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter_map(|(_, v)| v.as_u64())
                .sum::<u64>()
        };
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|(k, _)| k.starts_with("failed"))
            .map(|(k, v)| format!("{v} × {}", k.trim_start_matches("failed: ")))
            .collect();
        let failed = if failed.is_empty() { "0".to_owned() } else { failed.join(", ") };
        let probably = count("unknown (probably delivered)");
        let unknown = if probably > 0 {
            format!("{} ({probably} probably delivered)", count("unknown"))
        } else {
            count("unknown").to_string()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            field(row, "name")?.as_str().unwrap_or_default(),
            count("delivered"),
            failed,
            unknown,
            field(row, "token_requests")?,
            field(row, "extra_requests")?,
            field(row, "sandbox_deliveries")?,
            field(row, "last_outcome_s")?.as_f64().unwrap_or_default(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_in_prose_are_found_with_their_units_and_bounds_are_not() {
        let doc = "The client runs at 0.92 × plain reqwest (64,071 msg/s) and 2.1 MiB.\n\
                   Target: under 64 MiB. At least 0.5 x.\n\
                   ```\ncargo bench 100 ms\n```\n\
                   `code 3 ms` and 12 µs.\n\
                   ## History\nonce 0.43 ×\n### Then\n0.5 ×\n## Next\n9.5 ×\n\
                   <!-- bench:start -->\n| 9 ms |\n<!-- bench:end -->\n";
        let found: Vec<String> = prose_figures(doc, "bench").into_iter().map(|f| f.text).collect();
        assert_eq!(found, ["0.92 ×", "64,071 msg/s", "2.1 MiB", "12 µs", "9.5 ×"]);
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
    fn numbers_match_with_or_without_thousands_separators() {
        let set = numbers("| 64071 msg/s | 0.92 | 1,234 |");
        assert!(set.contains("64071") && set.contains("0.92") && set.contains("1234"));
        assert_eq!(thousands(&serde_json::json!(1_234_567.0)), "1,234,567");
        assert_eq!(thousands(&serde_json::json!(0.92)), "0.92");
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
    }

    #[test]
    fn the_check_fails_a_hand_edited_table_and_a_prose_figure_not_in_it() {
        let dir = std::env::temp_dir().join(format!("xtask-figures-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("docs/figures")).unwrap();
        let json = serde_json::to_string(&bench_doc()).unwrap();
        std::fs::write(dir.join("docs/figures/bench.json"), &json).unwrap();
        let faults = serde_json::json!({"generated_by": "cargo xtask faults", "commit": "abc1234", "date": "2026-12-06",
            "cores": 2, "mode": "full", "sends": 2000, "concurrency": 32, "rows": [{"name": "no fault",
            "outcomes": {"delivered": 2000}, "token_requests": 1, "extra_requests": 0, "sandbox_deliveries": 2000,
            "last_outcome_s": 0.1}]});
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
