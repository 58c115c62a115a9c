//! Replays every input under `fuzz/regressions/<target>/` (seeds, and each
//! crash the fuzzers ever found) through the same entry points the fuzz
//! targets use, so a fixed crash stays fixed. The fuzzers themselves run
//! with `bash fuzz/run.sh [SECONDS]` (nightly + cargo-fuzz).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        run(&std::fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}

#[test]
fn notification_inputs() {
    replay("notification", hqsync::fuzzing::notification);
}

#[test]
fn webhook_inputs() {
    replay("webhook", hqsync::fuzzing::webhook);
}

#[test]
fn recurrence_inputs() {
    replay("recurrence", hqsync::fuzzing::recurrence);
}

#[test]
fn wire_inputs() {
    replay("wire", hqsync::fuzzing::wire);
}
