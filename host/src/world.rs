//! The embedder's world, and the state every plugin store carries.
//!
//! wasmplug is generic over the WIT world a service defines. The service runs
//! `wasmtime::component::bindgen!` on its own WIT and implements [`World`] on
//! the generated struct: four short functions that forward to what `bindgen!`
//! generated. From then on `Runtime<MyWorld>` gives typed calls and every
//! lifecycle feature. The reference world in `wit/` is implemented the same
//! way in [`crate::reference`].
//!
//! Every instance lives in its own `Store<State<W::Data>>`. [`State`] holds the
//! WASI context (empty unless the [`Policy`](crate::Policy) grants something),
//! the store's resource limits, the budget of its `log` import, the plugin's
//! label for logs, and the embedder's own per-instance data.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime::component::{Component, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::Identity;

/// A WIT world that plugins implement, as seen by the host.
///
/// Implement it on the struct `bindgen!` generates for the world. Only
/// [`add_to_linker`](World::add_to_linker), [`indices`](World::indices) and
/// [`load`](World::load) are required; worlds with an identity or an
/// explicit `init` export override the two provided methods.
///
/// The README's embedding example (doc-tested) implements it for a world
/// with no imports; `tests/tests/embedding.rs` for a world whose import is
/// backed by the embedder's per-instance [`World::Data`]:
///
/// ```no_run
/// use wasmplug::wasmtime::component::{HasSelf, Instance, InstancePre, Linker};
/// use wasmplug::wasmtime::{self, Store};
/// use wasmplug::{State, World};
///
/// wasmtime::component::bindgen!({ wasmtime_crate: wasmplug::wasmtime, inline: "
///     package acme:text@0.1.0;
///     interface settings { get: func(key: string) -> option<string>; }
///     world filter { import settings; export apply: func(input: string) -> string; }
/// " });
///
/// #[derive(Default)]
/// pub struct Settings(Option<String>);
///
/// impl acme::text::settings::Host for Settings {
///     fn get(&mut self, _key: String) -> Option<String> { self.0.clone() }
/// }
///
/// impl World for Filter {
///     type Data = Settings;
///     type Indices = FilterIndices;
///     fn add_to_linker(linker: &mut Linker<State<Settings>>) -> wasmtime::Result<()> {
///         Filter::add_to_linker::<_, HasSelf<Settings>>(linker, State::data_mut)
///     }
///     fn indices(pre: &InstancePre<State<Settings>>) -> wasmtime::Result<FilterIndices> {
///         FilterIndices::new(pre)
///     }
///     fn load(ix: &FilterIndices, store: &mut Store<State<Settings>>, i: &Instance)
///         -> wasmtime::Result<Self> {
///         ix.load(store, i)
///     }
/// }
/// ```
pub trait World: Sized + Send + Sync + 'static {
    /// Whether the world's bindings are **async**: `bindgen!` ran with
    /// `exports: { default: async }` (and, for imports that await, `imports:
    /// { default: async }`). Such a world is served the tokio way:
    ///
    /// * WASI is linked in its async form, so a guest waiting on a clock or
    ///   a stream parks its task, not a thread;
    /// * instances are called with [`Instance::call_async`](crate::Instance::call_async)
    ///   and [`Handle::call_async`](crate::Handle::call_async), and made with
    ///   [`Plugin::instantiate_async`](crate::Plugin::instantiate_async);
    /// * a guest computing without pause yields to the executor at every
    ///   epoch tick.
    ///
    /// The blocking calls (`load`, `instantiate`, a swap) still work on an
    /// async world: they drive the async code to completion on the calling
    /// thread, so make them from a blocking context (a plain thread,
    /// `spawn_blocking`), never from a task on the executor. A world that
    /// sets `ASYNC` implements [`identity_async`](World::identity_async) and
    /// [`init_async`](World::init_async) instead of their blocking twins.
    const ASYNC: bool = false;

    /// The embedder's own per-instance state, reachable from its host
    /// imports through [`State::data_mut`]. `Default` gives the value of
    /// every new instance (the one loading probes the plugin with included)
    /// unless the runtime was built with
    /// [`instance_data`](crate::runtime::RuntimeBuilder::instance_data); pass
    /// one instance's own with
    /// [`Plugin::instantiate_with`](crate::Plugin::instantiate_with).
    type Data: Default + Send + 'static;

    /// `bindgen!`'s `XxxIndices`: export lookups resolved once per loaded
    /// plugin, so instantiation does no string lookups.
    type Indices: Clone + Send + Sync + 'static;

    /// Add the world's host imports to `linker` (WASI is added by the
    /// runtime). Forward to `bindgen!`'s `Xxx::add_to_linker`.
    fn add_to_linker(linker: &mut Linker<State<Self::Data>>) -> wasmtime::Result<()>;

    /// Add the world's host imports that `init` may call in the one
    /// instance a pre-initialization snapshot is taken from
    /// ([`PreInit`](crate::policy::PreInit)): imports whose effect stays in
    /// the host and which return nothing the guest could keep, such as a
    /// log line (it is written once, when the snapshot is taken, not by
    /// each instance). A component that imports anything else (beyond
    /// WASI) is refused a snapshot, naming the import, whether or not its
    /// `init` calls it. The default adds none.
    ///
    /// # Errors
    /// As [`add_to_linker`](World::add_to_linker).
    fn add_to_snapshot_linker(linker: &mut Linker<State<Self::Data>>) -> wasmtime::Result<()> {
        let _ = linker;
        Ok(())
    }

    /// Resolve and **type-check** the world's exports against a pre-linked
    /// component. This is where a mistyped plugin is refused at load.
    /// Forward to `XxxIndices::new`.
    fn indices(pre: &InstancePre<State<Self::Data>>) -> wasmtime::Result<Self::Indices>;

    /// Refuse, before it is linked, a component this world cannot serve,
    /// with an error that says why (a [`versioned_world!`](crate::versioned_world)
    /// refuses another major version of its world, naming the one the
    /// component targets and the ones the host serves). The default
    /// accepts everything: linking and [`indices`](World::indices) check it.
    fn accepts(component: &Component, engine: &Engine) -> wasmtime::Result<()> {
        let _ = (component, engine);
        Ok(())
    }

    /// The version of the world a loaded plugin is bound to, for a world
    /// that serves several ([`versioned_world!`](crate::versioned_world)).
    /// `None` (the default) for a world of one version.
    fn world_version(indices: &Self::Indices) -> Option<&'static str> {
        let _ = indices;
        None
    }

    /// Build the typed bindings for a fresh instance. Forward to
    /// `XxxIndices::load`.
    fn load(
        indices: &Self::Indices,
        store: &mut Store<State<Self::Data>>,
        instance: &Instance,
    ) -> wasmtime::Result<Self>;

    /// The plugin's own name and version, if the world exports them.
    /// Called once at load, before `init`. The default is `None`: the plugin
    /// is named after its file and versioned `0.0.0`.
    fn identity(&self, store: &mut Store<State<Self::Data>>) -> wasmtime::Result<Option<Identity>> {
        let _ = store;
        Ok(None)
    }

    /// Run the world's explicit initialiser, once per instance, right after
    /// instantiation. `Ok(Err(message))` is the guest refusing; `Err` a trap.
    /// The default does nothing.
    fn init(
        &self,
        store: &mut Store<State<Self::Data>>,
    ) -> wasmtime::Result<std::result::Result<(), String>> {
        let _ = store;
        Ok(Ok(()))
    }

    /// [`identity`](World::identity) for an [`ASYNC`](World::ASYNC) world.
    fn identity_async<'a>(
        &'a self,
        store: &'a mut Store<State<Self::Data>>,
    ) -> BoxFuture<'a, wasmtime::Result<Option<Identity>>> {
        let _ = store;
        Box::pin(async { Ok(None) })
    }

    /// [`init`](World::init) for an [`ASYNC`](World::ASYNC) world.
    fn init_async<'a>(
        &'a self,
        store: &'a mut Store<State<Self::Data>>,
    ) -> BoxFuture<'a, wasmtime::Result<std::result::Result<(), String>>> {
        let _ = store;
        Box::pin(async { Ok(Ok(())) })
    }
}

/// A boxed future that may move between threads: what an async call's
/// closure returns (`Box::pin(async move { ... })`), the shape of
/// `wasmtime`'s own async host functions.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a plugin's `Store` holds. Dropping the store drops all of it.
pub struct State<D> {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: crate::policy::Limits,
    pub(crate) deadline: crate::deadline::CallDeadline,
    /// What the guest may still log, per [`Policy::output_limit`](crate::Policy::output_limit).
    pub(crate) log: crate::log::GuestLog,
    pub(crate) label: Arc<str>,
    /// stdout and stderr, when they go to the log: relabelled once the
    /// plugin's identity is known.
    pub(crate) outputs: Vec<crate::log::GuestOutput>,
    pub(crate) data: D,
}

impl<D> State<D> {
    /// Tag everything this store logs from now on with `label`.
    pub(crate) fn relabel(&mut self, label: Arc<str>) {
        for output in &self.outputs {
            output.relabel(label.clone());
        }
        self.label = label;
    }
}

impl<D> State<D> {
    /// The embedder's per-instance data.
    pub fn data(&self) -> &D {
        &self.data
    }

    /// The embedder's per-instance data, mutably: the getter to hand to
    /// `bindgen!`'s `add_to_linker` for the embedder's own imports.
    pub fn data_mut(&mut self) -> &mut D {
        &mut self.data
    }

    /// The plugin this store belongs to, as `name@version`: the tag on every
    /// log line the guest writes.
    pub fn plugin_label(&self) -> &str {
        &self.label
    }

    /// Log a message from the guest, tagged with its plugin: the body of a
    /// world's log import. The message is escaped so it stays one line (a
    /// guest cannot forge a host line), and what one instance may log is
    /// capped at the policy's [`output_limit`](crate::Policy::output_limit):
    /// past it the rest is dropped, with one warning. The reference world's
    /// `host.log` is exactly this.
    ///
    /// ```no_run
    /// # use wasmplug::{log::Level, State};
    /// # struct MyData;
    /// # fn my_log_import(state: &mut State<MyData>, message: String) {
    /// state.log(Level::Info, &message);
    /// # }
    /// ```
    pub fn log(&mut self, level: crate::log::Level, message: &str) {
        self.log.write(&self.label, level, message);
    }

    /// The store's resource table, for embedders whose worlds use resources.
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl<D> State<D> {
    /// What the deadline-bounded WASI functions see of the store
    /// (`deadline.rs`).
    pub(crate) fn bounded(&mut self) -> crate::deadline::Bounded<'_> {
        crate::deadline::Bounded::new(&mut self.table, &self.deadline)
    }
}

impl<D: Send> WasiView for State<D> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Check, by name, that a pre-linked component exports function `func` (in
/// the exported `interface`, or at the top level for `None`) with the
/// parameter and result types `P` and `R`, written as `bindgen!` writes them:
/// `check_export::<(&User,), (String,)>(pre, Some("pkg:name/greeter@1.0.0"), "hello")`.
///
/// `bindgen!`'s indices check top-level functions when a plugin is loaded
/// but functions inside exported interfaces only when an instance is built,
/// and then without naming the function. A world's
/// [`World::indices`] can call this for each function so a mistyped plugin
/// is refused before anything runs, with an error that names the function,
/// what the host expected and what the component has.
///
/// # Errors
/// When the component does not export `func` in `interface`, or exports it with
/// another type: the message shows both types as WIT.
pub fn check_export<T: 'static, P, R>(
    pre: &InstancePre<T>,
    interface: Option<&str>,
    func: &str,
) -> wasmtime::Result<()>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    use wasmtime::component::types::ComponentItem;
    let component = pre.component();
    let path = match interface {
        Some(iface) => format!("{iface}#{func}"),
        None => func.to_string(),
    };
    let parent = match interface {
        Some(iface) => Some(
            component
                .get_export(None, iface)
                .ok_or_else(|| {
                    wasmtime::format_err!("the component does not export interface `{iface}`")
                })?
                .1,
        ),
        None => None,
    };
    let (item, _) = component
        .get_export(parent.as_ref(), func)
        .ok_or_else(|| wasmtime::format_err!("the component does not export function `{path}`"))?;
    let ComponentItem::ComponentFunc(found) = item else {
        wasmtime::bail!("export `{path}` is not a function");
    };
    // `typecheck` is what `bindgen!`'s own generated code uses.
    found.typecheck::<P, R>(&pre.instance_type()).map_err(|e| {
        wasmtime::format_err!(
            "export `{path}` has the wrong type: {e:#}; the component has `{}`",
            crate::signature::func(&found)
        )
    })
}
