//! Repository checks that no compiler lint covers.

use std::fs;
use std::path::{Path, PathBuf};

/// Every problem found, one line each; empty when the repository is tidy.
pub(crate) fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let crates = dirs(&root.join("crates"));
    if crates.is_empty() {
        problems.push("no crates found under crates/".to_owned());
    }
    let mut packages = crates.clone();
    packages.extend(dirs(&root.join("examples")));
    packages.push(root.join("bench"));
    packages.push(root.join("xtask"));
    packages.push(root.join("fuzz"));
    for dir in &packages {
        let name = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        if !has_workspace_key(&manifest, "[lints]", "workspace") {
            problems.push(format!("{name}/Cargo.toml: missing `[lints] workspace = true`"));
        }
        if !manifest.contains("rust-version.workspace = true") {
            problems.push(format!("{name}/Cargo.toml: missing `rust-version.workspace = true`"));
        }
    }
    for dir in &crates {
        let name = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        if !dir.join("README.md").is_file() {
            problems.push(format!("{name}: missing README.md"));
        }
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        let front = fs::read_to_string(dir.join("src/lib.rs")).ok();
        check_publishable(&name, &manifest, front.as_deref(), &mut problems);
        for file in rust_files(&dir.join("src")) {
            let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
            let text = fs::read_to_string(&file).unwrap_or_default();
            let is_binary = is_binary_source(dir, &file);
            check_source(&rel, &text, is_binary, &mut problems);
            if name.ends_with("subscribe-client") {
                for (i, line) in text.lines().enumerate() {
                    if line.trim_start().starts_with("pub ") && line.contains("reqwest::") {
                        problems.push(format!("{rel}:{}: `reqwest::` in a public item", i + 1));
                    }
                }
            }
        }
    }
    for file in markdown_files(root) {
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = fs::read_to_string(&file).unwrap_or_default();
        check_links(root, &file, &rel, &text, &mut problems);
    }
    check_threat_model(root, &mut problems);
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap_or_default();
    check_architecture(&crates, &doc, &mut problems);
    problems.extend(crate::figures::check(root));
    problems
}

/// Every test the threat model in `docs/security.md` names (a backticked `snake_case` name in the
/// table's last column) is a function somewhere in the workspace, so a renamed test cannot
/// leave the table pointing at nothing.
fn check_threat_model(root: &Path, problems: &mut Vec<String>) {
    let doc = fs::read_to_string(root.join("docs/security.md")).unwrap_or_default();
    let Some(table) = doc.split("## Threat model").nth(1).and_then(|t| t.split("\n## ").next()) else {
        problems.push("docs/security.md: no `## Threat model` section".to_owned());
        return;
    };
    let mut sources = String::new();
    for dir in ["crates", "examples"] {
        for file in rust_files(&root.join(dir)) {
            sources.push_str(&fs::read_to_string(&file).unwrap_or_default());
        }
    }
    let tests = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.trim_end_matches('|').rsplit('|').next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|name| name.contains('_') && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    for name in tests {
        if !sources.contains(&format!("fn {name}(")) {
            problems.push(format!("docs/security.md: the threat model names `{name}`, which is no test"));
        }
    }
}

/// Every Markdown file of the repository (not under `target/` or hidden directories).
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    files_with_extension(root, "md")
}

/// Relative links of a Markdown file must name a file or directory inside the repository; text
/// must not send readers outside it (`../shared/…`, which only the developers have).
fn check_links(root: &Path, file: &Path, rel: &str, text: &str, problems: &mut Vec<String>) {
    let dir = file.parent().unwrap_or(root);
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    for (i, line) in text.lines().enumerate() {
        if line.contains("../shared/") {
            problems
                .push(format!("{rel}:{}: refers to `../shared/`, which is outside the repository", i + 1));
        }
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let resolved = dir.join(path);
            match resolved.canonicalize() {
                Ok(p) if p.starts_with(&root) => {}
                Ok(_) => problems.push(format!("{rel}:{}: link `{target}` leaves the repository", i + 1)),
                Err(_) => problems.push(format!("{rel}:{}: link `{target}` names nothing", i + 1)),
            }
        }
    }
}

/// The targets of the inline links `[text](target)` on one line.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        if !target.is_empty() {
            out.push(target);
        }
        rest = &after[end..];
    }
    out
}

/// Whether `file` belongs to a binary: `main.rs`, `src/bin/`, or any file of a crate without a
/// library target (its modules are the binary's).
fn is_binary_source(crate_dir: &Path, file: &Path) -> bool {
    file.ends_with("main.rs")
        || file.starts_with(crate_dir.join("src/bin"))
        || !crate_dir.join("src/lib.rs").is_file()
}

/// Checks one source file: no `println!`/`dbg!` in library code, public error enums are
/// `#[non_exhaustive]`.
fn check_source(rel: &str, text: &str, is_binary: bool, problems: &mut Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut in_tests = false;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Unit tests sit at the end of a file by convention; printing there is fine.
            in_tests = true;
        }
        if t.starts_with("//") {
            continue;
        }
        if !is_binary && !in_tests && (t.contains("println!(") || t.contains("dbg!(")) {
            problems.push(format!("{rel}:{}: `println!`/`dbg!` in library code", i + 1));
        }
        if let Some(rest) = t.strip_prefix("pub enum ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.ends_with("Error")
                && !attributes_above(&lines, i).iter().any(|a| a.contains("non_exhaustive"))
            {
                problems.push(format!("{rel}:{}: `pub enum {name}` is not #[non_exhaustive]", i + 1));
            }
        }
    }
}

/// The attribute and doc lines directly above line `i`.
fn attributes_above<'a>(lines: &[&'a str], i: usize) -> Vec<&'a str> {
    lines[..i]
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
        .collect()
}

/// `docs/architecture.md` stays true: each crate under `crates/` has a row in the dependency
/// table naming (in backticks) exactly the dependencies of its `Cargo.toml` (normal ones, of
/// every target, optional ones included), and every source file under its `src/` is named in a
/// row of the file table (whose first cell is the crate's name without `subscribe-`), which
/// names no file that does not exist.
fn check_architecture(crates: &[PathBuf], doc: &str, problems: &mut Vec<String>) {
    let rows: Vec<Vec<&str>> = doc
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let ticked =
        |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    for dir in crates {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        let actual = manifest_dependencies(&manifest);
        let label = format!("`{name}`");
        match rows.iter().find(|r| r.first() == Some(&label.as_str())) {
            None => {
                problems.push(format!("docs/architecture.md: {label} has no row in the dependency table"));
            }
            Some(row) => {
                let listed = row.get(1).map(|c| ticked(c)).unwrap_or_default();
                for dep in actual.iter().filter(|d| !listed.contains(d)) {
                    problems.push(format!(
                        "docs/architecture.md: {label} depends on `{dep}` (its Cargo.toml), which its row does not name"
                    ));
                }
                for dep in listed.iter().filter(|d| !actual.contains(d)) {
                    problems.push(format!(
                        "docs/architecture.md: {label}'s row names `{dep}`, which its Cargo.toml does not depend on"
                    ));
                }
            }
        }
        let short = name.strip_prefix("subscribe-").unwrap_or(&name);
        let named: Vec<String> = rows
            .iter()
            .filter(|r| r.first() == Some(&short))
            .filter_map(|r| r.get(1))
            .flat_map(|c| ticked(c))
            .filter(|f| Path::new(f).extension().is_some_and(|e| e == "rs"))
            .collect();
        let src = dir.join("src");
        let files: Vec<String> = rust_files(&src)
            .iter()
            .filter_map(|f| f.strip_prefix(&src).ok())
            .map(|f| f.display().to_string().replace('\\', "/"))
            .collect();
        for file in files.iter().filter(|f| !named.contains(f)) {
            problems.push(format!(
                "docs/architecture.md: crates/{name}/src/{file} has no row in the file table (crate `{short}`)"
            ));
        }
        for file in named.iter().filter(|f| !files.contains(f)) {
            problems.push(format!(
                "docs/architecture.md: the file table names `{file}` of `{short}`, which is no file of crates/{name}/src"
            ));
        }
    }
}

/// A crate under `crates/` can be published: crates.io's metadata, an include list, docs.rs
/// settings for a library, not `publish = false`; and a library's front page (`lib.rs`'s `//!`
/// docs) names every feature of its manifest in backticks (its feature table).
fn check_publishable(name: &str, manifest: &str, front: Option<&str>, problems: &mut Vec<String>) {
    // A key with a value that says something: not `[]`, not `""`.
    let has = |key: &str| {
        manifest.lines().any(|l| {
            l.trim_start().strip_prefix(key).and_then(|rest| rest.trim_start().strip_prefix('=')).is_some_and(
                |v| {
                    let v = v.split('#').next().unwrap_or_default().trim();
                    !v.is_empty() && v != "[]" && v != "\"\""
                },
            )
        })
    };
    for key in ["description", "readme", "keywords", "categories", "include"] {
        if !has(key) {
            problems.push(format!("{name}/Cargo.toml: no `{key}`, or an empty one (crates.io shows it)"));
        }
    }
    for key in ["license", "repository"] {
        if !has(key) && !manifest.contains(&format!("{key}.workspace = true")) {
            problems.push(format!("{name}/Cargo.toml: no `{key}`"));
        }
    }
    if manifest.lines().any(|l| {
        let l = l.split('#').next().unwrap_or_default().replace(' ', "");
        (l.starts_with("publish=") && l != "publish=true") || l == "publish.workspace=true"
    }) {
        problems
            .push(format!("{name}/Cargo.toml: not publishable (`publish`), yet integrators depend on it"));
    }
    let Some(front) = front else { return };
    if !manifest
        .contains("[package.metadata.docs.rs]\nall-features = true\nrustdoc-args = [\"--cfg\", \"docsrs\"]")
    {
        problems.push(format!(
            "{name}/Cargo.toml: no `[package.metadata.docs.rs]` (all features, `--cfg docsrs`)"
        ));
    }
    let docs: String =
        front.lines().filter_map(|l| l.trim_start().strip_prefix("//!")).collect::<Vec<_>>().join("\n");
    for feature in manifest_features(manifest) {
        if feature != "default" && !docs.contains(&format!("`{feature}`")) {
            problems.push(format!("{name}/src/lib.rs: the crate's docs do not name its feature `{feature}`"));
        }
    }
}

/// The names of a manifest's `[features]`.
fn manifest_features(manifest: &str) -> Vec<String> {
    let mut in_table = false;
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == "[features]";
        } else if in_table
            && !line.starts_with('#')
            && let Some((key, _)) = line.split_once('=')
        {
            out.push(key.trim().trim_matches('"').to_owned());
        }
    }
    out
}

/// The names of a manifest's normal dependencies: `[dependencies]` and every
/// `[target.….dependencies]` (not dev- or build-dependencies).
fn manifest_dependencies(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_table = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
        } else if in_table && !line.is_empty() && !line.starts_with('#') {
            let key = line.split('=').next().unwrap_or_default().trim();
            let key = key.strip_suffix(".workspace").unwrap_or(key).trim_matches('"');
            if !key.is_empty() && !deps.iter().any(|d| d == key) {
                deps.push(key.to_owned());
            }
        }
    }
    deps
}

fn has_workspace_key(manifest: &str, table: &str, key: &str) -> bool {
    let mut in_table = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == table;
        } else if in_table && line.replace(' ', "") == format!("{key}=true") {
            return true;
        }
    }
    false
}

fn dirs(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    out.sort();
    out
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    files_with_extension(path, "rs")
}

/// Files ending in `.ext` under `path`, sorted, skipping `target/`, `node_modules/` and hidden
/// directories.
fn files_with_extension(path: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let problems = check(root);
        assert!(problems.is_empty(), "repository checks failed:\n{}", problems.join("\n"));
    }

    #[test]
    fn flags_println_in_library_code_but_not_in_binaries_or_tests() {
        let mut p = Vec::new();
        check_source("lib.rs", "fn f() {\n    println!(\"x\");\n}\n", false, &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        p.clear();
        check_source("main.rs", "fn main() { println!(\"x\"); }", true, &mut p);
        check_source("lib.rs", "#[cfg(test)]\nmod tests { fn t() { dbg!(1); } }", false, &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn flags_exhaustive_public_error_enums() {
        let mut p = Vec::new();
        check_source("e.rs", "/// doc\n#[derive(Debug)]\npub enum FooError { A }\n", false, &mut p);
        assert_eq!(p.len(), 1);
        p.clear();
        check_source(
            "e.rs",
            "#[derive(Debug)]\n#[non_exhaustive]\npub enum FooError { A }\npub enum Kind { A }\n",
            false,
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn modules_of_a_binary_only_crate_are_binary_code() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cli = root.join("crates/subscribe-cli");
        assert!(is_binary_source(&cli, &cli.join("src/batch.rs")));
        let types = root.join("crates/subscribe-types");
        assert!(!is_binary_source(&types, &types.join("src/message.rs")));
    }

    #[test]
    fn links_must_resolve_inside_the_repository() {
        let root = std::env::temp_dir().join(format!("tidy-links-{}", std::process::id()));
        fs::create_dir_all(root.join("docs")).unwrap();
        fs::write(root.join("docs/a.md"), "").unwrap();
        let text = "[ok](a.md) [anchor](a.md#x) [web](https://example.com) [self](#top)\n\
                    [gone](missing.md)\n[out](../../etc/hostname)\nsee `../shared/design.md`\n";
        let mut p = Vec::new();
        check_links(&root, &root.join("docs/b.md"), "docs/b.md", text, &mut p);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("docs/b.md:2: link `missing.md` names nothing"), "{p:?}");
        assert!(p[1].contains("docs/b.md:3:") && p[1].contains("`../../etc/hostname`"), "{p:?}");
        assert!(p[2].contains("docs/b.md:4: refers to `../shared/`"), "{p:?}");
        assert_eq!(link_targets("[a](x.md \"title\") and [b](y/)"), vec!["x.md", "y/"]);
    }

    #[test]
    fn the_architecture_document_must_match_the_manifests_and_the_files() {
        let root = std::env::temp_dir().join(format!("tidy-arch-{}", std::process::id()));
        let krate = root.join("crates/subscribe-demo");
        fs::create_dir_all(krate.join("src/inner")).unwrap();
        fs::write(
            krate.join("Cargo.toml"),
            "[package]\nname = \"subscribe-demo\"\n[dependencies]\nserde.workspace = true\n\
             tokio = { version = \"1\" }\n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n\
             [dev-dependencies]\nproptest = \"1\"\n",
        )
        .unwrap();
        fs::write(krate.join("src/lib.rs"), "").unwrap();
        fs::write(krate.join("src/inner/mod.rs"), "").unwrap();
        let crates = vec![krate];
        let true_doc = "| crate | deps | x |\n|---|---|---|\n| `subscribe-demo` | `serde`, `tokio` (rt), `libc` | — |\n\
                        | demo | `lib.rs`, `inner/mod.rs` | the job |\n";
        let mut p = Vec::new();
        check_architecture(&crates, true_doc, &mut p);
        assert!(p.is_empty(), "{p:?}");
        // A dependency missing from the row, one named that is not there, a file without a
        // row and a row naming a file that is gone.
        let stale = "| `subscribe-demo` | `serde`, `rand` | — |\n| demo | `lib.rs`, `old.rs` | the job |\n";
        check_architecture(&crates, stale, &mut p);
        let all = p.join("\n");
        assert_eq!(p.len(), 5, "{all}");
        for expected in [
            "depends on `tokio`",
            "depends on `libc`",
            "names `rand`, which its Cargo.toml does not depend on",
            "crates/subscribe-demo/src/inner/mod.rs has no row",
            "names `old.rs` of `demo`, which is no file",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
        let mut missing = Vec::new();
        check_architecture(&crates, "", &mut missing);
        fs::remove_dir_all(&root).unwrap();
        assert!(missing[0].contains("`subscribe-demo` has no row in the dependency table"), "{missing:?}");
    }

    #[test]
    fn a_crate_without_its_metadata_or_a_feature_in_its_docs_is_not_publishable() {
        let full = "[package]\nname = \"x\"\ndescription = \"d\"\nreadme = \"README.md\"\nkeywords = [\"k\"]\n\
                    categories = [\"c\"]\ninclude = [\"src/**/*.rs\"]\nlicense.workspace = true\nrepository.workspace = true\n\
                    [features]\ndefault = []\nevents = []\n[package.metadata.docs.rs]\nall-features = true\n\
                    rustdoc-args = [\"--cfg\", \"docsrs\"]\n";
        let mut p = Vec::new();
        check_publishable("x", full, Some("//! | `events` | the events |\n"), &mut p);
        assert!(p.is_empty(), "{p:?}");
        check_publishable("x", full, Some("//! no table\n"), &mut p);
        assert_eq!(p, ["x/src/lib.rs: the crate's docs do not name its feature `events`"]);
        p.clear();
        let emptied = full
            .replace("keywords = [\"k\"]", "keywords = []")
            .replace("include = [\"src/**/*.rs\"]", "include = []");
        check_publishable("x", &emptied, Some("//! | `events` |\n"), &mut p);
        assert_eq!(p.len(), 2, "{p:?}");
        p.clear();
        let hidden = full.replace("[features]", "publish = false # for now\n[features]");
        check_publishable("x", &hidden, Some("//! | `events` |\n"), &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        p.clear();
        let bare = "[package]\nname = \"x\"\npublish = false\n";
        check_publishable("x", bare, None, &mut p);
        assert_eq!(p.len(), 8, "{p:?}");
        assert!(p.iter().any(|m| m.contains("not publishable")), "{p:?}");
    }

    #[test]
    fn reads_workspace_lints_table() {
        assert!(has_workspace_key(
            "[package]\nname='x'\n[lints]\nworkspace = true\n",
            "[lints]",
            "workspace"
        ));
        assert!(!has_workspace_key("[package]\nworkspace = true\n[lints]\n", "[lints]", "workspace"));
    }
}
