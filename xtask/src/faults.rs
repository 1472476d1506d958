//! `cargo xtask faults`: the reliability table, and the check that a broken client fails it.

use crate::run::{Result, cargo_output, root};

/// The reliability table: 2,000 messages per fault scenario at concurrency 32 against the
/// sandbox, written to `docs/reliability.md` (`--quick`: 400 messages, printed only).
pub(crate) fn faults(quick: bool) -> Result {
    let (sends, conc) = if quick { ("400", "16") } else { ("2000", "32") };
    eprintln!("xtask faults: {sends} sends per scenario at concurrency {conc} (takes a minute or two)");
    let out = cargo_output(&[
        "bench",
        "-q",
        "-p",
        "subscribe-cli",
        "--bench",
        "macro",
        "--",
        "faults",
        sends,
        conc,
        "markdown",
    ])?;
    let table: String = out.lines().filter(|l| l.starts_with('|')).flat_map(|l| [l, "\n"]).collect();
    if table.lines().count() < 3 {
        return Err(format!("the fault benchmark printed no table:\n{out}"));
    }
    println!("{table}");
    broken_clients_fail()?;
    if quick {
        return Ok(());
    }
    let doc = root().join("docs/reliability.md");
    let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let (start, end) = ("<!-- faults:start -->", "<!-- faults:end -->");
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        return Err(format!("{} lacks the {start} … {end} markers", doc.display()));
    };
    let updated = format!("{}{start}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(&doc, updated).map_err(|e| e.to_string())?;
    eprintln!("xtask faults: table written to {}", doc.display());
    Ok(())
}

/// The table's expectations must be able to fail: a client that reports every send failed, one
/// that re-sends a message whose outcome is unknown, and one that re-sends it but reports the
/// first attempt's outcome must each break them, and with the failure named here. The silent
/// re-send of the 2017 message meets 43101 and delivers nothing: only the sandbox's count of
/// send requests sees it; of a long-term template it is a second message in the inbox.
pub(crate) fn broken_clients_fail() -> Result {
    let cases: [(&[&str], &str); 4] = [
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
    ];
    for (args, must_say) in cases {
        let mut full = vec!["bench", "-q", "-p", "subscribe-cli", "--bench", "macro", "--"];
        full.extend_from_slice(args);
        let which = format!("{}, {}", args[4], args[3]);
        match cargo_output(&full) {
            Ok(_) => return Err(format!("a broken client passed the fault table: {}", args.join(" "))),
            Err(e) if e.contains(must_say) => {
                eprintln!("xtask faults: the broken client ({which}) was caught: {must_say}");
            }
            Err(e) => return Err(format!("a broken client ({which}) failed, but not as expected: {e}")),
        }
    }
    Ok(())
}
