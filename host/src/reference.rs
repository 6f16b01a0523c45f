//! The reference world, `wasmplug:plugin/greeter-plugin@1.0.0` (`wit/plugin.wit`).
//!
//! It is what the demo, the tests and the guest examples use, and it is
//! implemented exactly as an embedder implements its own world: `bindgen!`,
//! then [`World`] on the generated struct. Nothing else in the library knows
//! about it.
//!
//! One bindings module per interface version: when `wasmplug:plugin@1.1.0`
//! exists it gets its own module beside this one, so 1.0 plugins keep
//! loading.

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

/// Add the reference world's host imports (`types`, `host.log`) to a
/// linker: for worlds, like [`Dynamic`](crate::Dynamic), that want to run
/// reference plugins without binding their exports.
pub(crate) fn add_host_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
    wasmplug::plugin::types::add_to_linker::<_, HasSelf<State<()>>>(linker, |state| state)?;
    wasmplug::plugin::host::add_to_linker::<_, HasSelf<State<()>>>(linker, |state| state)
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
