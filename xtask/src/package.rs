//! `cargo xtask package`: every crate under `crates/` packaged as crates.io would take it, and
//! each package built on its own from what it contains (cargo's verification), so a missing
//! file, a path-only dependency or a workspace-only setting fails here rather than at publish.

use std::path::Path;

use crate::run::{Result, cargo, root};

/// `cargo package` for every crate under `crates/` in one run (the workspace's crates depend on
/// each other; cargo verifies each against the others' packages).
pub(crate) fn package() -> Result {
    let names = crate_names(&root())?;
    let mut args = vec!["package", "--allow-dirty"];
    for name in &names {
        args.extend(["-p", name.as_str()]);
    }
    cargo(&args, &[])
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
