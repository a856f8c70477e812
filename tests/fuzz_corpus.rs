//! Replays the fuzz seed corpus (`fuzz/corpus/<target>/`) through the same harness the fuzz
//! targets run, so every input that ever found a bug stays a regression test under `cargo test`.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn packet_seeds() {
    replay("packet", harness::packet);
}

#[test]
fn zone_seeds() {
    replay("zone", harness::zone);
}

#[test]
fn config_seeds() {
    replay("config", harness::config);
}

#[test]
fn http1_seeds() {
    replay("http1", harness::http1);
}

#[test]
fn l4_head_seeds() {
    replay("l4_head", harness::l4_head);
}
