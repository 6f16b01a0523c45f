//! The reference world, `wasmplug:plugin/greeter-plugin@1.0.0` (`wit/plugin.wit`).
//!
//! It is what the demo, the tests and the guest examples use, and it is
//! implemented exactly as an embedder implements its own world: `bindgen!`,
//! then [`World`] on the generated struct. Nothing else in the library knows
//! about it.
//!
//! [`GreeterPlugin`] serves version 1.0.0 only. [`versions::Greeter`]
//! serves 1.1.0 (`wit/v1.1/plugin.wit`) and 1.0.0 through one API, as an
//! embedder serves the versions of its own world (docs/EVOLVING.md); the
//! CLI's [`Dynamic`](crate::Dynamic) world links the 1.1 imports, so it runs
//! plugins of both.

use wasmtime::component::{HasSelf, Instance as RawInstance, InstancePre, Linker};
use wasmtime::Store;

use crate::error::Result;
use crate::log::Level as HostLevel;
use crate::{world::check_export, Identity, Instance, State, World};

/// What `bindgen!` generates for `wit/plugin.wit` (documented in the WIT).
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmplug:plugin/greeter-plugin@1.0.0",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::exports;
use bindings::wasmplug;
pub use bindings::wasmplug::plugin::types::{Identity as WitIdentity, Level, User};
pub use bindings::{GreeterPlugin, GreeterPluginIndices};

impl wasmplug::plugin::types::Host for State<()> {}

impl wasmplug::plugin::host::Host for State<()> {
    fn log(&mut self, level: Level, message: String) {
        // Escaped and within the instance's output budget.
        State::log(self, host_level(level), &message);
    }
}

/// The exported interfaces of the reference world, by full name.
pub const LIFECYCLE: &str = "wasmplug:plugin/lifecycle@1.0.0";
/// See [`LIFECYCLE`].
pub const GREETER: &str = "wasmplug:plugin/greeter@1.0.0";

impl World for GreeterPlugin {
    type Data = ();
    type Indices = GreeterPluginIndices;

    fn add_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        GreeterPlugin::add_to_linker::<_, HasSelf<State<()>>>(linker, |state| state)
    }

    /// The world's one import is `log`: a line for the host to write.
    fn add_to_snapshot_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        <Self as World>::add_to_linker(linker)
    }

    fn indices(pre: &InstancePre<State<()>>) -> wasmtime::Result<Self::Indices> {
        check_exports(pre)?;
        GreeterPluginIndices::new(pre)
    }

    fn load(
        indices: &Self::Indices,
        store: &mut Store<State<()>>,
        instance: &RawInstance,
    ) -> wasmtime::Result<Self> {
        indices.load(store, instance)
    }

    fn identity(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Option<Identity>> {
        let id = self
            .wasmplug_plugin_lifecycle()
            .call_identity(&mut *store)?;
        Identity::parse(&id.name, &id.version)
            .map(Some)
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn init(
        &self,
        store: &mut Store<State<()>>,
    ) -> wasmtime::Result<std::result::Result<(), String>> {
        self.wasmplug_plugin_lifecycle().call_init(store)
    }
}

/// Check every export of the reference world by name, so a mistyped plugin
/// is refused before it runs, with the function named (see
/// `check_export`). The blocking and the async bindings both use it.
fn check_exports(pre: &InstancePre<State<()>>) -> wasmtime::Result<()> {
    check_export::<_, (), (WitIdentity,)>(pre, Some(LIFECYCLE), "identity")?;
    check_export::<_, (), (Result<(), String>,)>(pre, Some(LIFECYCLE), "init")?;
    check_export::<_, (&str,), (String,)>(pre, Some(GREETER), "welcome")?;
    check_export::<_, (&User,), (String,)>(pre, Some(GREETER), "hello")?;
    check_export::<_, (), (u32,)>(pre, Some(GREETER), "count")?;
    check_export::<_, (&User,), (Result<User, String>,)>(pre, Some(GREETER), "birthday")
}

/// The host's log level for the world's.
fn host_level(level: Level) -> HostLevel {
    match level {
        Level::Trace => HostLevel::Trace,
        Level::Debug => HostLevel::Debug,
        Level::Info => HostLevel::Info,
        Level::Warn => HostLevel::Warn,
        Level::Error => HostLevel::Error,
    }
}

/// Add the reference world's host imports, at its newest version (`types`,
/// `host.log`, and `config.get`, which answers `None`: there are no
/// settings) to a linker: for worlds, like [`Dynamic`](crate::Dynamic),
/// that want to run reference plugins of any 1.x version without binding
/// their exports.
pub(crate) fn add_host_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
    versions::add_host_to_linker(linker)
}

/// The reference world's imports that leave nothing in a guest: `log`
/// (and the types it uses), for a snapshot's `init`.
pub(crate) fn add_log_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
    versions::add_log_to_linker(linker)
}

/// Typed calls of the reference world's `greeter` interface.
impl Instance<GreeterPlugin> {
    /// `greeter.welcome(name)`.
    ///
    /// # Errors
    /// [`Error::Trap`] as [`Instance::call`].
    pub fn welcome(&mut self, name: &str) -> Result<String> {
        crate::telemetry::export("greeter.welcome");
        self.call(|g, store| g.wasmplug_plugin_greeter().call_welcome(store, name))
    }

    /// `greeter.hello(who)`: a WIT record passed host → plugin.
    ///
    /// # Errors
    /// [`Error::Trap`] as [`Instance::call`].
    pub fn hello(&mut self, who: &User) -> Result<String> {
        crate::telemetry::export("greeter.hello");
        self.call(|g, store| g.wasmplug_plugin_greeter().call_hello(store, who))
    }

    /// `greeter.count()`: this instance's counter, plus one.
    ///
    /// # Errors
    /// [`Error::Trap`] as [`Instance::call`].
    pub fn count(&mut self) -> Result<u32> {
        crate::telemetry::export("greeter.count");
        self.call(|g, store| g.wasmplug_plugin_greeter().call_count(store))
    }

    /// `greeter.birthday(who)`: the guest may refuse, as
    /// [`Error::Guest`](crate::Error::Guest).
    ///
    /// # Errors
    /// [`Error::Guest`] when the plugin refuses the user; [`Error::Trap`] as
    /// [`Instance::call`].
    pub fn birthday(&mut self, who: &User) -> Result<User> {
        crate::telemetry::export("greeter.birthday");
        self.try_call(|g, store| g.wasmplug_plugin_greeter().call_birthday(store, who))
    }
}

/// The reference world with **async** bindings ([`World::ASYNC`]): the same
/// WIT, served to tokio code through
/// [`Handle::call_async`](crate::Handle::call_async) and
/// [`Instance::call_async`]. Its `host.log` import is an `async fn`, as an
/// embedder's imports that await a database or an HTTP client would be.
pub mod async_world {
    use wasmtime::component::{HasSelf, Instance as RawInstance, InstancePre, Linker};
    use wasmtime::Store;

    use crate::world::BoxFuture;
    use crate::{Identity, State, World};

    #[allow(missing_docs)]
    mod bindings {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "wasmplug:plugin/greeter-plugin@1.0.0",
            additional_derives: [PartialEq, Eq],
            imports: { default: async },
            exports: { default: async },
            // The blocking bindings' types: one `types::Host`, one mapping
            // of the log level.
            with: { "wasmplug:plugin/types": super::super::bindings::wasmplug::plugin::types },
        });
    }

    use super::{host_level, Level};
    pub use bindings::{GreeterPlugin, GreeterPluginIndices};

    impl bindings::wasmplug::plugin::host::Host for State<()> {
        async fn log(&mut self, level: Level, message: String) {
            State::log(self, host_level(level), &message);
        }
    }

    impl World for GreeterPlugin {
        const ASYNC: bool = true;
        type Data = ();
        type Indices = GreeterPluginIndices;

        fn add_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
            GreeterPlugin::add_to_linker::<_, HasSelf<State<()>>>(linker, |state| state)
        }

        fn add_to_snapshot_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
            <Self as World>::add_to_linker(linker)
        }

        fn indices(pre: &InstancePre<State<()>>) -> wasmtime::Result<Self::Indices> {
            super::check_exports(pre)?;
            GreeterPluginIndices::new(pre)
        }

        fn load(
            indices: &Self::Indices,
            store: &mut Store<State<()>>,
            instance: &RawInstance,
        ) -> wasmtime::Result<Self> {
            indices.load(store, instance)
        }

        fn identity_async<'a>(
            &'a self,
            store: &'a mut Store<State<()>>,
        ) -> BoxFuture<'a, wasmtime::Result<Option<Identity>>> {
            Box::pin(async move {
                let id = self
                    .wasmplug_plugin_lifecycle()
                    .call_identity(&mut *store)
                    .await?;
                Identity::parse(&id.name, &id.version)
                    .map(Some)
                    .map_err(wasmtime::Error::from_anyhow)
            })
        }

        fn init_async<'a>(
            &'a self,
            store: &'a mut Store<State<()>>,
        ) -> BoxFuture<'a, wasmtime::Result<std::result::Result<(), String>>> {
            Box::pin(self.wasmplug_plugin_lifecycle().call_init(store))
        }
    }
}

/// The reference world at **every version this host serves**, 1.1.0 and
/// 1.0.0, through one API ([`versioned_world!`](crate::versioned_world)):
/// the same component bytes built against 1.0 load unchanged beside 1.1
/// ones, and `farewell`, new in 1.1, is
/// [`Error::Unsupported`](crate::Error::Unsupported) on a 1.0 plugin.
///
/// ```no_run
/// use wasmplug::reference::versions::{Greeter, Settings};
///
/// # fn main() -> anyhow::Result<()> {
/// let runtime = wasmplug::Runtime::<Greeter>::builder()
///     .instance_data(|| Settings::from_iter([("greeting", "Hej")]))
///     .build()?;
/// let mut old = runtime.load("guest-plugins/dist/hello-v1.wasm")?.instantiate()?;
/// let mut new = runtime.load("guest-plugins/dist/hello-v1.1.wasm")?.instantiate()?;
/// let bye = new.call(|plugin, store| plugin.greeter().farewell(store, "Ann"))?;
/// assert_eq!(bye, "Goodbye, Ann!");
/// let err = old.call(|plugin, store| plugin.greeter().farewell(store, "Ann")).unwrap_err();
/// assert!(err.is_unsupported()); // and `old` serves on
/// # Ok(()) }
/// ```
///
/// What 1.1 cost here: one `bindgen!` run for the newest version (its
/// `types` mapped to 1.0's, so both versions share [`User`]), the `config`
/// import's host side, `"1.1.0"` in `versions` and the `farewell` line.
pub mod versions {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use wasmtime::component::{HasSelf, Linker};
    use wasmtime::Store;

    use super::host_level;
    pub use super::{Level, User, WitIdentity};
    use crate::{Identity, State};

    /// `bindgen!` for the newest version only: its imports serve every
    /// 1.x plugin (wasmtime links `host@1.0.0` to `host@1.1.0`).
    #[allow(missing_docs)]
    mod bindings {
        wasmtime::component::bindgen!({
            path: "../wit/v1.1",
            world: "wasmplug:plugin/greeter-plugin@1.1.0",
            // Unchanged since 1.0: one `User`, one `Level` for both.
            with: { "wasmplug:plugin/types": super::super::bindings::wasmplug::plugin::types },
        });
    }

    /// The embedder's settings, answered to a 1.1 plugin's `config.get`.
    /// Cheap to clone: give every instance the same with
    /// [`RuntimeBuilder::instance_data`](crate::runtime::RuntimeBuilder::instance_data).
    #[derive(Debug, Clone, Default)]
    pub struct Settings(Arc<BTreeMap<String, String>>);

    impl Settings {
        /// The value of `key`, if set.
        pub fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
    }

    impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Settings {
        fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
            Settings(Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ))
        }
    }

    impl super::wasmplug::plugin::types::Host for State<Settings> {}

    impl bindings::wasmplug::plugin::host::Host for State<Settings> {
        fn log(&mut self, level: Level, message: String) {
            State::log(self, host_level(level), &message);
        }
    }

    impl bindings::wasmplug::plugin::config::Host for State<Settings> {
        fn get(&mut self, key: String) -> Option<String> {
            self.data().get(&key).map(str::to_owned)
        }
    }

    impl bindings::wasmplug::plugin::host::Host for State<()> {
        fn log(&mut self, level: Level, message: String) {
            State::log(self, host_level(level), &message);
        }
    }

    impl bindings::wasmplug::plugin::config::Host for State<()> {
        fn get(&mut self, _key: String) -> Option<String> {
            None
        }
    }

    /// See [`super::add_host_to_linker`].
    pub(super) fn add_host_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        type Host = HasSelf<State<()>>;
        super::wasmplug::plugin::types::add_to_linker::<_, Host>(linker, |state| state)?;
        bindings::wasmplug::plugin::host::add_to_linker::<_, Host>(linker, |state| state)?;
        bindings::wasmplug::plugin::config::add_to_linker::<_, Host>(linker, |state| state)
    }

    /// [`add_host_to_linker`] without `config`, whose answers are the
    /// embedder's settings: the imports a snapshot's `init` may call.
    pub(super) fn add_log_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        type Host = HasSelf<State<()>>;
        super::wasmplug::plugin::types::add_to_linker::<_, Host>(linker, |state| state)?;
        bindings::wasmplug::plugin::host::add_to_linker::<_, Host>(linker, |state| state)
    }

    fn link(linker: &mut Linker<State<Settings>>) -> wasmtime::Result<()> {
        bindings::GreeterPlugin::add_to_linker::<_, HasSelf<State<Settings>>>(linker, |s| s)
    }

    fn read_identity(
        plugin: &Greeter,
        store: &mut Store<State<Settings>>,
    ) -> wasmtime::Result<Option<Identity>> {
        let id = plugin.lifecycle().identity(&mut *store)?;
        Identity::parse(&id.name, &id.version)
            .map(Some)
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn run_init(
        plugin: &Greeter,
        store: &mut Store<State<Settings>>,
    ) -> wasmtime::Result<Result<(), String>> {
        plugin.lifecycle().init(store)
    }

    crate::versioned_world! {
        /// The reference world, `wasmplug:plugin/greeter-plugin`, at 1.1.0
        /// and 1.0.0. See the [module docs](self).
        pub struct Greeter {
            package: "wasmplug:plugin",
            versions: ["1.1.0", "1.0.0"],
            data: Settings,
            add_to_linker: link,
            identity: read_identity,
            init: run_init,
            /// `lifecycle`: who the plugin is, and its initialiser.
            interface lifecycle = "lifecycle" {
                /// The plugin's name and version.
                fn identity() -> WitIdentity;
                /// Run once per instance, before any other call.
                fn init() -> Result<(), String>;
            }
            /// `greeter`: the greetings.
            interface greeter = "greeter" {
                /// A greeting for `name`.
                fn welcome(name: &str) -> String;
                /// A greeting for a `user` record.
                fn hello(who: &User) -> String;
                /// This instance's counter, plus one.
                fn count() -> u32;
                /// `who` one year older, or the plugin's refusal.
                fn birthday(who: &User) -> Result<User, String>;
                /// A farewell for `name`. New in 1.1.0.
                #[since = "1.1.0"]
                fn farewell(name: &str) -> String;
            }
        }
    }
}
