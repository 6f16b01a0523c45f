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
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{anyhow, Context as _};
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::{Instance as RawInstance, ResourceTable};
use wasmtime::Store;

use crate::error::{Error, PluginRef, Result};
use crate::instance::Instance;
use crate::runtime::{Compiled, ContentHash, RuntimeInner};
use crate::{Policy, State, World};

/// Who a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The plugin's name, e.g. `hello`.
    pub name: String,
    /// Its semver version, e.g. `1.0.0`.
    pub version: semver::Version,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl Identity {
    /// The longest name a plugin may give itself, in bytes.
    pub const MAX_NAME: usize = 128;

    /// Parse what a guest returned: a name and a semver version.
    ///
    /// A name is what events, logs and metrics show, so it must read as one
    /// plain token: not empty, at most [`MAX_NAME`](Self::MAX_NAME) bytes,
    /// no whitespace at either end, and no control or invisible formatting
    /// character (a newline, ESC, a bidi override) that could make it pass
    /// for something else.
    ///
    /// # Errors
    /// When the name breaks one of those rules, or the version is not
    /// semver; the error shows the name escaped.
    pub fn parse(name: &str, version: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !name.trim().is_empty(),
            "the plugin's identity has an empty name"
        );
        anyhow::ensure!(
            name.len() <= Self::MAX_NAME,
            "the plugin's name is {} bytes long; at most {} are allowed",
            name.len(),
            Self::MAX_NAME
        );
        let shown = || name.escape_debug().to_string();
        if let Some(c) = name.chars().find(|&c| is_hidden(c)) {
            anyhow::bail!(
                "the plugin's name \"{}\" holds the control or formatting character {:?}; \
                 a name must be printable",
                shown(),
                c
            );
        }
        anyhow::ensure!(
            name.trim() == name,
            "the plugin's name \"{}\" starts or ends with whitespace",
            shown()
        );
        let version = semver::Version::parse(version).map_err(|e| {
            anyhow!("identity: expected a semver version like `1.2.3`, found `{version}` ({e})")
        })?;
        Ok(Identity {
            name: name.to_string(),
            version,
        })
    }
}

/// A character that does not show as itself: C0/C1 controls, DEL, line
/// and paragraph separators, zero-width and bidi formatting characters.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}')
}

/// Where a plugin was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A component file.
    File(PathBuf),
    /// Bytes handed over in memory, with the label they were given.
    Bytes(String),
}

impl Source {
    /// The file stem, or the label: the plugin's name until it says its own.
    pub(crate) fn stem(&self) -> String {
        match self {
            Source::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            Source::Bytes(label) => label.clone(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Bytes(label) => write!(f, "<bytes: {label}>"),
        }
    }
}

pub(crate) struct PluginInner<W: World> {
    pub(crate) runtime: Arc<RuntimeInner<W>>,
    pub(crate) compiled: Arc<Compiled<W>>,
    identity: Identity,
    source: Source,
    pub(crate) label: Arc<str>,
    pub(crate) policy: Policy,
    loaded_at: SystemTime,
    live_instances: AtomicUsize,
    /// Linear memory held by its live instances, in bytes.
    memory_bytes: Arc<AtomicUsize>,
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
        let memory_bytes = Arc::<AtomicUsize>::default();
        let label: Arc<str> = source.stem().into();
        let mut started = start(
            &runtime,
            &compiled,
            &policy,
            &label,
            &memory_bytes,
            W::Data::default(),
        )
        .map_err(|e| load_error(e.context("instantiating it")))?;
        let identity = match started.bindings.identity(&mut started.store) {
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
                live_instances: AtomicUsize::new(0),
                memory_bytes,
                export_names: OnceLock::new(),
                spare: Mutex::new(None),
            }),
        };
        started.store.data_mut().relabel(plugin.inner.label.clone());
        plugin.init(&mut started)?;
        *plugin.lock_spare() = Some(started);
        tracing::debug!(plugin = %plugin.label(), source = %plugin.source(), hash = %plugin.content_hash().short(), "loaded");
        Ok(plugin)
    }

    fn lock_spare(&self) -> std::sync::MutexGuard<'_, Option<Started<W>>> {
        // It only ever holds a whole instance or nothing: safe after a panic.
        self.inner.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `init` on a fresh instance, with a full deadline of its own.
    fn init(&self, started: &mut Started<W>) -> Result<()> {
        let inner = &self.inner;
        let store = &mut started.store;
        let (deadline, fuel) = (inner.policy.deadline_value(), inner.policy.fuel_value());
        inner.runtime.arm(store, deadline, fuel);
        let trap = match started.bindings.init(store) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(message)) => {
                return Err(Error::Init {
                    plugin: self.plugin_ref(),
                    cause: anyhow!("init returned an error: {message}"),
                })
            }
            Err(trap) => trap,
        };
        let limit = store.data_mut().limits.hit.take();
        let timeout = trap.downcast_ref::<crate::DeadlineExceeded>().is_some()
            || trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt);
        let cause = anyhow::Error::from(trap);
        let cause = match (limit, timeout) {
            (Some(limit), _) => cause.context(format!("init trapped after hitting {limit}")),
            (None, true) => cause.context("init trapped: its deadline passed"),
            (None, false) => cause.context("init trapped"),
        };
        Err(Error::Init {
            plugin: self.plugin_ref(),
            cause,
        })
    }

    /// A new, isolated instance: a fresh `Store` (own memory, globals,
    /// tables, WASI context), with `init` already run. Dropping the
    /// instance unloads it.
    pub fn instantiate(&self) -> Result<Instance<W>> {
        // The instance loading checked, if no one took it yet: it is as
        // fresh as a new one (only `identity` and `init` ever ran in it).
        if let Some(Started {
            store,
            instance,
            bindings,
        }) = self.lock_spare().take()
        {
            return Ok(Instance::new(self.clone(), store, instance, bindings));
        }
        self.instantiate_fresh(W::Data::default())
    }

    /// [`instantiate`](Self::instantiate) with the embedder's own
    /// per-instance data, reachable from its host imports.
    pub fn instantiate_with(&self, data: W::Data) -> Result<Instance<W>> {
        self.instantiate_fresh(data)
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
        let Started {
            store,
            instance,
            bindings,
        } = started;
        Ok(Instance::new(self.clone(), store, instance, bindings))
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

    /// The policy its instances run under.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// How many of its instances are alive now.
    pub fn live_instances(&self) -> usize {
        self.inner.live_instances.load(Ordering::Relaxed)
    }

    /// Linear memory held by its live instances now, in bytes: what their
    /// memories were created with plus what they grew by.
    pub fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes.load(Ordering::Relaxed)
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
        let engine = &self.inner.runtime.engine;
        let ty = self.inner.compiled.component.component_type();
        ty.imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    fn export_funcs(&self) -> Vec<(String, ComponentFunc)> {
        let engine = &self.inner.runtime.engine;
        let ty = self.inner.compiled.component.component_type();
        crate::signature::funcs(engine, ty.exports(engine))
    }

    pub(crate) fn plugin_ref(&self) -> PluginRef {
        PluginRef {
            name: self.inner.identity.name.as_str().into(),
            version: Some(self.inner.identity.version.clone()),
            source: self.inner.source.to_string().into(),
        }
    }

    pub(crate) fn instance_started(&self) {
        self.inner.live_instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_ended(&self) {
        self.inner.live_instances.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`start`] makes: a store, the instance in it, its typed bindings.
struct Started<W: World> {
    store: Store<State<W::Data>>,
    instance: RawInstance,
    bindings: W,
}

/// A fresh store with a new instance and its typed bindings: what the
/// load and every later instance start from.
fn start<W: World>(
    runtime: &RuntimeInner<W>,
    compiled: &Compiled<W>,
    policy: &Policy,
    label: &Arc<str>,
    memory: &Arc<AtomicUsize>,
    data: W::Data,
) -> anyhow::Result<Started<W>> {
    let mut store = new_store(runtime, policy, label, memory, data)?;
    runtime.arm(&mut store, policy.deadline_value(), policy.fuel_value());
    let instance = compiled
        .pre
        .instantiate(&mut store)
        .map_err(anyhow::Error::from)?;
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
    memory: &Arc<AtomicUsize>,
    data: W::Data,
) -> anyhow::Result<Store<State<W::Data>>> {
    let (wasi, outputs) = policy.wasi_ctx(label)?;
    let state = State {
        wasi,
        outputs,
        table: ResourceTable::new(),
        limits: policy.limits(memory.clone()),
        deadline: crate::deadline::CallDeadline::new(runtime.clock.clone()),
        log: policy.guest_log(),
        label: label.clone(),
        data,
    };
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.limits);
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::Identity;

    #[test]
    fn a_plain_name_and_semver_version_parse() {
        let id = Identity::parse("hello-c", "1.2.3-rc.1").unwrap();
        assert_eq!(id.to_string(), "hello-c@1.2.3-rc.1");
        assert!(Identity::parse("héllo_wörld.v2", "0.1.0").is_ok());
    }

    #[test]
    fn a_name_that_could_forge_a_log_line_is_refused_escaped() {
        for name in [
            "hello\nWARN wasmplug::registry: swapped",
            "hello\r",
            "he\u{1b}[2Kllo",
            "hello\u{202e}olleh",
            "hel\u{200b}lo",
            "hello\u{2028}x",
            "hello\u{7f}",
        ] {
            let err = Identity::parse(name, "1.0.0").unwrap_err().to_string();
            assert!(err.contains("control or formatting"), "{name:?}: {err}");
            assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
        }
    }

    #[test]
    fn empty_padded_and_overlong_names_are_refused() {
        assert!(Identity::parse("  ", "1.0.0").is_err());
        assert!(Identity::parse(" hello", "1.0.0").is_err());
        let long = "x".repeat(Identity::MAX_NAME + 1);
        let err = Identity::parse(&long, "1.0.0").unwrap_err().to_string();
        assert!(err.contains("129 bytes"), "{err}");
        assert!(Identity::parse(&"x".repeat(Identity::MAX_NAME), "1.0.0").is_ok());
    }

    #[test]
    fn a_version_that_is_not_semver_is_refused_naming_it() {
        let err = Identity::parse("hello", "v1").unwrap_err().to_string();
        assert!(err.contains("`v1`"), "{err}");
    }
}
