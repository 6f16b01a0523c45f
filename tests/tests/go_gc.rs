//! Go's garbage collector and the component model: the GC reads clocks and
//! polls timers, and if a cycle starts (or an allocation assists one) inside
//! `cabi_realloc`, where calling an import is forbidden, the call traps with
//! "cannot leave component instance" (wasmtime#14318, componentize-go#56).
//! hello-go's vendored `go.bytecodealliance.org/pkg` pins the M around that
//! allocation (`runtime.procPin`), so no cycle starts there.
//!
//! Both sides run here under the same allocation pressure: the patched
//! build must never trap, and the unpatched one (`UNPATCHED=1
//! hello-go/build.sh`, the baseline) must, or the patch has become dead
//! weight (an upstream fix landed) and the test says so.

use wasmplug::reference::GreeterPlugin;
use wasmplug::Runtime;
use wasmplug_tests::guest;

/// `calls` calls of `welcome` with names from 10 B to 1 MiB, on one
/// instance (a new one after a trap): the calls that trapped in
/// `cabi_realloc`, and every other failure verbatim.
fn realloc_traps(component: &str, calls: usize) -> (usize, Vec<String>) {
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let plugin = runtime.load(guest(component)).unwrap();
    let mut instance = plugin.instantiate().unwrap();
    let sizes = [10, 1 << 10, 64 << 10, 512 << 10, 1 << 20];
    let (mut traps, mut other) = (0, Vec::new());
    for i in 0..calls {
        let name = "g".repeat(sizes[i % sizes.len()]);
        match instance.welcome(&name) {
            Ok(answer) => assert_eq!(answer.len(), name.len() + "Welcome, !".len()),
            Err(err) => {
                let text = format!("{err:#}");
                if text.contains("cannot leave component instance") {
                    traps += 1;
                } else {
                    other.push(text);
                }
                instance = plugin.instantiate().unwrap();
            }
        }
    }
    (traps, other)
}

#[test]
fn the_go_guest_never_traps_in_cabi_realloc_under_allocation_pressure() {
    let (traps, other) = realloc_traps("hello-go", 2_000);
    assert_eq!((traps, other), (0, vec![]));
}

#[test]
fn without_the_procpin_patch_the_go_guest_does_trap_there() {
    let (traps, other) = realloc_traps("hello-go-unpatched", 2_000);
    assert!(other.is_empty(), "{other:?}");
    assert!(
        traps > 0,
        "the unpatched build no longer traps in cabi_realloc: has an upstream fix \
         (wasmtime#14318, go-pkg procPin) made the vendored patch unnecessary?"
    );
}
