//! Standard output that never panics: `println!` panics when stdout is
//! closed (`wasmplug inspect x.wasm | head -1`). Here a closed stdout
//! (`BrokenPipe`) ends the command quietly with status 0, as well-behaved
//! Unix tools do, and any other write error ends it with a message and
//! status 1. Rust ignores SIGPIPE, so a closed pipe arrives as that error.

use std::io::Write as _;

/// `println!` through [`write`]: a line to stdout, or the end of the
/// command if stdout is gone.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// Write `bytes` to stdout and flush them, or end the process: quietly
/// (status 0) when the reader has gone away, with an error (status 1) when
/// the write failed otherwise.
pub fn write(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: writing to stdout: {err}");
            std::process::exit(1)
        }
    }
}
