//! `sqlx::migrate!` embeds the migrations when the crate compiles, and Cargo rebuilds it only
//! when a file it tracks changes: without this, a new migration file (a new file, not an edit)
//! is left out of the build until something else changes.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
