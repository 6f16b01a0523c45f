//! `wasmplug-preview1-adapter <out.wasm>`: write the WASI preview1 reactor
//! adapter of wasmtime 48 to `<out.wasm>`.

use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: wasmplug-preview1-adapter <out.wasm>");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::write(&out, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER) {
        eprintln!("cannot write {}: {e}", out.to_string_lossy());
        std::process::exit(1);
    }
}
