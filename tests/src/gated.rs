//! An embedder's world whose `host.log` import is an `async fn`, for the
//! tests of the async API (`tests/async_api.rs`):
//! `log("gate")` awaits the test's release, as an import awaiting a
//! database would; `log("where")` counts the call if it runs on wasmplug's
//! guest threads; `log("nap")` sleeps 2 ms, as an import awaiting a slow
//! service would, and is counted when it ran on the guest threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use tokio::sync::Notify;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmplug:plugin/greeter-plugin@1.0.0",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use bindings::GreeterPlugin;

/// Signalled when the import is entered; it then waits to be released.
pub static ENTERED: LazyLock<Notify> = LazyLock::new(Notify::new);
pub static RELEASE: LazyLock<Notify> = LazyLock::new(Notify::new);

#[derive(Default)]
pub struct Gate;

impl bindings::wasmplug::plugin::types::Host for Gate {}

/// Calls that logged `where` on wasmplug's guest threads.
pub static WHERE_ON_GUEST_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Calls that logged `nap` on wasmplug's guest threads.
pub static NAPS_ON_GUEST_THREADS: AtomicUsize = AtomicUsize::new(0);

fn on_guest_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("wasmplug-guest"))
}

impl bindings::wasmplug::plugin::host::Host for Gate {
    /// `log("gate")` awaits the test's release, as an import awaiting a
    /// database would; `log("where")` notes the thread the call runs on;
    /// every other message passes.
    async fn log(&mut self, _level: bindings::wasmplug::plugin::types::Level, message: String) {
        match message.as_str() {
            "gate" => {
                ENTERED.notify_one();
                RELEASE.notified().await;
            }
            "where" if on_guest_thread() => {
                WHERE_ON_GUEST_THREADS.fetch_add(1, Ordering::Relaxed);
            }
            "nap" => {
                if on_guest_thread() {
                    NAPS_ON_GUEST_THREADS.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            _ => {}
        }
    }
}

impl wasmplug::World for bindings::GreeterPlugin {
    const ASYNC: bool = true;
    type Data = Gate;
    type Indices = bindings::GreeterPluginIndices;

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<wasmplug::State<Gate>>,
    ) -> wasmtime::Result<()> {
        bindings::GreeterPlugin::add_to_linker::<_, wasmtime::component::HasSelf<Gate>>(
            linker,
            wasmplug::State::data_mut,
        )
    }

    fn indices(
        pre: &wasmtime::component::InstancePre<wasmplug::State<Gate>>,
    ) -> wasmtime::Result<Self::Indices> {
        bindings::GreeterPluginIndices::new(pre)
    }

    fn load(
        indices: &Self::Indices,
        store: &mut wasmtime::Store<wasmplug::State<Gate>>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<Self> {
        indices.load(store, instance)
    }

    fn init_async<'a>(
        &'a self,
        store: &'a mut wasmtime::Store<wasmplug::State<Gate>>,
    ) -> wasmplug::world::BoxFuture<'a, wasmtime::Result<Result<(), String>>> {
        Box::pin(self.wasmplug_plugin_lifecycle().call_init(store))
    }
}
