//! The benchmark tools' own inputs stay in step with the source they measure.

use std::path::Path;
use std::process::Command;

/// `scripts/upper-bound.sh` builds copanel with `scripts/upper-bound.patch` applied
/// (BENCHMARKS.md, tenth pass). A change to the lines of `src/store/sled_store.rs` that the
/// patch touches would break the tool only when someone next ran it; this catches it at once.
#[test]
fn upper_bound_patch_applies_to_the_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .current_dir(root)
        .args(["apply", "--check", "scripts/upper-bound.patch"])
        .output()
        .expect("git runs (the tests need git on the PATH)");
    assert!(
        out.status.success(),
        "scripts/upper-bound.patch no longer applies to src/store/sled_store.rs; redo it:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
