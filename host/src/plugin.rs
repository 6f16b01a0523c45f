//! A plugin: one loaded version of a component.
//!
//! A [`Plugin`] holds the compiled, pre-linked and type-checked component
//! (shared with any other plugin loaded from the same bytes), the plugin's
//! identity (name and semver version), where it came from, when it was
//! loaded, and the [`Policy`] its instances run under. It is cheap to clone
//! (an `Arc`). Each [`Plugin::instantiate`] gives a new, isolated
//! [`Instance`]. When the last clone and the last instance are dropped, the
//! plugin is unloaded: if no other plugin shares its compiled code, that is
//! freed too.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::Instance as RawInstance;
use wasmtime::Store;

use crate::error::{Error, PluginRef, Result};
use crate::identity::ContentHash;
use crate::identity::{Identity, Source};
use crate::policy::PreInit;
use crate::runtime::{block_on, Compiled, Runtime, RuntimeInner};
use crate::telemetry::{self, Tally, INSTANCES, MEMORY};
use crate::{Policy, State, World};

pub(crate) struct PluginInner<W: World> {
    pub(crate) runtime: Arc<RuntimeInner<W>>,
    pub(crate) compiled: Arc<Compiled<W>>,
    identity: Identity,
    source: Source,
    pub(crate) label: Arc<str>,
    pub(crate) policy: Policy,
    loaded_at: SystemTime,
    live_instances: Tally,
    /// Linear memory held by its live instances, in bytes.
    pub(crate) memory_bytes: Arc<Tally>,
    /// `exports()`, computed on first use: the dynamic path looks names up
    /// on every call.
    export_names: OnceLock<Vec<String>>,
    /// The instance that loading checked (identity read, `init` run), kept
    /// for the first [`Plugin::instantiate`]: a load instantiates once.
    spare: Mutex<Option<Started<W>>>,
}

/// One loaded version of a plugin. See the module docs.
pub struct Plugin<W: World> {
    pub(crate) inner: Arc<PluginInner<W>>,
}

impl<W: World> Clone for Plugin<W> {
    fn clone(&self) -> Self {
        Plugin {
            inner: self.inner.clone(),
        }
    }
}

impl<W: World> fmt::Debug for Plugin<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("identity", &self.inner.identity.to_string())
            .field("source", &self.inner.source.to_string())
            .field("hash", &self.inner.compiled.hash)
            .finish()
    }
}

impl<W: World> Plugin<W> {
    /// Finish loading: instantiate once, learn the identity, run `init`.
    /// That instance is kept as the plugin's first: the next
    /// [`instantiate`](Self::instantiate) returns it. Any failure refuses the
    /// plugin.
    pub(crate) fn new(
        runtime: Arc<RuntimeInner<W>>,
        compiled: Arc<Compiled<W>>,
        source: Source,
        policy: Policy,
    ) -> Result<Self> {
        let provisional = source.provisional_ref();
        let load_error = |cause: anyhow::Error| Error::Load {
            plugin: provisional.clone(),
            cause,
        };
        policy
            .check()
            .map_err(|e| load_error(e.context("its policy cannot be used")))?;
        let memory_bytes = Arc::<Tally>::default();
        let label: Arc<str> = source.stem().into();
        let mut started = start(
            &runtime,
            &compiled,
            &policy,
            &label,
            &memory_bytes,
            (runtime.data)(),
        )
        .map_err(|e| load_error(e.context("instantiating it")))?;
        let identity = if W::ASYNC {
            let Started {
                store, bindings, ..
            } = &mut started;
            block_on(bindings.identity_async(store))
        } else {
            started.bindings.identity(&mut started.store)
        };
        let identity = match identity {
            Ok(Some(identity)) => identity,
            Ok(None) => Identity {
                name: source.stem(),
                version: semver::Version::new(0, 0, 0),
            },
            Err(e) => {
                let cause = anyhow::Error::from(e).context("reading its identity");
                return Err(load_error(cause));
            }
        };
        let plugin = Plugin {
            inner: Arc::new(PluginInner {
                label: identity.to_string().into(),
                runtime,
                compiled,
                identity,
                source,
                policy,
                loaded_at: SystemTime::now(),
                live_instances: Tally::default(),
                memory_bytes,
                export_names: OnceLock::new(),
                spare: Mutex::new(None),
            }),
        };
        started.store.data_mut().relabel(plugin.inner.label.clone());
        let (name, version) = (
            &plugin.inner.identity.name,
            plugin.inner.identity.version.to_string(),
        );
        plugin.inner.live_instances.label(INSTANCES, name, &version);
        plugin.inner.memory_bytes.label(MEMORY, name, &version);
        plugin.init(&mut started)?;
        *plugin.lock_spare() = Some(started);
        tracing::debug!(plugin = %plugin.label(), source = %plugin.source(), hash = %plugin.content_hash().short(), "loaded");
        Ok(plugin)
    }

    pub(crate) fn lock_spare(&self) -> std::sync::MutexGuard<'_, Option<Started<W>>> {
        // It only ever holds a whole instance or nothing: safe after a panic.
        self.inner.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `init` on a fresh instance, with a full deadline of its own;
    /// nothing for an instance of a snapshot, which `init` already made.
    pub(crate) fn init(&self, started: &mut Started<W>) -> Result<()> {
        let inner = &self.inner;
        if inner.compiled.initialized {
            return Ok(());
        }
        let store = &mut started.store;
        let (deadline, fuel) = (inner.policy.deadline_value(), inner.policy.fuel_value());
        inner.runtime.arm(store, deadline, fuel);
        let outcome = if W::ASYNC {
            block_on(inner.runtime.bounded(
                Instant::now(),
                deadline,
                started.bindings.init_async(store),
            ))
        } else {
            started.bindings.init(store)
        };
        self.init_outcome(store, outcome)
    }

    /// [`init`](Self::init) on the executor, for an async world.
    pub(crate) async fn init_async(&self, started: &mut Started<W>) -> Result<()> {
        let inner = &self.inner;
        if inner.compiled.initialized {
            return Ok(());
        }
        let Started {
            store, bindings, ..
        } = started;
        let (deadline, fuel) = (inner.policy.deadline_value(), inner.policy.fuel_value());
        inner.runtime.arm(store, deadline, fuel);
        let outcome = inner
            .runtime
            .bounded(Instant::now(), deadline, bindings.init_async(store))
            .await;
        self.init_outcome(store, outcome)
    }

    fn init_outcome(
        &self,
        store: &mut Store<State<W::Data>>,
        outcome: wasmtime::Result<std::result::Result<(), String>>,
    ) -> Result<()> {
        match crate::runtime::init_failure(store, outcome) {
            None => Ok(()),
            Some(cause) => Err(Error::Init {
                plugin: self.plugin_ref(),
                cause,
            }),
        }
    }

    /// Who the plugin says it is.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// `name@version`, the tag on the plugin's log lines.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &Source {
        &self.inner.source
    }

    /// The SHA-256 of its bytes.
    pub fn content_hash(&self) -> ContentHash {
        self.inner.compiled.hash
    }

    /// When it was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.inner.loaded_at
    }

    /// The version of the world it is bound to, for a world that serves
    /// several ([`versioned_world!`](crate::versioned_world)): the newest
    /// the host serves that is not newer than the one the plugin was built
    /// against. `None` for a world of one version.
    pub fn world_version(&self) -> Option<&'static str> {
        W::world_version(&self.inner.compiled.indices)
    }

    /// The policy its instances run under.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// How many of its instances are alive now.
    pub fn live_instances(&self) -> usize {
        self.inner.live_instances.get()
    }

    /// Linear memory held by its live instances now, in bytes: what their
    /// memories were created with plus what they grew by.
    pub fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes.get()
    }

    /// True when `self` and `other` run the same compiled code (they were
    /// loaded from identical bytes into the same runtime).
    pub fn shares_code_with(&self, other: &Plugin<W>) -> bool {
        Arc::ptr_eq(&self.inner.compiled, &other.inner.compiled)
    }

    /// The compiled component, for inspecting its type with wasmtime.
    pub fn component(&self) -> &wasmtime::component::Component {
        &self.inner.compiled.component
    }

    /// The functions the component exports, as `interface#function` (or
    /// just `function` at the top level), for the dynamic call path.
    pub fn exports(&self) -> Vec<String> {
        self.export_names().to_vec()
    }

    pub(crate) fn export_names(&self) -> &[String] {
        self.inner.export_names.get_or_init(|| {
            self.export_funcs()
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        })
    }

    /// The exported functions with their types written as WIT, e.g.
    /// (`wasmplug:plugin/greeter@1.0.0#welcome`, `func(name: string) -> string`).
    pub fn export_signatures(&self) -> Vec<(String, String)> {
        self.export_funcs()
            .into_iter()
            .map(|(name, func)| (name, crate::signature::func(&func)))
            .collect()
    }

    /// What the component imports, by name (interfaces and functions).
    pub fn imports(&self) -> Vec<String> {
        self.inner.compiled.imports(&self.inner.runtime.engine)
    }

    /// The exported functions, but not a snapshot's own exports that open
    /// its standard streams again: those are the host's, called once per
    /// instance, and never by name.
    fn export_funcs(&self) -> Vec<(String, ComponentFunc)> {
        let engine = &self.inner.runtime.engine;
        let compiled = &self.inner.compiled;
        let ty = compiled.component.component_type();
        let mut funcs = crate::signature::funcs(engine, ty.exports(engine));
        if compiled.initialized {
            funcs.retain(|(name, _)| !crate::snapshot::handles::is_replay(name));
        }
        funcs
    }

    pub(crate) fn plugin_ref(&self) -> PluginRef {
        PluginRef {
            name: self.inner.identity.name.as_str().into(),
            version: Some(self.inner.identity.version.clone()),
            source: self.inner.source.to_string().into(),
        }
    }

    /// The guest's own error (a WIT `result`'s `err`) from this plugin: "the
    /// plugin said no".
    pub(crate) fn guest_error(&self, message: impl fmt::Display) -> Error {
        Error::Guest {
            plugin: self.plugin_ref(),
            message: message.to_string(),
        }
    }

    pub(crate) fn instance_started(&self) {
        self.inner.live_instances.add(1);
    }

    pub(crate) fn instance_ended(&self) {
        self.inner.live_instances.sub(1);
    }
}

/// Loading: a [`Runtime`] makes [`Plugin`]s. (Here, not in `runtime.rs`, so
/// the runtime knows nothing of the plugins above it.)
impl<W: World> Runtime<W> {
    /// Load a plugin from a component file, with the runtime's default policy.
    ///
    /// Loading compiles the component (or reuses the compiled code of
    /// identical bytes), links it against the host's imports, type-checks
    /// its exports against the world, asks it for its identity, and
    /// instantiates it once to run `init`. Any failure refuses the plugin:
    /// nothing half-loaded is ever returned.
    ///
    /// With [`Policy::pre_initialize`], what is compiled and cached is a
    /// snapshot taken after `init` ran once, and no instance runs `init`
    /// again ([`PreInit`] says when a snapshot is refused).
    ///
    /// # Errors
    /// [`Error::Load`] when the file cannot be read, is not a valid component,
    /// its imports or exports do not match the world, its identity is refused,
    /// its policy cannot be used, or its snapshot is refused; [`Error::Init`] when `init` fails or
    /// traps. Each names the file and the plugin.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Plugin<W>> {
        self.load_with_policy(path, self.inner.policy.clone())
    }

    /// [`load`](Self::load) with a policy of its own for this plugin.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_with_policy(&self, path: impl AsRef<Path>, policy: Policy) -> Result<Plugin<W>> {
        let path = path.as_ref();
        let bytes = read_component(path).inspect_err(|err| telemetry::failed_load(err.kind()))?;
        self.load_source(&bytes, Source::File(path.to_path_buf()), policy)
    }

    /// Load a plugin from bytes in memory. `label` stands in for a file name
    /// in errors and logs until the plugin's identity is known.
    ///
    /// # Errors
    /// As [`load`](Self::load), naming `label` instead of a file.
    pub fn load_bytes(&self, label: &str, bytes: &[u8]) -> Result<Plugin<W>> {
        let source = Source::Bytes(label.to_string());
        self.load_source(bytes, source, self.inner.policy.clone())
    }

    /// [`load_bytes`](Self::load_bytes) with a policy of its own.
    ///
    /// # Errors
    /// As [`load_bytes`](Self::load_bytes).
    pub fn load_bytes_with_policy(
        &self,
        label: &str,
        bytes: &[u8],
        policy: Policy,
    ) -> Result<Plugin<W>> {
        self.load_source(bytes, Source::Bytes(label.to_string()), policy)
    }

    fn load_source(&self, bytes: &[u8], source: Source, policy: Policy) -> Result<Plugin<W>> {
        self.load_hashed(bytes, ContentHash::of(bytes), source, policy)
    }

    /// [`load_source`](Self::load_source) for a caller that already hashed
    /// the bytes (the watcher, to skip unchanged files): each file is read
    /// and hashed once.
    pub(crate) fn load_hashed(
        &self,
        bytes: &[u8],
        hash: ContentHash,
        source: Source,
        policy: Policy,
    ) -> Result<Plugin<W>> {
        let span = telemetry::load_span(&source);
        let _entered = span.enter();
        let began = Instant::now();
        let compiled = match policy.pre_initialize_value() {
            PreInit::Off => self.compile(bytes, hash),
            mode => crate::snapshot::compiled(self, bytes, hash, mode, &policy, &source),
        };
        let loaded = compiled
            .map_err(|cause| Error::Load {
                plugin: source.provisional_ref(),
                cause,
            })
            .and_then(|compiled| Plugin::new(self.inner.clone(), compiled, source, policy));
        match &loaded {
            Ok(plugin) => telemetry::loaded(&span, &plugin.identity().name, plugin.label(), began),
            Err(err) => telemetry::refused(&span, err.kind(), began),
        }
        loaded
    }
}

/// Read a component file; an error names the path and the plugin (by its
/// file stem).
pub(crate) fn read_component(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Load {
        plugin: Source::File(path.to_path_buf()).provisional_ref(),
        cause: anyhow::Error::new(e).context(format!("reading {}", path.display())),
    })
}

/// What [`start`] makes: a store, the instance in it, its typed bindings.
pub(crate) struct Started<W: World> {
    pub(crate) store: Store<State<W::Data>>,
    pub(crate) instance: RawInstance,
    pub(crate) bindings: W,
}

/// A fresh store with a new instance and its typed bindings: what the
/// load and every later instance start from.
pub(crate) fn start<W: World>(
    runtime: &RuntimeInner<W>,
    compiled: &Compiled<W>,
    policy: &Policy,
    label: &Arc<str>,
    memory: &Arc<Tally>,
    data: W::Data,
) -> anyhow::Result<Started<W>> {
    if W::ASYNC {
        return block_on(start_async(runtime, compiled, policy, label, memory, data));
    }
    let mut store = new_store(runtime, policy, label, memory, data)?;
    runtime.arm(&mut store, policy.deadline_value(), policy.fuel_value());
    let instance = compiled
        .pre
        .instantiate(&mut store)
        .map_err(anyhow::Error::from)?;
    // A snapshot's instance holds again the standard streams its `init`
    // left open before any export runs (`snapshot::handles`).
    if !compiled.replay.is_empty() {
        crate::snapshot::handles::replay(&mut store, &instance, &compiled.replay)
            .map_err(anyhow::Error::from)
            .context("re-opening the standard streams of its snapshot")?;
    }
    bind(compiled, store, instance)
}

/// [`start`] on the executor, for an async world: instantiation (and any
/// start function) runs on a fiber that yields at epoch ticks.
pub(crate) async fn start_async<W: World>(
    runtime: &RuntimeInner<W>,
    compiled: &Compiled<W>,
    policy: &Policy,
    label: &Arc<str>,
    memory: &Arc<Tally>,
    data: W::Data,
) -> anyhow::Result<Started<W>> {
    let mut store = new_store(runtime, policy, label, memory, data)?;
    runtime.arm(&mut store, policy.deadline_value(), policy.fuel_value());
    let instance = compiled
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(anyhow::Error::from)?;
    if !compiled.replay.is_empty() {
        // Bounded in wall-clock time too, as every async call is.
        let deadline = policy.deadline_value();
        runtime.arm(&mut store, deadline, policy.fuel_value());
        let replay =
            crate::snapshot::handles::replay_async(&mut store, &instance, &compiled.replay);
        runtime
            .bounded(Instant::now(), deadline, replay)
            .await
            .map_err(anyhow::Error::from)
            .context("re-opening the standard streams of its snapshot")?;
    }
    bind(compiled, store, instance)
}

fn bind<W: World>(
    compiled: &Compiled<W>,
    mut store: Store<State<W::Data>>,
    instance: RawInstance,
) -> anyhow::Result<Started<W>> {
    let bindings = W::load(&compiled.indices, &mut store, &instance)
        .map_err(anyhow::Error::from)
        .context("its exports do not match the host's world")?;
    Ok(Started {
        store,
        instance,
        bindings,
    })
}

fn new_store<W: World>(
    runtime: &RuntimeInner<W>,
    policy: &Policy,
    label: &Arc<str>,
    memory: &Arc<Tally>,
    data: W::Data,
) -> anyhow::Result<Store<State<W::Data>>> {
    let wasi = policy.wasi_ctx(label)?;
    Ok(crate::runtime::store_with(
        runtime, policy, label, memory, data, wasi,
    ))
}
