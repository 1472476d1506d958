//! `cargo xtask package`: every crate under `crates/` packaged as crates.io would take it, and
//! each package built on its own from what it contains (cargo's verification), so a missing
//! file, a path-only dependency or a workspace-only setting fails here rather than at publish.

use std::path::Path;

use crate::run::{Result, cargo, root};

/// `cargo package` for every crate under `crates/` in one run (the workspace's crates depend on
/// each other; cargo verifies each against the others' packages).
///
/// Verification builds each package with its default features only, and that is enough: each
/// crate's include list takes every source file by glob (`src/**/*.rs`), so a feature can only
/// choose among files the package has; every dependency, optional ones included, must name a
/// registry version to be packaged at all; and the files outside a crate that its code reads
/// (`include_str!` of the workspace's docs) are read under `cfg(doctest)` only, never in a
/// package's build. Every feature of the same sources is compiled by the test and doc steps.
/// Checked by `include_lists_take_every_source_file` and `outside_files_are_read_only_by_doctests`.
pub(crate) fn package() -> Result {
    let names = crate_names(&root())?;
    forget_unpacked(&names)?;
    let mut args = vec!["package", "--allow-dirty"];
    for name in &names {
        args.extend(["-p", name.as_str()]);
    }
    // The workspace's build directory, so the verification reuses the dependencies the tests
    // built (each member alone, with its default features: the feature sets a package's own
    // build asks for), with the workspace's dev profile (a package carries no profile of its
    // own). Cargo takes a registry package's version as its content, so every earlier build of
    // these crates is removed first: none can be reused for other code of the same version.
    forget_built(&crate::run::target_dir().join("debug"), &names)?;
    cargo(&args, &[("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")])
}

/// Removes every build of the crates `names` from the profile directory `dir` (fingerprints,
/// build scripts' outputs, libraries and test binaries); cargo rebuilds what it needs.
fn forget_built(dir: &Path, names: &[String]) -> Result {
    for (sub, prefixes) in [
        (".fingerprint", names.iter().map(|n| format!("{n}-")).collect::<Vec<_>>()),
        ("build", names.iter().map(|n| format!("{n}-")).collect()),
        (
            "deps",
            names
                .iter()
                .flat_map(|n| {
                    let n = n.replace('-', "_");
                    [format!("lib{n}-"), format!("{n}-")]
                })
                .collect(),
        ),
    ] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for entry in entries.flatten() {
            let file = entry.file_name();
            if !prefixes.iter().any(|p| file.to_string_lossy().starts_with(p.as_str())) {
                continue;
            }
            let path = entry.path();
            let removed =
                if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| format!("could not remove {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes the sources cargo unpacked from an earlier run's packages of these crates. Cargo
/// verifies each package against the others' through a registry in `target/package`, and
/// unpacks them under `$CARGO_HOME/registry/src/<that registry>/`, where an unpacked
/// `name-version` is never unpacked again: a later run from the same checkout path (the same
/// version, other code) would build against the earlier run's sources. Cargo unpacks again what
/// is missing.
fn forget_unpacked(names: &[String]) -> Result {
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")).unwrap_or_default(),
        std::path::PathBuf::from,
    );
    // What the earlier run built from them, too: cargo takes a registry crate's version as its
    // content, so `target/package`'s build of it would be reused as well.
    let built = crate::run::target_dir().join("package");
    if built.exists() {
        std::fs::remove_dir_all(&built).map_err(|e| format!("could not remove {}: {e}", built.display()))?;
    }
    let Ok(registries) = std::fs::read_dir(home.join("registry/src")) else { return Ok(()) };
    for registry in registries.flatten() {
        for entry in std::fs::read_dir(registry.path()).into_iter().flatten().flatten() {
            let file = entry.file_name();
            let unpacked = file.to_string_lossy();
            let ours = names.iter().any(|n| {
                unpacked.strip_prefix(n.as_str()).and_then(|v| v.strip_prefix('-')).is_some_and(|v| {
                    v.starts_with(|c: char| c.is_ascii_digit())
                        && !v.contains(|c: char| c.is_ascii_alphabetic())
                })
            });
            if ours {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| format!("could not remove {}: {e}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// The package names of the crates under `crates/`, from their manifests.
fn crate_names(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates"))
        .map_err(|e| format!("crates/: {e}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).map_err(|e| e.to_string())?;
        let name = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = ").map(|v| v.trim_matches('"').to_owned()))
            .ok_or_else(|| format!("{}: no package name", dir.display()))?;
        names.push(name);
    }
    if names.is_empty() {
        return Err("no crates under crates/".into());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_lists_take_every_source_file() {
        for dir in std::fs::read_dir(root().join("crates")).unwrap().flatten() {
            let manifest = std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
            let include = manifest.lines().find(|l| l.starts_with("include = ")).unwrap_or_default();
            assert!(include.contains("\"src/**/*.rs\""), "{}: include = {include}", dir.path().display());
        }
    }

    #[test]
    fn outside_files_are_read_only_by_doctests() {
        fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&root().join("crates"), &mut files);
        for file in files.iter().filter(|f| f.components().any(|c| c.as_os_str() == "src")) {
            let text = std::fs::read_to_string(file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.contains("include_str!(\"../../../") || line.contains("include_bytes!(\"../../../") {
                    let attrs =
                        lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("#[")).count();
                    let doctest_only =
                        lines[i - attrs..i].iter().any(|l| l.contains("cfg(") && l.contains("doctest"));
                    assert!(
                        doctest_only,
                        "{}:{}: a file outside the crate read outside cfg(doctest)",
                        file.display(),
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn every_crate_under_crates_is_packaged() {
        let names = crate_names(&root()).unwrap();
        assert!(
            names.contains(&"subscribe-client".to_owned()) && names.contains(&"subscribe-cli".to_owned())
        );
        assert_eq!(names.len(), std::fs::read_dir(root().join("crates")).unwrap().count(), "{names:?}");
    }
}
