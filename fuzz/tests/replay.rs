//! Every seed and every saved crash input, through the fuzz targets' properties. A file in
//! `regressions/<target>/` is an input that once broke a property; it must hold now.

use std::path::Path;

#[test]
fn seeds_and_regressions_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (name, check) in subscribe_fuzz::TARGETS {
        let seeds = root.join("seeds").join(name);
        assert!(seeds.is_dir(), "no seeds for {name} in {}", seeds.display());
        for dir in [seeds, root.join("regressions").join(name)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{name}: {} breaks its property", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 4 * 3, "only {replayed} inputs replayed");
}
