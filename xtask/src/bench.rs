//! `cargo xtask bench`: the whole-system benchmarks and the criterion micro benchmarks.

use crate::run::{Result, cargo_output, target_dir};

/// The whole-system benchmarks, each scenario in its own process (so peak memory is its own).
/// `quick` runs small sizes: it checks the benchmarks work, its figures mean little.
pub(crate) fn bench(quick: bool) -> Result {
    let scenarios: &[&[&str]] = if quick {
        &[
            &["throughput", "2000", "16"],
            &["sandbox", "1000", "16"],
            &["send-batch", "2000", "16"],
            &["cold-start", "1000"],
            &["dispatch", "5000"],
            &["dispatch", "50000"],
            &["dispatch-sql", "5000"],
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
        ]
    };
    let mut results = Vec::new();
    for args in scenarios {
        eprintln!("xtask bench: {}", args.join(" "));
        let mut full = vec!["bench", "-q", "-p", "subscribe-cli", "--bench", "macro", "--"];
        full.extend_from_slice(args);
        let out = cargo_output(&full)?;
        let line = out.lines().rev().find(|l| l.starts_with('{')).ok_or("a scenario printed no result")?;
        results.push(line.to_owned());
    }
    // Micro-benchmarks (criterion keeps the previous run in target/criterion and calls out a
    // change beyond its noise threshold as "Performance has regressed").
    let mut micro = vec!["bench", "-q", "-p", "subscribe-client", "--all-features", "--bench", "micro", "--"];
    if quick {
        micro.push("--quick");
    }
    let micro_out = cargo_output(&micro)?;
    let lines: Vec<&str> = micro_out.lines().collect();
    let mut micro_lines = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("time:") && l.starts_with(' ') && i > 0 {
            micro_lines.push(format!("{:<40} {}", lines[i - 1].trim(), l.trim()));
        } else if l.contains("time:") || l.contains("regressed") || l.contains("improved") {
            micro_lines.push(l.trim().to_owned());
        }
    }
    println!("\nmicro (criterion, per operation)\n{}", micro_lines.join("\n"));
    // Criterion runs with a 20% noise threshold: "regressed" means slower by more than that
    // against the previous run on this machine.
    let mut current = "";
    let mut regressed = Vec::new();
    for l in &lines {
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
    println!("\n{:<12} result", "scenario");
    for r in &results {
        let name = json_field(r, "scenario").unwrap_or_default();
        println!("{name:<12} {}", r.trim_matches(|c| c == '{' || c == '}').replace(",\"", "  \""));
    }
    check_flat_dispatch(&results)?;
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(if quick { "macro-quick.json" } else { "macro.json" });
    std::fs::write(&file, format!("[\n{}\n]\n", results.join(",\n"))).map_err(|e| e.to_string())?;
    eprintln!("xtask bench: results in {}", file.display());
    Ok(())
}

/// The text of a top-level string field of a one-line JSON object (enough for our own output).
pub(crate) fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    Some(json[start..].split('"').next()?.to_owned())
}

/// The dispatcher's own memory (its peak above the filled ledger) must not grow with the number
/// of grants: across the dispatch scenarios, at most 16 MiB more for the largest than the
/// smallest.
fn check_flat_dispatch(results: &[String]) -> Result {
    let own: Vec<(String, f64)> = results
        .iter()
        .filter(|r| json_field(r, "scenario").as_deref() == Some("dispatch"))
        .filter_map(|r| Some((json_number(r, "grants")?, json_number(r, "peak_above_filled_ledger_mib")?)))
        .map(|(grants, mib)| (format!("{grants:.0}"), mib))
        .collect();
    let (Some(low), Some(high)) =
        (own.iter().min_by(|a, b| a.1.total_cmp(&b.1)), own.iter().max_by(|a, b| a.1.total_cmp(&b.1)))
    else {
        return Ok(());
    };
    if high.1 - low.1 > 16.0 {
        return Err(format!(
            "the dispatcher's memory grows with the grants: {} MiB above the ledger for {} grants, {} MiB for {}",
            low.1, low.0, high.1, high.0
        ));
    }
    Ok(())
}

/// A top-level number field of a one-line JSON object.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    json[start..].split([',', '}']).next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(grants: u64, own: f64) -> String {
        format!(
            r#"{{"delivered":{grants},"grants":{grants},"peak_above_filled_ledger_mib":{own},"scenario":"dispatch"}}"#
        )
    }

    #[test]
    fn flat_dispatch_memory_passes_and_growth_fails() {
        assert!(check_flat_dispatch(&[row(5_000, 1.3), row(50_000, 2.1)]).is_ok());
        let err = check_flat_dispatch(&[row(5_000, 1.3), row(50_000, 40.0)]).unwrap_err();
        assert!(err.contains("40 MiB for 50000"), "{err}");
        assert_eq!(json_number(&row(7, 2.5), "peak_above_filled_ledger_mib"), Some(2.5));
    }
}
