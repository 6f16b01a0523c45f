//! An instance: one live, isolated copy of a plugin.
//!
//! Each instance owns its own wasmtime `Store`, so its linear memory, globals,
//! tables and WASI context belong to it alone (invariant 1). Nothing is shared
//! with another instance unless the embedder puts shared state in its own
//! `World::Data`. **Dropping an instance unloads it**: the store, the instance
//! and its memory go with it (a pooled slot is returned, its pages
//! decommitted).
//!
//! Blocking calls ([`Instance::call`]) run to completion on the calling
//! thread. For an [`ASYNC`](World::ASYNC) world, [`Instance::call_async`] is
//! a future: the guest runs on a fiber that yields at every epoch tick and
//! at every awaiting host call.
//!
//! **Dropping a `call_async` future mid-call** (a client gone, a
//! `tokio::time::timeout` around it) stops the guest where it is: at its
//! next yield, wasmtime unwinds its stack. The instance is then left
//! poisoned, never reused: its guest state is whatever the half-run call
//! left. Calls through a [`Handle`](crate::Handle) discard it and make a new
//! one for the next call, without counting a crash.
//!
//! An instance is `Send` but not shared: a call takes `&mut self`. After a trap (a crash, a deadline, a
//! memory cap) the instance is *poisoned*: further calls are refused with
//! [`Error::Trap`] rather than run on a guest whose state is undefined. Make a
//! new instance from its [`Plugin`].

use std::fmt::Display;
use std::time::Instant;

use anyhow::anyhow;
use wasmtime::Store;

use crate::error::{Error, Result};
use crate::plugin::{start, start_async, Started};
use crate::world::BoxFuture;
use crate::{Plugin, State, World};

/// One live instance of a plugin. See the module docs.
pub struct Instance<W: World> {
    pub(crate) plugin: Plugin<W>,
    pub(crate) store: Store<State<W::Data>>,
    pub(crate) instance: wasmtime::component::Instance,
    bindings: W,
    poisoned: bool,
    /// An async call began and has not ended: if this is still set when
    /// the instance is looked at again, its future was dropped mid-call.
    pub(crate) interrupted: bool,
    /// Each call's deadline (for async calls, which bound awaiting too).
    deadline: Option<std::time::Duration>,
    /// Each call's deadline in epoch ticks, computed once (from the policy,
    /// or from [`set_deadline`](Self::set_deadline)), not on every call.
    deadline_ticks: u64,
}

impl<W: World> Instance<W> {
    pub(crate) fn new(
        plugin: Plugin<W>,
        store: Store<State<W::Data>>,
        instance: wasmtime::component::Instance,
        bindings: W,
    ) -> Self {
        plugin.instance_started();
        let inner = &plugin.inner;
        let deadline = inner.policy.deadline_value();
        let deadline_ticks = inner.runtime.deadline_ticks(deadline);
        Instance {
            plugin,
            store,
            instance,
            bindings,
            poisoned: false,
            interrupted: false,
            deadline,
            deadline_ticks,
        }
    }

    fn started(plugin: Plugin<W>, started: Started<W>) -> Self {
        let Started {
            store,
            instance,
            bindings,
        } = started;
        Instance::new(plugin, store, instance, bindings)
    }

    /// Call the guest through the world's typed bindings.
    ///
    /// `f` gets the `bindgen!` struct and the store; whatever it returns is
    /// the call's result. A trap, deadline or memory cap inside becomes
    /// [`Error::Trap`] and poisons this instance.
    ///
    /// ```no_run
    /// # use wasmplug::reference::GreeterPlugin;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let runtime = wasmplug::Runtime::<GreeterPlugin>::new()?;
    /// let mut instance = runtime.load("hello.wasm")?.instantiate()?;
    /// let greeting = instance.call(|plugin, store| {
    ///     plugin.wasmplug_plugin_greeter().call_welcome(store, "Zoë")
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Trap`] when the instance was poisoned by an earlier trap, or
    /// `f` traps, runs past the deadline or hits a cap (the instance is
    /// poisoned).
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<State<W::Data>>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.enter()?;
        match f(&self.bindings, &mut self.store) {
            Ok(value) => Ok(value),
            Err(err) => Err(self.failed(err)),
        }
    }

    /// Call the guest through the world's **async** bindings (an
    /// [`ASYNC`](World::ASYNC) world), as a future an axum handler simply
    /// awaits. `f` gets the bindings and the store and returns the call as
    /// a boxed future:
    ///
    /// ```no_run
    /// # use wasmplug::reference::async_world::GreeterPlugin;
    /// # async fn f(runtime: wasmplug::Runtime<GreeterPlugin>) -> wasmplug::Result<()> {
    /// let mut instance = runtime.load("hello.wasm")?.instantiate_async().await?;
    /// let greeting = instance
    ///     .call_async(|plugin, store| {
    ///         Box::pin(plugin.wasmplug_plugin_greeter().call_welcome(store, "Zoë"))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The guest runs on the calling task, yielding at every epoch tick
    /// (unless the call began less than 0.5 ms before it) and at every
    /// awaiting host call, so one task computing never starves the others
    /// of its executor thread for more than a tick and 0.5 ms (calls
    /// through a [`Handle`](crate::Handle) go further: see
    /// [`Handle::call_async`](crate::Handle::call_async)). Each call spends
    /// a unit of tokio's cooperative budget, as reading a socket does, so a
    /// task that makes call after call yields to its executor now and then
    /// (its timers and I/O go on). The deadline holds in wall-clock time,
    /// awaiting included. Dropping the future mid-call stops the guest and
    /// poisons the instance (see the module docs).
    ///
    /// # Errors
    /// As [`call`](Self::call); [`Error::BadCall`] for a world whose bindings
    /// are blocking ([`World::ASYNC`] is false).
    pub async fn call_async<R>(
        &mut self,
        f: impl for<'a> FnOnce(
            &'a W,
            &'a mut Store<State<W::Data>>,
        ) -> BoxFuture<'a, wasmtime::Result<R>>,
    ) -> Result<R> {
        tokio::task::coop::consume_budget().await;
        self.call_async_unbudgeted(f).await
    }

    /// [`call_async`](Self::call_async) without spending tokio's budget:
    /// for the registry, which spends it before it leases an instance (a
    /// task yielding with an instance leased would keep it from others).
    pub(crate) async fn call_async_unbudgeted<R>(
        &mut self,
        f: impl for<'a> FnOnce(
            &'a W,
            &'a mut Store<State<W::Data>>,
        ) -> BoxFuture<'a, wasmtime::Result<R>>,
    ) -> Result<R> {
        if !W::ASYNC {
            return Err(self.bad_call(
                "call_async needs a world with async bindings (World::ASYNC); \
                 this one's are blocking: use call"
                    .into(),
            ));
        }
        self.enter()?;
        // Until the call ends: a future dropped mid-call leaves the
        // instance refused, never reused half-called.
        self.poisoned = true;
        self.interrupted = true;
        // One clock read per call: the wall-clock deadline, the epoch
        // callback's check that a tick did not just catch the call's start,
        // and the registry's timing of the call all count from here.
        let began = Instant::now();
        self.store.data_mut().deadline.began = Some(began);
        let runtime = &self.plugin.inner.runtime;
        let outcome = runtime
            .bounded(began, self.deadline, f(&self.bindings, &mut self.store))
            .await;
        self.interrupted = false;
        match outcome {
            Ok(value) => {
                self.poisoned = false;
                Ok(value)
            }
            Err(err) => {
                self.poisoned = false;
                Err(self.failed(err))
            }
        }
    }

    /// When the last async call on this instance began.
    pub(crate) fn async_call_began(&self) -> Option<Instant> {
        self.store.data().deadline.began
    }

    /// What a call's error means: this instance's own bindings refusing a
    /// function its world version lacks (nothing ran), or a crash.
    #[cold]
    fn failed(&mut self, err: wasmtime::Error) -> Error {
        if let Some(refused) = err.downcast_ref::<crate::error::Unsupported>() {
            if refused.came_from(&self.bindings) {
                return Error::Unsupported {
                    plugin: self.plugin.plugin_ref(),
                    call: Box::new(refused.clone()),
                };
            }
        }
        self.crashed(err)
    }

    /// Mark the instance poisoned and classify the error, with the resource
    /// limit the guest hit just before, if any.
    pub(crate) fn crashed(&mut self, err: wasmtime::Error) -> Error {
        self.poisoned = true;
        let limit = self.store.data_mut().limits.hit.take();
        Error::from_call(self.plugin.plugin_ref(), err, limit)
    }

    /// Use `deadline` for this instance's calls from now on, instead of the
    /// policy's (`None`: no deadline).
    pub fn set_deadline(&mut self, deadline: Option<std::time::Duration>) {
        self.deadline = deadline;
        self.deadline_ticks = self.plugin.inner.runtime.deadline_ticks(deadline);
    }

    /// [`call`](Self::call) for an export that returns a WIT `result`: the
    /// guest's own error becomes [`Error::Guest`] (the plugin said no; the
    /// instance stays healthy), a trap stays [`Error::Trap`].
    ///
    /// # Errors
    /// As [`call`](Self::call), and [`Error::Guest`] for the guest's own error
    /// (the instance stays healthy).
    pub fn try_call<T, E: Display>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<State<W::Data>>) -> wasmtime::Result<std::result::Result<T, E>>,
    ) -> Result<T> {
        self.call(f)?.map_err(|e| self.plugin.guest_error(e))
    }

    /// The raw component instance and its store, for lookups by name.
    pub(crate) fn raw_parts(
        &mut self,
    ) -> (&wasmtime::component::Instance, &mut Store<State<W::Data>>) {
        (&self.instance, &mut self.store)
    }

    pub(crate) fn bad_call(&self, message: String) -> Error {
        Error::BadCall {
            plugin: self.plugin.plugin_ref(),
            message,
        }
    }

    /// Refuse a poisoned instance; arm the call's deadline, and its fuel
    /// when the runtime meters fuel.
    pub(crate) fn enter(&mut self) -> Result<()> {
        if self.poisoned {
            let why = if self.interrupted {
                "an earlier call on this instance was dropped mid-way, leaving its state \
                 undefined; instantiate a new one"
            } else {
                "this instance trapped earlier and was discarded; instantiate a new one"
            };
            return Err(Error::Trap {
                plugin: self.plugin.plugin_ref(),
                trap: None,
                limit: None,
                cause: anyhow!(why),
            });
        }
        let inner = &self.plugin.inner;
        inner.runtime.arm_ticks(
            &mut self.store,
            self.deadline_ticks,
            inner.policy.fuel_value(),
        );
        Ok(())
    }

    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Plugin<W> {
        &self.plugin
    }

    /// True once a call has trapped: the instance refuses further calls.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The linear memory this instance holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes
    }

    /// The embedder's per-instance data.
    pub fn data(&self) -> &W::Data {
        self.store.data().data()
    }

    /// The embedder's per-instance data, mutably.
    pub fn data_mut(&mut self) -> &mut W::Data {
        self.store.data_mut().data_mut()
    }
}

/// Instantiating: a [`Plugin`] makes [`Instance`]s. (Here, not in
/// `plugin.rs`, so a plugin knows nothing of the instances above it.)
impl<W: World> Plugin<W> {
    /// A new, isolated instance: a fresh `Store` (own memory, globals,
    /// tables, WASI context), with `init` already run. Dropping the
    /// instance unloads it.
    ///
    /// # Errors
    /// [`Error::Instantiate`] when the store or instance cannot be made (the
    /// pooling allocator's limits, a policy that cannot be applied);
    /// [`Error::Init`] when `init` fails or traps.
    pub fn instantiate(&self) -> Result<Instance<W>> {
        match self.take_spare() {
            Some(instance) => Ok(instance),
            None => self.instantiate_fresh((self.inner.runtime.data)()),
        }
    }

    /// [`instantiate`](Self::instantiate) with the embedder's own
    /// per-instance data, reachable from its host imports.
    ///
    /// # Errors
    /// As [`instantiate`](Self::instantiate).
    pub fn instantiate_with(&self, data: W::Data) -> Result<Instance<W>> {
        self.instantiate_fresh(data)
    }

    /// [`instantiate`](Self::instantiate) on the executor, for an
    /// [`ASYNC`](World::ASYNC) world: instantiation and `init` run on a
    /// fiber that yields at epoch ticks and awaiting host calls.
    ///
    /// # Errors
    /// As [`instantiate`](Self::instantiate).
    pub async fn instantiate_async(&self) -> Result<Instance<W>> {
        if !W::ASYNC {
            return self.instantiate();
        }
        if let Some(instance) = self.take_spare() {
            return Ok(instance);
        }
        let inner = &self.inner;
        let mut started = start_async(
            &inner.runtime,
            &inner.compiled,
            &inner.policy,
            &inner.label,
            &inner.memory_bytes,
            (inner.runtime.data)(),
        )
        .await
        .map_err(|cause| Error::Instantiate {
            plugin: self.plugin_ref(),
            cause,
        })?;
        self.init_async(&mut started).await?;
        Ok(Instance::started(self.clone(), started))
    }

    /// The instance loading checked, if no one took it yet: it is as fresh
    /// as a new one (only `identity` and `init` ever ran in it).
    fn take_spare(&self) -> Option<Instance<W>> {
        let spare = self.lock_spare().take();
        spare.map(|started| Instance::started(self.clone(), started))
    }

    fn instantiate_fresh(&self, data: W::Data) -> Result<Instance<W>> {
        let inner = &self.inner;
        let mut started = start(
            &inner.runtime,
            &inner.compiled,
            &inner.policy,
            &inner.label,
            &inner.memory_bytes,
            data,
        )
        .map_err(|cause| Error::Instantiate {
            plugin: self.plugin_ref(),
            cause,
        })?;
        self.init(&mut started)?;
        Ok(Instance::started(self.clone(), started))
    }
}

impl<W: World> Drop for Instance<W> {
    fn drop(&mut self) {
        self.plugin.instance_ended();
    }
}
