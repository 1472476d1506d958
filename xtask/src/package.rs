//! `cargo xtask package`: every crate under `crates/` packaged as crates.io would take it, and
//! each package built on its own from what it contains (cargo's verification), so a missing
//! file, a path-only dependency or a workspace-only setting fails here rather than at publish.

use std::path::Path;

use crate::run::{Result, cargo, root};

/// `cargo package` for every crate under `crates/` in one run (the workspace's crates depend on
/// each other; cargo verifies each against the others' packages).
pub(crate) fn package() -> Result {
    let names = crate_names(&root())?;
    forget_unpacked(&names)?;
    let mut args = vec!["package", "--allow-dirty"];
    for name in &names {
        args.extend(["-p", name.as_str()]);
    }
    // A build directory of its own, made afresh: in the workspace's, cargo would reuse an
    // earlier run's build of these registry packages (their version is taken as their content).
    let fresh = crate::run::target_dir().join("package-verify");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(|e| format!("could not remove {}: {e}", fresh.display()))?;
    }
    let fresh = fresh.to_string_lossy().into_owned();
    cargo(&args, &[("CARGO_TARGET_DIR", fresh.as_str())])
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
    fn every_crate_under_crates_is_packaged() {
        let names = crate_names(&root()).unwrap();
        assert!(
            names.contains(&"subscribe-client".to_owned()) && names.contains(&"subscribe-cli".to_owned())
        );
        assert_eq!(names.len(), std::fs::read_dir(root().join("crates")).unwrap().count(), "{names:?}");
    }
}
