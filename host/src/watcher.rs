//! The watcher: a directory of component files, kept in sync with a
//! [`Registry`].
//!
//! Strategy:
//! * **notify + a debouncer** (`notify-debouncer-mini`) report that *some*
//!   change happened to a path, once the path has been quiet for the
//!   debounce window (50 ms by default). We never trust an event's kind:
//!   every reported path is *reconciled* against the disk as it is now.
//! * **Reconcile** runs on the watcher's own thread, off every call path:
//!   - the path is a `*.wasm` file → read it; if its bytes are those of the
//!     version already loaded from it, nothing happens; otherwise load it
//!     (compile, link, type-check, identity, `init`) and
//!     [`Registry::activate`] it, which swaps it in atomically, with state
//!     handoff. A file now holding another plugin name unloads the old name's
//!     version from that file.
//!   - the path no longer exists → [`Registry::remove_source`]: unloaded once
//!     its in-flight calls end.
//!   - `x.toml` beside `x.wasm` is x's manifest: its requests, within the
//!     [`WatchOptions::allowance`], make x's policy; a changed manifest
//!     reloads x.
//!   - anything else (temporary files, editors' swap files, directories) is
//!     ignored. Writing `x.wasm.tmp` then renaming it to `x.wasm` is
//!     therefore one clean change of `x.wasm`.
//! * **Failure keeps the old version.** A file that does not load (partly
//!   written, garbage, mistyped, `init` failing or trapping, state refused)
//!   gives an [`Event::Failed`] naming the file and the cause; whatever
//!   served keeps serving. A partly written file is picked up by the change
//!   event of its final write.
//! * **What it does not do:** watch subdirectories, or order loads of
//!   different files (each is independent).
//!
//! Events go to the registry's subscribers and to `tracing`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};

use crate::manifest::{Allowance, Manifest};
use crate::registry::Event;
use crate::runtime::read_component;
use crate::{ContentHash, Error, Policy, Registry, Runtime, Source, World};

/// The default debounce window.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches a directory and keeps a registry in sync with it. Dropping the
/// watcher stops watching; loaded plugins stay in the registry.
pub struct Watcher {
    dir: PathBuf,
    debouncer: Option<Debouncer<RecommendedWatcher>>,
    worker: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Load every `*.wasm` in `dir` into `registry`, then watch `dir` with
    /// the default debounce window.
    pub fn start<W: World>(
        dir: impl AsRef<Path>,
        runtime: Runtime<W>,
        registry: Registry<W>,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, runtime, registry, WatchOptions::default())
    }

    /// [`start`](Self::start) with options: the debounce window, and what
    /// manifests beside component files may grant.
    pub fn start_with<W: World>(
        dir: impl AsRef<Path>,
        runtime: Runtime<W>,
        registry: Registry<W>,
        options: WatchOptions,
    ) -> anyhow::Result<Self> {
        let WatchOptions {
            debounce,
            allowance,
        } = options;
        let dir = dir
            .as_ref()
            .canonicalize()
            .with_context(|| format!("watching {}", dir.as_ref().display()))?;
        let reconciler = Reconciler {
            runtime,
            registry,
            allowance,
            failed: Mutex::new(HashMap::new()),
        };

        // Watch first, then scan: a file written between the two is seen by
        // both, and reconciling twice is harmless.
        let (tx, rx) = mpsc::channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(debounce, tx).context("starting the file watcher")?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;

        reconciler.scan(&dir)?;

        let worker = std::thread::Builder::new()
            .name("wasmplug-watcher".into())
            .spawn(move || {
                for result in rx {
                    match result {
                        Ok(events) => {
                            let mut paths: Vec<PathBuf> =
                                events.into_iter().map(|e| e.path).collect();
                            paths.sort();
                            paths.dedup();
                            for path in paths {
                                reconciler.reconcile(&path);
                            }
                        }
                        Err(err) => {
                            tracing::warn!(target: "wasmplug::watcher", "watch error: {err}")
                        }
                    }
                }
            })
            .context("starting the watcher thread")?;
        Ok(Watcher {
            dir,
            debouncer: Some(debouncer),
            worker: Some(worker),
        })
    }

    /// Load every `*.wasm` in `dir` into `registry` once (with manifests,
    /// within `options.allowance`), as [`start_with`](Self::start_with) does
    /// before it starts watching, but without watching. A file that fails
    /// to load is an [`Event::Failed`], as with the watcher.
    pub fn load_dir<W: World>(
        dir: impl AsRef<Path>,
        runtime: Runtime<W>,
        registry: Registry<W>,
        options: WatchOptions,
    ) -> anyhow::Result<()> {
        let dir = dir
            .as_ref()
            .canonicalize()
            .with_context(|| format!("loading {}", dir.as_ref().display()))?;
        Reconciler {
            runtime,
            registry,
            allowance: options.allowance,
            failed: Mutex::new(HashMap::new()),
        }
        .scan(&dir)
    }

    /// The directory being watched (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Dropping the debouncer closes the channel; the worker then ends.
        drop(self.debouncer.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// How a [`Watcher`] works.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long a path must be quiet before it is reconciled.
    pub debounce: Duration,
    /// What a manifest (`x.toml` beside `x.wasm`) may grant. The default
    /// grants nothing: manifests may only tighten limits.
    pub allowance: Allowance,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: DEFAULT_DEBOUNCE,
            allowance: Allowance::none(),
        }
    }
}

struct Reconciler<W: World> {
    runtime: Runtime<W>,
    registry: Registry<W>,
    allowance: Allowance,
    /// The bytes that last failed to load, per path: reported once, not
    /// recompiled on every event for the same content.
    failed: Mutex<HashMap<PathBuf, ContentHash>>,
}

impl<W: World> Reconciler<W> {
    /// The runtime's policy, plus what the manifest beside `component`
    /// asks for, within the allowance.
    fn policy_for(&self, component: &Path) -> anyhow::Result<Policy> {
        let base = self.runtime.policy().clone();
        let manifest_path = Manifest::beside(component);
        if !manifest_path.is_file() {
            return Ok(base);
        }
        let manifest = Manifest::load(&manifest_path)?;
        let dir = component.parent().unwrap_or(Path::new("."));
        manifest
            .apply(base, &self.allowance, dir)
            .with_context(|| format!("applying manifest {}", manifest_path.display()))
    }

    /// Reconcile every entry of `dir`, in name order.
    fn scan(&self, dir: &Path) -> anyhow::Result<()> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        for path in paths {
            self.reconcile(&path);
        }
        Ok(())
    }

    fn reconcile(&self, path: &Path) {
        match path.extension().and_then(|e| e.to_str()) {
            Some("wasm") => self.reconcile_component(path, false),
            // A changed manifest reloads its component, even unchanged.
            Some("toml") => {
                let component = path.with_extension("wasm");
                if component.is_file() {
                    self.reconcile_component(&component, true);
                }
            }
            _ => {}
        }
    }

    fn reconcile_component(&self, path: &Path, manifest_changed: bool) {
        let source = Source::File(path.to_path_buf());
        if !path.exists() {
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(path);
            self.registry.remove_source(&source);
            return;
        }
        if !path.is_file() {
            return;
        }
        // Read and hash once: the same bytes decide "unchanged" and are loaded.
        let bytes = match read_component(path) {
            Ok(bytes) => bytes,
            Err(error) => return self.fail(path, error),
        };
        let hash = ContentHash::of(&bytes);
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        // Unchanged bytes (a touch, a second event for one write): no-op.
        let unchanged = Some(hash) == self.registry.hash_of_source(&source)
            || Some(hash) == failed.get(path).copied();
        if unchanged && !manifest_changed {
            return;
        }
        let policy = self.policy_for(path).map_err(|cause| Error::Load {
            plugin: source.provisional_ref(),
            cause,
        });
        let outcome = policy
            .and_then(|policy| {
                self.runtime
                    .load_hashed(&bytes, hash, source.clone(), policy)
            })
            .and_then(|plugin| self.registry.activate(plugin.clone()).map(|_| plugin));
        match outcome {
            Ok(plugin) => {
                failed.remove(path);
                self.registry
                    .remove_source_except(&source, plugin.identity());
            }
            Err(error) => {
                failed.insert(path.to_path_buf(), hash);
                drop(failed);
                self.fail(path, error);
            }
        }
    }

    fn fail(&self, path: &Path, error: Error) {
        self.registry.emit(Event::Failed {
            path: path.to_path_buf(),
            error: Arc::new(error),
        });
    }
}
