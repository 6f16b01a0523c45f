//! `versioned_world!` as an embedder outside the crate writes it: its own
//! `bindgen!` for the newest version, its own host imports, a subset of the
//! exports declared, and a `#[default]` answering for plugins without a
//! function. Nothing here is special to wasmplug's reference world except
//! the WIT it reads.

use wasmplug::wasmtime::component::{HasSelf, Linker};
use wasmplug::wasmtime::{self, Store};
use wasmplug::{Runtime, State};
use wasmplug_tests::guest;

mod newest {
    ::wasmplug::wasmtime::component::bindgen!({
        path: "../wit/v1.1",
        world: "wasmplug:plugin/greeter-plugin@1.1.0",
        wasmtime_crate: ::wasmplug::wasmtime,
    });
}

/// The embedder's own per-instance data: what `config.get` answers.
#[derive(Default)]
pub struct Config {
    greeting: Option<String>,
}

impl newest::wasmplug::plugin::types::Host for State<Config> {}

impl newest::wasmplug::plugin::host::Host for State<Config> {
    fn log(&mut self, _level: newest::wasmplug::plugin::types::Level, message: String) {
        State::log(self, wasmplug::log::Level::Info, &message);
    }
}

impl newest::wasmplug::plugin::config::Host for State<Config> {
    fn get(&mut self, key: String) -> Option<String> {
        (key == "greeting")
            .then(|| self.data().greeting.clone())
            .flatten()
    }
}

fn link(linker: &mut Linker<State<Config>>) -> wasmtime::Result<()> {
    newest::GreeterPlugin::add_to_linker::<_, HasSelf<State<Config>>>(linker, |s| s)
}

fn run_init(
    plugin: &Greeter,
    store: &mut Store<State<Config>>,
) -> wasmtime::Result<Result<(), String>> {
    plugin.lifecycle().init(store)
}

/// What a 1.0 plugin "says" for `farewell`.
fn farewell_default(name: &str) -> String {
    format!("Bye, {name} (said the host)")
}

wasmplug::versioned_world! {
    /// Only what this embedder calls: `init`, `welcome` and `farewell`.
    pub struct Greeter {
        package: "wasmplug:plugin",
        versions: ["1.1.0", "1.0.0"],
        data: Config,
        add_to_linker: link,
        init: run_init,
        interface lifecycle = "lifecycle" {
            fn init() -> Result<(), String>;
        }
        interface greeter = "greeter" {
            fn welcome(name: &str) -> String;
            #[since = "1.1.0"]
            #[default = farewell_default]
            fn farewell(name: &str) -> String;
        }
    }
}

#[test]
fn an_embedders_versioned_world_serves_both_versions_with_its_default() {
    let runtime: Runtime<Greeter> = Runtime::builder()
        .instance_data(|| Config {
            greeting: Some("Ahoy".into()),
        })
        .build()
        .unwrap();
    let old = runtime.load(guest("hello-v1")).unwrap();
    let new = runtime.load(guest("hello-v1.1")).unwrap();
    // No `identity` given: named after the file, as any world without one.
    assert_eq!(old.identity().name, "hello-v1");
    assert_eq!(
        (old.world_version(), new.world_version()),
        (Some("1.0.0"), Some("1.1.0"))
    );

    let (mut old, mut new) = (old.instantiate().unwrap(), new.instantiate().unwrap());
    let farewell = |i: &mut wasmplug::Instance<Greeter>| {
        i.call(|plugin, store| plugin.greeter().farewell(store, "Ann"))
    };
    assert_eq!(farewell(&mut new).unwrap(), "Goodbye, Ann!");
    assert_eq!(farewell(&mut old).unwrap(), "Bye, Ann (said the host)");
    let welcome = |i: &mut wasmplug::Instance<Greeter>| {
        i.call(|plugin, store| plugin.greeter().welcome(store, "Ann"))
    };
    assert_eq!(welcome(&mut new).unwrap(), "Ahoy, Ann!");
    assert_eq!(welcome(&mut old).unwrap(), "Welcome, Ann!");
}

/// The same world with async bindings, for a tokio service: imports that
/// are `async fn`s, calls awaited through `call_async`.
mod asynchronous {
    use wasmplug::wasmtime::component::{HasSelf, Linker};
    use wasmplug::wasmtime::{self, Store};
    use wasmplug::world::BoxFuture;
    use wasmplug::State;

    pub use super::Config;

    mod newest {
        ::wasmplug::wasmtime::component::bindgen!({
            path: "../wit/v1.1",
            world: "wasmplug:plugin/greeter-plugin@1.1.0",
            wasmtime_crate: ::wasmplug::wasmtime,
            imports: { default: async },
            exports: { default: async },
        });
    }

    impl newest::wasmplug::plugin::types::Host for State<Config> {}

    impl newest::wasmplug::plugin::host::Host for State<Config> {
        async fn log(&mut self, _level: newest::wasmplug::plugin::types::Level, message: String) {
            State::log(self, wasmplug::log::Level::Info, &message);
        }
    }

    impl newest::wasmplug::plugin::config::Host for State<Config> {
        async fn get(&mut self, key: String) -> Option<String> {
            (key == "greeting")
                .then(|| self.data().greeting.clone())
                .flatten()
        }
    }

    fn link(linker: &mut Linker<State<Config>>) -> wasmtime::Result<()> {
        newest::GreeterPlugin::add_to_linker::<_, HasSelf<State<Config>>>(linker, |s| s)
    }

    fn run_init<'a>(
        plugin: &'a Greeter,
        store: &'a mut Store<State<Config>>,
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), String>>> {
        Box::pin(plugin.lifecycle().init(store))
    }

    wasmplug::versioned_world! {
        /// The embedder's world again, async.
        pub async struct Greeter {
            package: "wasmplug:plugin",
            versions: ["1.1.0", "1.0.0"],
            data: Config,
            add_to_linker: link,
            init: run_init,
            interface lifecycle = "lifecycle" {
                fn init() -> Result<(), String>;
            }
            interface greeter = "greeter" {
                fn count() -> u32;
                #[since = "1.1.0"]
                fn farewell(name: &str) -> String;
            }
        }
    }
}

async fn count(instance: &mut wasmplug::Instance<asynchronous::Greeter>) -> wasmplug::Result<u32> {
    instance
        .call_async(|plugin, store| Box::pin(plugin.greeter().count(store)))
        .await
}

#[test]
fn an_async_versioned_world_serves_both_versions_on_tokio() {
    use asynchronous::Greeter as AsyncGreeter;
    let runtime: Runtime<AsyncGreeter> = Runtime::new().unwrap();
    // Loading is a blocking call: made outside the executor.
    let (old, new) = (
        runtime.load(guest("hello-v1")).unwrap(),
        runtime.load(guest("hello-v1.1")).unwrap(),
    );
    let registry = wasmplug::Registry::new();
    registry.activate(old.clone()).unwrap();
    wasmplug_tests::current_thread().block_on(async {
        let mut new = new.instantiate_async().await.unwrap();
        let bye = new
            .call_async(|plugin, store| Box::pin(plugin.greeter().farewell(store, "Ann")))
            .await;
        assert_eq!(bye.unwrap(), "Goodbye, Ann!");

        let mut old = old.instantiate_async().await.unwrap();
        assert_eq!(count(&mut old).await.unwrap(), 1);
        let err = old
            .call_async(|plugin, store| Box::pin(plugin.greeter().farewell(store, "Ann")))
            .await
            .unwrap_err();
        assert!(err.is_unsupported(), "{err:?}");
        assert!(!old.is_poisoned());
        assert_eq!(count(&mut old).await.unwrap(), 2);

        // Through a registry's handle: the pooled instance stays in service.
        let handle = registry.get("hello-v1").unwrap();
        for _ in 0..2 {
            let err = handle
                .call_async(|plugin, store| Box::pin(plugin.greeter().farewell(store, "Ann")))
                .await
                .unwrap_err();
            assert!(err.is_unsupported(), "{err:?}");
        }
        let n = handle
            .call_async(|plugin, store| Box::pin(plugin.greeter().count(store)))
            .await
            .unwrap();
        assert_eq!(n, 1, "the same instance served on, nothing restarted");
        assert_eq!(handle.health().unwrap().restarts, 0);
    });
}
