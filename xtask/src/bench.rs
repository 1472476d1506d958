//! `cargo xtask bench`: the whole-system benchmarks and the criterion micro benchmarks.

use serde_json::Value;

use crate::figures::{GENERATED, publish, render_bench, run_meta};
use crate::run::{Result, Status, build_bench, cargo, cargo_output, run_bench, target_dir};

/// The whole-system benchmarks, each scenario in its own process (so peak memory is its own),
/// then the criterion micro benchmarks. Every run saves its figures, with the commit, the date
/// and the core count, in `target/bench/macro[-quick].json`; a full run also writes them to
/// `docs/figures/bench.json` and renders `docs/performance.md`'s table from that file.
/// `quick` runs small sizes: it checks the benchmarks work, its figures mean little.
pub(crate) fn bench(quick: bool) -> Result<Status> {
    let scenarios: &[&[&str]] = if quick {
        &[
            &["throughput", "2000", "16"],
            &["sandbox", "1000", "16"],
            &["send-batch", "2000", "16"],
            &["cold-start", "1000"],
            &["dispatch", "5000"],
            &["dispatch", "50000"],
            &["dispatch-sql", "5000"],
            &["gateway", "2000", "16"],
            &["latency", "20000", "256", "2048"],
        ]
    } else {
        &[
            &["throughput", "50000", "64"],
            &["sandbox", "20000", "64"],
            &["send-batch", "100000", "64"],
            &["cold-start", "10000"],
            &["dispatch", "10000"],
            &["dispatch", "100000"],
            &["dispatch", "1000000"],
            &["dispatch-sql", "100000"],
            &["gateway", "20000", "64"],
            &["latency", "100000", "256", "2048", "8192"],
        ]
    };
    let bench = build_bench(quick)?;
    let mut results = Vec::new();
    for args in scenarios {
        eprintln!("xtask bench: {}", args.join(" "));
        let out = run_bench(&bench, args)?;
        let line = out.lines().rev().find(|l| l.starts_with('{')).ok_or("a scenario printed no result")?;
        let result: Value = serde_json::from_str(line).map_err(|e| format!("a scenario's result: {e}"))?;
        results.push(result);
    }
    let micro = micro(quick)?;
    println!("\n{:<12} result", "scenario");
    for r in &results {
        println!("{:<12} {r}", r["scenario"].as_str().unwrap_or_default());
    }
    let dispatches = scenarios.iter().filter(|a| a[0] == "dispatch").count();
    check_flat_dispatch(&results, dispatches)?;
    let mut doc = run_meta("cargo xtask bench", if quick { "quick" } else { "full" });
    doc["scenarios"] = Value::Array(results);
    doc["micro"] = Value::Array(micro);
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(if quick { "macro-quick.json" } else { "macro.json" });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&file, text + "\n").map_err(|e| e.to_string())?;
    eprintln!("xtask bench: results in {}", file.display());
    let not_run = not_run(&doc["scenarios"]);
    if not_run.is_empty() {
        // Rendered in every mode, so a renamed or retyped field fails CI's quick run rather
        // than the next full one.
        println!("\n{}", render_bench(&doc)?);
    } else {
        // Figures with a scenario run only in part are not published.
        return Ok(Status::NotRun(not_run.join("; ")));
    }
    if !quick {
        let generated = GENERATED.iter().find(|g| g.name == "bench").ok_or("no generated bench section")?;
        publish(generated, &doc)?;
    }
    Ok(Status::Passed)
}

/// The scenarios that could not reach a service they measure (PostgreSQL for `dispatch-sql`):
/// they ran only in part, which is not a pass.
fn not_run(scenarios: &Value) -> Vec<String> {
    scenarios
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let scenario = r["scenario"].as_str().unwrap_or_default();
            let missing = match scenario {
                "dispatch-sql" => r["postgres_per_s"].is_null(),
                // Each row's dispatch on PostgreSQL.
                "latency" => r["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|row| row["dispatch_postgres_per_s"].is_null()),
                _ => return None,
            };
            (missing || !r["postgres_not_run"].is_null()).then(|| {
                format!("{scenario}: {}", r["postgres_not_run"].as_str().unwrap_or("no PostgreSQL figure"))
            })
        })
        .collect()
}

/// The criterion micro benchmarks: prints criterion's summary lines and returns each
/// benchmark's median (from `target/criterion/*/new/estimates.json`, written by this run).
/// Criterion keeps the previous run there and calls out a change beyond its 20% noise
/// threshold as "Performance has regressed", which is repeated at the end.
///
/// `quick` runs each benchmark once as a test (criterion's test mode, no figures), in the
/// workspace's every-feature build the test step made: an optimised build of the benchmark
/// (its dev-dependencies turn on other features of tokio, serde and six dozen more crates than
/// the release binaries' build) cost minutes of every CI run for figures nobody reads.
#[allow(clippy::disallowed_methods)] // file times are the machine's clock
fn micro(quick: bool) -> Result<Vec<Value>> {
    if quick {
        cargo(&["test", "-q", "--workspace", "--all-features", "--bench", "micro"], &[])?;
        return Ok(Vec::new());
    }
    let started = std::time::SystemTime::now();
    let args = ["bench", "-q", "-p", "subscribe-client", "--all-features", "--bench", "micro"];
    let out = cargo_output(&args)?;
    let lines: Vec<&str> = out.lines().collect();
    let mut current = "";
    let mut regressed = Vec::new();
    println!("\nmicro (criterion, per operation)");
    for (i, l) in lines.iter().enumerate() {
        if l.contains("time:") && l.starts_with(' ') && i > 0 {
            println!("{:<40} {}", lines[i - 1].trim(), l.trim());
        } else if l.contains("time:") || l.contains("regressed") || l.contains("improved") {
            println!("{}", l.trim());
        }
        if !l.starts_with(' ') && !l.trim().is_empty() && !l.contains(':') {
            current = l.trim();
        } else if l.contains("time:") && !l.starts_with(' ') {
            current = l.split("time:").next().unwrap_or("").trim();
        }
        if l.contains("Performance has regressed") {
            regressed.push(current.to_owned());
        }
    }
    if !regressed.is_empty() {
        println!("\nREGRESSED by more than 20% against the previous run: {}", regressed.join("; "));
    }
    let mut medians = Vec::new();
    let dir = target_dir().join("criterion");
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
        let new = entry.path().join("new");
        let (Ok(estimates), Ok(benchmark)) = (
            std::fs::read_to_string(new.join("estimates.json")),
            std::fs::read_to_string(new.join("benchmark.json")),
        ) else {
            continue;
        };
        let fresh = std::fs::metadata(new.join("estimates.json"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started);
        if !fresh {
            continue;
        }
        let (Ok(estimates), Ok(benchmark)) =
            (serde_json::from_str::<Value>(&estimates), serde_json::from_str::<Value>(&benchmark))
        else {
            return Err(format!("criterion's files under {} do not parse", new.display()));
        };
        let (Some(name), Some(median)) =
            (benchmark["full_id"].as_str(), estimates["median"]["point_estimate"].as_f64())
        else {
            return Err(format!("criterion's files under {} lack full_id or median", new.display()));
        };
        medians.push(serde_json::json!({ "name": name, "median_ns": (median * 10.0).round() / 10.0 }));
    }
    if medians.is_empty() {
        return Err("the micro benchmarks wrote no estimates under target/criterion".into());
    }
    medians.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(medians)
}

/// The dispatcher's own memory (its peak above the filled ledger) must not grow with the number
/// of grants: across the dispatch scenarios, at most 16 MiB more for the largest than the
/// smallest. Every one of the `expected` dispatch scenarios must report its figure: a renamed
/// field fails here rather than leaving nothing to compare.
fn check_flat_dispatch(results: &[Value], expected: usize) -> Result {
    let rows: Vec<&Value> = results.iter().filter(|r| r["scenario"] == "dispatch").collect();
    let own: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r["grants"].as_u64()?, r["peak_above_filled_ledger_mib"].as_f64()?)))
        .collect();
    if rows.len() != expected || own.len() != expected || expected < 2 {
        return Err(format!(
            "the flat-memory check needs {expected} (at least two) dispatch results with `grants` and \
             `peak_above_filled_ledger_mib`; it read {} of {} rows",
            own.len(),
            rows.len()
        ));
    }
    let low = own.iter().min_by(|a, b| a.1.total_cmp(&b.1)).ok_or("no dispatch result")?;
    let high = own.iter().max_by(|a, b| a.1.total_cmp(&b.1)).ok_or("no dispatch result")?;
    if high.1 - low.1 > 16.0 {
        return Err(format!(
            "the dispatcher's memory grows with the grants: {} MiB above the ledger for {} grants, {} MiB for {}",
            low.1, low.0, high.1, high.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(grants: u64, own: f64) -> Value {
        serde_json::json!({"delivered": grants, "grants": grants, "peak_above_filled_ledger_mib": own, "scenario": "dispatch"})
    }

    #[test]
    fn flat_dispatch_memory_passes_and_growth_fails() {
        assert!(check_flat_dispatch(&[row(5_000, 1.3), row(50_000, 2.1)], 2).is_ok());
        let err = check_flat_dispatch(&[row(5_000, 1.3), row(50_000, 40.0)], 2).unwrap_err();
        assert!(err.contains("40 MiB for 50000"), "{err}");
    }

    #[test]
    fn a_scenario_without_its_postgres_is_not_run() {
        let ran = serde_json::json!([{"scenario": "dispatch-sql", "postgres_not_run": null, "postgres_per_s": 9.0}]);
        assert!(not_run(&ran).is_empty());
        let renamed = serde_json::json!([{"scenario": "dispatch-sql", "postgres_per_s": null}]);
        assert_eq!(not_run(&renamed), ["dispatch-sql: no PostgreSQL figure"]);
        let skipped = serde_json::json!([{"scenario": "dispatch-sql", "postgres_not_run": "no PostgreSQL"}]);
        assert_eq!(not_run(&skipped), ["dispatch-sql: no PostgreSQL"]);
        let latency = serde_json::json!([{"scenario": "latency", "postgres_not_run": null, "rows": [{"dispatch_postgres_per_s": 9.0}]}]);
        assert!(not_run(&latency).is_empty());
        let without =
            serde_json::json!([{"scenario": "latency", "postgres_not_run": "no PostgreSQL", "rows": [{}]}]);
        assert_eq!(not_run(&without), ["latency: no PostgreSQL"]);
        let dropped =
            serde_json::json!([{"scenario": "latency", "rows": [{"dispatch_postgres_per_s": 9.0}, {}]}]);
        assert_eq!(not_run(&dropped), ["latency: no PostgreSQL figure"]);
    }

    #[test]
    fn flat_dispatch_fails_when_the_rows_it_expects_do_not_parse() {
        let mut renamed = row(50_000, 2.1);
        let v = renamed.as_object_mut().unwrap().remove("peak_above_filled_ledger_mib").unwrap();
        renamed["own_peak_mib"] = v;
        let err = check_flat_dispatch(&[row(5_000, 1.3), renamed], 2).unwrap_err();
        assert!(err.contains("it read 1 of 2 rows"), "{err}");
        assert!(check_flat_dispatch(&[row(5_000, 1.3)], 2).is_err(), "a missing scenario fails");
        assert!(check_flat_dispatch(&[], 0).is_err(), "nothing to compare fails");
    }
}
