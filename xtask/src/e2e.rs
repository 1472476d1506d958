//! `cargo xtask e2e`: the browser test.

use std::path::{Path, PathBuf};

use crate::run::{Result, Status, cargo_capture, target_dir};

/// The first of `candidates` that is an existing file, or found on `PATH`.
pub(crate) fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|c| {
        let c = Path::new(c);
        if c.is_absolute() {
            return c.is_file().then(|| c.to_path_buf());
        }
        std::env::split_paths(&path).map(|d| d.join(c)).find(|p| p.is_file())
    })
}

/// The browser tests, headless Chromium through chromedriver, screenshots under `target/e2e/`:
/// the web app's (the sandbox and the example in-process), then the gateway's (the web flow
/// through the gateway, a dispatch job and the status page; its screenshots `gateway-*.png`).
pub(crate) fn e2e() -> Result<Status> {
    let chrome = find_program("CHROME_BIN", &["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chrome), Some(driver)) = (chrome, driver) else {
        return Ok(Status::NotRun(
            "Chromium or chromedriver not found; install them with `sudo apt-get install chromium chromium-driver` \
             (or set CHROME_BIN and CHROMEDRIVER)"
                .into(),
        ));
    };
    let (chrome, driver) = (chrome.to_string_lossy().into_owned(), driver.to_string_lossy().into_owned());
    // Screenshots of an earlier run must not pass for this one's.
    let dir = target_dir().join("e2e");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // The web app's first: it empties `target/e2e/` and counts its own screenshots there.
    for package in ["web-app", "subscribe-gateway"] {
        let out = cargo_capture(
            &["test", "-p", package, "--test", "browser", "--", "--nocapture"],
            &[("CHROME_BIN", &chrome), ("CHROMEDRIVER", &driver)],
        )?;
        // A test binary that filtered or skipped its test still exits 0: require it ran.
        let ran = out.lines().find_map(|l| {
            let rest = l.strip_prefix("test result: ok. ")?;
            rest.split(' ').next()?.parse::<u32>().ok()
        });
        if ran.unwrap_or(0) == 0 {
            return Err(format!(
                "{package}'s browser test did not run (no `test result: ok. N passed` with N > 0)"
            ));
        }
    }
    let shots: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("no screenshots in {}: {e}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let gateway = shots.iter().filter(|name| name.starts_with("gateway-")).count();
    if gateway == 0 || gateway == shots.len() {
        return Err(format!("a browser test saved no screenshot in {}", dir.display()));
    }
    let shots = shots.len();
    eprintln!("xtask e2e: {shots} screenshots in {}", dir.display());
    Ok(Status::Passed)
}
