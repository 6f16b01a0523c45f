//! Shared by the CLI tests and the benches.

use std::path::{Path, PathBuf};

/// The path of a built guest component; fails, naming the command that
/// builds it, when it is missing.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the guests with `just guests` (toolchains: `just setup`)",
        path.display()
    );
    path
}
