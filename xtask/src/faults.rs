//! `cargo xtask faults`: the reliability table, and the check that a broken client fails it.

use serde_json::Value;

use crate::figures::{GENERATED, publish, render_faults, run_meta};
use crate::run::{Result, build_bench, run_bench, target_dir};

/// The reliability table: 2,000 messages per fault scenario at concurrency 32 against the
/// sandbox (`--quick`: 400 messages at 16). Every run saves its rows, with the commit, the date
/// and the core count, in `target/faults/faults[-quick].json` and prints the table; a full run
/// also writes them to `docs/figures/faults.json` and renders `docs/reliability.md`'s table from
/// that file. Then it checks that broken clients fail the table.
pub(crate) fn faults(quick: bool) -> Result {
    let (sends, conc) = if quick { ("400", "16") } else { ("2000", "32") };
    eprintln!("xtask faults: {sends} sends per scenario at concurrency {conc} (takes a minute or two)");
    let bench = build_bench(quick)?;
    // The quick run's rows run at once: they mostly wait, and the published (full) figures
    // come from rows run one after another, each with the machine to itself.
    let mut args = vec!["faults", sends, conc];
    if quick {
        args.push("together");
    }
    let out = run_bench(&bench, &args)?;
    let result = last_json(&out, "fault")?;
    let mut doc = run_meta("cargo xtask faults", if quick { "quick" } else { "full" });
    doc["sends"] = sends.parse::<u64>().map_err(|e| e.to_string())?.into();
    doc["concurrency"] = conc.parse::<u64>().map_err(|e| e.to_string())?.into();
    doc["rows"] = result["rows"].clone();
    let (grants, in_flight) = if quick { ("2000", "64") } else { ("10000", "64") };
    eprintln!("xtask faults: the stores failing mid-dispatch, {grants} grants at {in_flight} in flight");
    let mut args = vec!["store-faults", grants, in_flight];
    if quick {
        // A few at a time in the quick run (the rows above run all at once), one by one for
        // the figures.
        args.push("together");
    }
    let stores = last_json(&run_bench(&bench, &args)?, "store-fault")?;
    doc["store_grants"] = grants.parse::<u64>().map_err(|e| e.to_string())?.into();
    doc["store_concurrency"] = in_flight.parse::<u64>().map_err(|e| e.to_string())?.into();
    doc["store_rows"] = stores["rows"].clone();
    doc["gateway_keys"] = stores["gateway_keys"].clone();
    doc["gateway_concurrency"] = stores["gateway_concurrency"].clone();
    doc["gateway_rows"] = stores["gateway_rows"].clone();
    let table = render_faults(&doc)?;
    if table.lines().filter(|l| l.starts_with('|')).count() < 3 {
        return Err(format!("the fault benchmark gave no rows:\n{out}"));
    }
    println!("{table}");
    let dir = target_dir().join("faults");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(if quick { "faults-quick.json" } else { "faults.json" });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&file, text + "\n").map_err(|e| e.to_string())?;
    broken_clients_fail(&bench)?;
    broken_store_fails(&bench)?;
    if !quick {
        let generated = GENERATED.iter().find(|g| g.name == "faults").ok_or("no generated faults section")?;
        publish(generated, &doc)?;
    }
    Ok(())
}

/// The last line of `out` that is a JSON object: the benchmark's result.
fn last_json(out: &str, what: &str) -> Result<Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("the {what} benchmark printed no result:\n{out}"))?;
    serde_json::from_str(line).map_err(|e| format!("the {what} benchmark's result: {e}"))
}

/// The store rows' expectations must be able to fail: a store that acknowledges a settlement
/// it did not write (one delivered settlement in 50) must break them, on a row whose fault
/// leaves nothing unrecorded by itself.
fn broken_store_fails(bench: &std::path::Path) -> Result {
    let args = ["store-faults", "2000", "64", "only=CLIENT_KILL", "broken=ack-unwritten"];
    let must_say = "a settlement acknowledged was not kept";
    match run_bench(bench, &args) {
        Ok(_) => Err(format!("a broken store passed the store-fault table: {}", args.join(" "))),
        Err(e) if e.contains(must_say) && e.contains("deliveries recorded; the ledger holds") => {
            eprintln!("xtask faults: the broken store (ack-unwritten) was caught: {must_say}");
            Ok(())
        }
        Err(e) => Err(format!("the broken store (ack-unwritten) failed, but not as expected: {e}")),
    }
}

/// The table's expectations must be able to fail: a client that reports every send failed, one
/// that re-sends a message whose outcome is unknown, and one that re-sends it but reports the
/// first attempt's outcome must each break them, and with the failure named here. The silent
/// re-send of the 2017 message meets 43101 and delivers nothing: only the sandbox's count of
/// send requests sees it; of a long-term template it is a second message in the inbox.
pub(crate) fn broken_clients_fail(bench: &std::path::Path) -> Result {
    let cases: [(&[&str], &str); 6] = [
        (&["faults", "100", "8", "only=no_fault", "broken=fail-all"], "0 of 100 delivered"),
        (
            &["faults", "400", "8", "only=delivered,_then_HTTP_502", "broken=resend-unknown"],
            "the sandbox delivered 400; the client reports 398 delivered and 0 unknown",
        ),
        (
            &["faults", "400", "8", "only=delivered,_then_HTTP_502", "broken=resend-silently"],
            "send requests, want exactly 400 (one per message, nothing replayed)",
        ),
        (
            &["faults", "400", "8", "only=long-term_template", "broken=resend-silently"],
            "a user received 2 messages; the client meant to send each user one",
        ),
        (
            &["faults", "400", "8", "only=accepted_twice", "broken=resend-silently"],
            "a user received 2 messages; the client meant to send each user one",
        ),
        (&["faults", "400", "8", "only=replayed_once", "broken=resend-silently"], "send requests, want"),
    ];
    for (args, must_say) in cases {
        let which = format!("{}, {}", args[4], args[3]);
        match run_bench(bench, args) {
            Ok(_) => return Err(format!("a broken client passed the fault table: {}", args.join(" "))),
            Err(e) if e.contains(must_say) => {
                eprintln!("xtask faults: the broken client ({which}) was caught: {must_say}");
            }
            Err(e) => return Err(format!("a broken client ({which}) failed, but not as expected: {e}")),
        }
    }
    Ok(())
}
