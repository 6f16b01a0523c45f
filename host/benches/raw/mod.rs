//! Raw wasmtime, as a user would write it without wasmplug (its own
//! `bindgen!`, a `Store` per instance, WASI with nothing granted, `log` a
//! no-op), configured like wasmplug's runtime: the baseline the benches
//! measure wasmplug against, in the same process.

use std::path::Path;

use ::wasmplug::wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use ::wasmplug::wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

::wasmplug::wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmplug:plugin/greeter-plugin@1.0.0",
    wasmtime_crate: ::wasmplug::wasmtime,
});

pub struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl self::wasmplug::plugin::types::Host for RawState {}
impl self::wasmplug::plugin::host::Host for RawState {
    fn log(&mut self, _: self::wasmplug::plugin::types::Level, _: String) {}
}

/// One component on a raw engine: pooling allocator, epoch interruption,
/// component-model concurrency off, as wasmplug configures its own.
pub struct Raw {
    engine: Engine,
    pre: GreeterPluginPre<RawState>,
}

/// A raw engine configured as wasmplug's, and its linker: what a service
/// has made before its first load.
pub struct Fresh {
    pub engine: Engine,
    linker: Linker<RawState>,
}

impl Fresh {
    pub fn new() -> Self {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(
                ::wasmplug::runtime::default_pooling(),
            ));
        let engine = Engine::new(&config).unwrap();
        let mut linker = Linker::<RawState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        GreeterPlugin::add_to_linker::<_, HasSelf<RawState>>(&mut linker, |s| s).unwrap();
        Fresh { engine, linker }
    }

    /// `component` linked and type-checked, ready to instantiate.
    pub fn link(&self, component: &Component) -> Raw {
        let pre = GreeterPluginPre::new(self.linker.instantiate_pre(component).unwrap()).unwrap();
        Raw {
            engine: self.engine.clone(),
            pre,
        }
    }

    /// A load as wasmplug's does it, by hand: `component` (compiled, or
    /// deserialized from the cache) linked, instantiated once and `init`
    /// run, then all of it dropped, as the bench drops a loaded plugin.
    // The guests bench loads; the overhead bench only instantiates.
    #[allow(dead_code)]
    pub fn load(&self, component: Component) {
        let raw = self.link(&component);
        drop(raw.instantiate());
    }
}

impl Raw {
    pub fn new(path: &Path) -> Self {
        let fresh = Fresh::new();
        let component = Component::from_file(&fresh.engine, path).unwrap();
        fresh.link(&component)
    }

    /// A new store and instance, `init` run: what wasmplug's instantiate
    /// does, done by hand.
    pub fn instantiate(&self) -> (Store<RawState>, GreeterPlugin) {
        let mut store = Store::new(
            &self.engine,
            RawState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        let bindings = self.pre.instantiate(&mut store).unwrap();
        bindings
            .wasmplug_plugin_lifecycle()
            .call_init(&mut store)
            .unwrap()
            .unwrap();
        (store, bindings)
    }
}
