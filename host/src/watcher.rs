//! The watcher: a directory of component files, kept in sync with a
//! [`Registry`].
//!
//! Strategy:
//! * **notify, read by kind.** The watcher takes notify's raw events for the
//!   directory (not recursive) and keeps, per `*.wasm` / `*.toml` path, what
//!   is happening to it. Only these make a path *due* for a load:
//!   - a write that finished: the writer closed the file (`Close(Write)`);
//!   - a rename into the directory (`Modify(Name)`), the way deploy tools
//!     replace a file;
//!   - a creation (`Create`) with no data written after it, e.g. a hard link
//!     (an empty new file is not due: it is waiting for its data);
//!   - a deletion or a rename out of the directory (the path is gone).
//!
//!   A data change without a close (`Modify(Data)`) means "being written":
//!   the path is not loaded until its writer closes it. Opens, reads
//!   (`Access(Open)`, `Access(Close(Read))`) and metadata changes
//!   (`touch`, `chmod`) are ignored, so the watcher's own reads never
//!   trigger it. A due path is loaded once it has been quiet for the debounce
//!   window ([`DEFAULT_DEBOUNCE`], 50 ms). On backends that report no
//!   close-write (macOS, Windows, BSD), a data change counts as finished once
//!   quiet for the window. An idle directory costs no reads and no wake-ups.
//! * **Reconcile** runs off every call path, for the component `x.wasm` of
//!   each due path (`x.toml` is x's manifest), on a load thread of its own:
//!   up to [`WatchOptions::load_threads`] files load at once (default: the
//!   number of cores, at least 2), so a slow compile or an `init` sleeping
//!   to its deadline never holds up another file's load or swap. One file is
//!   never reconciled twice at once: a change that comes in while it loads
//!   is reconciled when that load ends. The first scan loads every file in
//!   parallel too, then activates them in name order, so which of two files
//!   claiming one name wins does not depend on which compiled first:
//!   - the component and its manifest are read once and hashed. If the pair
//!     (component hash, manifest hash or absence) is the one last loaded from
//!     that path, or the one that last failed there, nothing happens: an
//!     unchanged pair is never reloaded, and a `Failed` is reported once per
//!     content pair;
//!   - otherwise the component is loaded (compile, link, type-check,
//!     identity, `init`) with the runtime's policy plus what its manifest
//!     asks for within [`WatchOptions::allowance`], and
//!     [`Registry::activate`]d: swapped in atomically, with state handoff. A
//!     file now holding another plugin name unloads the old name's version
//!     from that file;
//!   - the component no longer exists → [`Registry::remove_source`]:
//!     unloaded once its in-flight calls end.
//!   - anything else (temporary files, editors' swap files, directories,
//!     FIFOs) is ignored. Writing `x.wasm.tmp` then renaming it to `x.wasm`
//!     is therefore one clean change of `x.wasm`.
//! * **Symbolic links** (a component or a manifest) that resolve outside the
//!   watched directory are refused with an [`Event::Failed`] naming the link
//!   and its target, unless [`WatchOptions::follow_symlinks_out`] is set.
//!   Only the directory is watched: a change to a link's target is seen when
//!   the target lies in the directory (as a change of the target's own
//!   path), or when the link itself is replaced.
//! * **Failure keeps the old version.** A file that does not load (garbage,
//!   mistyped, `init` failing or trapping, state refused, a manifest that is
//!   not valid) gives an [`Event::Failed`] naming the file and the cause;
//!   whatever served keeps serving. A manifest error gives the TOML message
//!   and its line and column, never the text of the file.
//! * **The directory itself.** When the watched directory is deleted or
//!   moved away, the watcher reports [`Event::DirectoryLost`] and unloads
//!   what came from it. It then checks every 200 ms (only while the
//!   directory is missing) for it to be back; when it is, it watches it
//!   again, reports [`Event::DirectoryBack`] and loads what is in it, as
//!   created files. An event queue overflow is handled the same way as a
//!   return: every file is reconsidered (and read once). A load still in
//!   flight when the directory goes (or the watcher is dropped) is thrown
//!   away, never activated.
//! * **What it does not do:** watch subdirectories, order loads of
//!   different files after the first scan (each is independent, and two
//!   files changed at once and claiming one name race for it), or notice a
//!   write through an `mmap` or by a writer that never closes the file.
//!
//! Events go to the registry's subscribers and to `tracing`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::admit::{self, Prepared};
use crate::manifest::{Allowance, Manifest};
use crate::registry::Guard;
use crate::{identity::ContentHash, Error, Event, Policy, Registry, Runtime, Source, World};

/// The default debounce window.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// How often a lost directory is looked for.
const DIR_POLL: Duration = Duration::from_millis(200);

/// Whether the backend reports close-after-write (inotify does), so that a
/// data change alone means "still being written".
const CLOSE_WRITE_REPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Watches a directory and keeps a registry in sync with it. Dropping the
/// watcher stops watching; loaded plugins stay in the registry, and a load
/// still in flight is abandoned (its thread ends with the load, by the
/// load's deadline, and activates nothing).
pub struct Watcher {
    dir: PathBuf,
    stop: mpsc::Sender<Msg>,
    worker: Option<JoinHandle<()>>,
}

enum Msg {
    Notify(notify::Result<notify::Event>),
    /// A load thread finished reconciling this component.
    Done(PathBuf),
    Stop,
}

impl Watcher {
    /// Load every `*.wasm` in `dir` into `registry`, then watch `dir` with
    /// the default debounce window.
    ///
    /// # Errors
    /// When `dir` does not exist or cannot be listed or watched. A file that
    /// fails to load is an [`Event::Failed`], not an error.
    pub fn start<W: World>(
        dir: impl AsRef<Path>,
        runtime: Runtime<W>,
        registry: Registry<W>,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, runtime, registry, WatchOptions::default())
    }

    /// [`start`](Self::start) with options: the debounce window, what
    /// manifests beside component files may grant, and whether symbolic
    /// links may lead out of the directory.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with<W: World>(
        dir: impl AsRef<Path>,
        runtime: Runtime<W>,
        registry: Registry<W>,
        options: WatchOptions,
    ) -> anyhow::Result<Self> {
        let dir = dir
            .as_ref()
            .canonicalize()
            .with_context(|| format!("watching {}", dir.as_ref().display()))?;
        let debounce = options.debounce;
        let lanes = options.lanes();
        let reconciler = Arc::new(Reconciler::new(&dir, runtime, registry, options));

        // Watch first, then scan: a file written between the two is seen by
        // both, and reconciling an unchanged file is a no-op.
        let (tx, rx) = mpsc::channel::<Msg>();
        let events = tx.clone();
        let mut notifier = notify::recommended_watcher(move |event| {
            let _ = events.send(Msg::Notify(event));
        })
        .context("starting the file watcher")?;
        notifier
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;

        reconciler.scan(lanes)?;

        let worker = Worker {
            dir: dir.clone(),
            notifier,
            reconciler,
            debounce,
            pending: HashMap::new(),
            lost: false,
            lanes,
            queue: VecDeque::new(),
            loading: HashSet::new(),
            done: tx.clone(),
        };
        let worker = std::thread::Builder::new()
            .name("wasmplug-watcher".into())
            .spawn(move || worker.run(rx))
            .context("starting the watcher thread")?;
        Ok(Watcher {
            dir,
            stop: tx,
            worker: Some(worker),
        })
    }

    /// Load every `*.wasm` in `dir` into `registry` once (with manifests,
    /// within `options.allowance`), as [`start_with`](Self::start_with) does
    /// before it starts watching, but without watching. A file that fails
    /// to load is an [`Event::Failed`], as with the watcher.
    ///
    /// # Errors
    /// When `dir` does not exist or cannot be listed. A file that fails to load
    /// is an [`Event::Failed`], not an error.
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
        let lanes = options.lanes();
        Reconciler::new(&dir, runtime, registry, options).scan(lanes)
    }

    /// The directory being watched (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The worker owns the notify watcher; it drops it when it stops.
        let _ = self.stop.send(Msg::Stop);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// How a [`Watcher`] works.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long a path whose write finished must be quiet before it is
    /// loaded.
    pub debounce: Duration,
    /// What a manifest (`x.toml` beside `x.wasm`) may grant. The default
    /// grants nothing: manifests may only tighten limits.
    pub allowance: Allowance,
    /// Whether a component or manifest that is a symbolic link resolving
    /// outside the watched directory is followed. Off by default: such a
    /// link is refused with an [`Event::Failed`] naming the link and its
    /// target.
    pub follow_symlinks_out: bool,
    /// The rules a new file must keep to be swapped in
    /// ([`Registry::activate_guarded`]). The default: a name belongs to the
    /// file that first claimed it (another file claiming it gets an
    /// [`Event::Failed`] naming both, and no handoff state), and a version
    /// exporting a strict subset of the serving one's exports is refused.
    pub guard: Guard,
    /// How many files load at once, each on a thread of its own (0: the
    /// number of cores, at least 2). With one, a file whose `init` runs to
    /// its deadline delays every other file's load by that long.
    pub load_threads: usize,
}

impl WatchOptions {
    /// The number of load threads: [`load_threads`](Self::load_threads),
    /// or the number of cores (at least 2) when it is 0.
    fn lanes(&self) -> usize {
        match self.load_threads {
            0 => std::thread::available_parallelism()
                .map_or(2, usize::from)
                .max(2),
            n => n,
        }
    }
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: DEFAULT_DEBOUNCE,
            allowance: Allowance::none(),
            follow_symlinks_out: false,
            guard: Guard::default(),
            load_threads: 0,
        }
    }
}

/// What is happening to one watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Data written, not yet closed: not loaded.
    Writing,
    /// Created, nothing written since: due after the window, unless empty.
    Created,
    /// Closed after a write, or renamed into place: due after the window.
    Finished,
    /// Deleted or renamed away: due after the window.
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    phase: Phase,
    quiet_since: Instant,
}

/// The watcher's thread: notify's events in, reconciles out (each on a
/// load thread).
struct Worker<W: World> {
    dir: PathBuf,
    notifier: RecommendedWatcher,
    reconciler: Arc<Reconciler<W>>,
    debounce: Duration,
    pending: HashMap<PathBuf, Pending>,
    /// The directory is gone; looked for every [`DIR_POLL`].
    lost: bool,
    /// How many components load at once.
    lanes: usize,
    /// Components due, in the order they became due, waiting for a load
    /// thread (or for their own load in flight to end).
    queue: VecDeque<PathBuf>,
    /// Components a load thread is reconciling now.
    loading: HashSet<PathBuf>,
    /// Where a load thread says it is done.
    done: mpsc::Sender<Msg>,
}

impl<W: World> Worker<W> {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let msg = match self.next_wake() {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let mut msgs = match msg {
                Ok(msg) => vec![msg],
                Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            // Take everything already queued before acting on any of it.
            msgs.extend(rx.try_iter());
            for msg in msgs {
                match msg {
                    Msg::Stop => return self.stop(),
                    Msg::Done(component) => {
                        self.loading.remove(&component);
                    }
                    Msg::Notify(Ok(event)) => self.note(event, Instant::now()),
                    Msg::Notify(Err(err)) => {
                        tracing::warn!(target: "wasmplug::watcher", "watch error: {err}");
                        if !self.dir.is_dir() {
                            self.lose();
                        }
                    }
                }
            }
            if self.lost {
                self.look_for_dir();
            }
            self.reconcile_due(Instant::now());
            self.start_loads();
        }
    }

    /// Stop: nothing still loading is activated. The load threads are not
    /// waited for: each ends with its load (by the load's deadline), and
    /// what it loaded is dropped.
    fn stop(self) {
        drop(self.reconciler.discard_in_flight());
    }

    /// Give queued components to load threads, up to `lanes` at once,
    /// never two loads of one component.
    fn start_loads(&mut self) {
        let mut waiting = VecDeque::new();
        while let Some(component) = self.queue.pop_front() {
            if self.loading.len() >= self.lanes || self.loading.contains(&component) {
                waiting.push_back(component);
                continue;
            }
            let reconciler = self.reconciler.clone();
            let generation = reconciler.generation();
            // Says "done" when dropped, so a load that panics does not leave
            // its path marked as loading for ever.
            let done = DoneOnDrop {
                path: component.clone(),
                done: self.done.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("wasmplug-load".into())
                .spawn(move || reconciler.reconcile(&done.path, generation));
            match spawned {
                Ok(_detached) => {
                    self.loading.insert(component);
                }
                Err(err) => {
                    // No thread to be had: load it here, as before.
                    tracing::warn!(target: "wasmplug::watcher", "no load thread ({err}); loading {} on the watcher's thread", component.display());
                    self.reconciler.reconcile(&component, generation);
                }
            }
        }
        self.queue = waiting;
    }

    /// When the worker must wake without an event: the first pending path
    /// to become due, or the next look for a lost directory. `None`: sleep
    /// until an event comes.
    fn next_wake(&self) -> Option<Instant> {
        let due = self
            .pending
            .values()
            .filter(|p| p.phase != Phase::Writing)
            .map(|p| p.quiet_since + self.debounce)
            .min();
        let poll = self.lost.then(|| Instant::now() + DIR_POLL);
        due.into_iter().chain(poll).min()
    }

    /// Record what one notify event says about its paths.
    fn note(&mut self, event: notify::Event, now: Instant) {
        if event.need_rescan() {
            self.rescan(now);
            return;
        }
        for (index, path) in event.paths.iter().enumerate() {
            if *path == self.dir {
                if matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                ) {
                    self.lose();
                }
                continue;
            }
            if path.parent() != Some(self.dir.as_path()) || !is_watched_name(path) {
                continue;
            }
            let phase = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Phase::Finished,
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Phase::Gone,
                // `Both` carries [from, to].
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if index == 0 => Phase::Gone,
                EventKind::Modify(ModifyKind::Name(_)) => Phase::Finished,
                EventKind::Create(_) => Phase::Created,
                EventKind::Remove(_) => Phase::Gone,
                EventKind::Modify(ModifyKind::Data(_)) if CLOSE_WRITE_REPORTED => Phase::Writing,
                EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                    Phase::Finished
                }
                // Opens, reads, metadata: nothing to load.
                _ => continue,
            };
            self.pending.insert(
                path.clone(),
                Pending {
                    phase,
                    quiet_since: now,
                },
            );
        }
    }

    /// Reconcile every component whose path, or whose manifest's path, has
    /// been quiet for the debounce window after its write finished.
    fn reconcile_due(&mut self, now: Instant) {
        if self.lost {
            return;
        }
        let due: Vec<(PathBuf, Phase)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.phase != Phase::Writing && now >= p.quiet_since + self.debounce)
            .map(|(path, p)| (path.clone(), p.phase))
            .collect();
        let mut components = Vec::new();
        for (path, phase) in due {
            self.pending.remove(&path);
            // A new empty file is waiting for its data; its close-write
            // will make it due again.
            if phase == Phase::Created && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                continue;
            }
            components.push(path.with_extension("wasm"));
        }
        components.sort();
        components.dedup();
        for component in components {
            // Still being written, or changed again within the window: it
            // is reconciled when it is due itself.
            if self.pending.contains_key(&component) || self.queue.contains(&component) {
                continue;
            }
            self.queue.push_back(component);
        }
    }

    /// The directory was deleted or moved away: report it, stop watching
    /// it, and unload what came from it.
    fn lose(&mut self) {
        if self.lost {
            return;
        }
        self.lost = true;
        self.pending.clear();
        self.queue.clear();
        let _ = self.notifier.unwatch(&self.dir);
        self.reconciler.registry.emit(Event::DirectoryLost {
            path: self.dir.clone(),
        });
        self.reconciler.unload_all();
    }

    /// While the directory is lost: if it is back, watch it again, report
    /// it, and consider every file in it.
    fn look_for_dir(&mut self) {
        if !self.dir.is_dir() {
            return;
        }
        if let Err(err) = self.notifier.watch(&self.dir, RecursiveMode::NonRecursive) {
            tracing::debug!(target: "wasmplug::watcher", "{} is back but cannot be watched yet: {err}", self.dir.display());
            return;
        }
        self.lost = false;
        self.reconciler.registry.emit(Event::DirectoryBack {
            path: self.dir.clone(),
        });
        self.rescan(Instant::now());
    }

    /// Consider every file in the directory, and every file loaded before,
    /// as if just created (after a queue overflow, or the directory's
    /// return). Each is read once; unchanged ones stay as they are.
    fn rescan(&mut self, now: Instant) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(_) => {
                self.lose();
                return;
            }
        };
        let paths = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| is_watched_name(path))
            .chain(self.reconciler.last().keys().cloned())
            .collect::<Vec<_>>();
        for path in paths {
            self.pending.entry(path).or_insert(Pending {
                phase: Phase::Created,
                quiet_since: now,
            });
        }
    }
}

/// Tells the watcher's thread that a load thread is done with a path, when
/// dropped: at the end of the load, or while a panic unwinds it.
struct DoneOnDrop {
    path: PathBuf,
    done: mpsc::Sender<Msg>,
}

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.done.send(Msg::Done(std::mem::take(&mut self.path)));
    }
}

/// `*.wasm` and `*.toml`: the names the watcher acts on.
fn is_watched_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("wasm" | "toml")
    )
}

/// What a component or manifest path held when it was last read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Print {
    Absent,
    Bytes(ContentHash),
    /// Refused before reading (a link out of the directory, an unreadable
    /// file): the reason stands for the content.
    Refused(String),
}

/// The (component, manifest) pair last loaded or last failed at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    component: Print,
    manifest: Print,
    failed: bool,
}

/// A path's content, read without following links out of the directory.
enum Content {
    Absent,
    /// A directory, a FIFO, a socket: not ours.
    NotAFile,
    Bytes(Vec<u8>),
    Refused(anyhow::Error),
}

/// What a load thread found a component path needs.
enum Step<W: World> {
    /// Unchanged since it was loaded or since it failed; or not a file.
    Nothing,
    /// The component is gone: unload what came from it.
    Remove,
    /// New content, and what was read: loaded (or why it did not load), or
    /// held because it reaches further than the version it would replace.
    Admit { seen: Seen, prepared: Prepared<W> },
}

/// Reads, loads and activates component files. Shared by the watcher's
/// thread and its load threads; one component path is never reconciled by
/// two threads at once.
struct Reconciler<W: World> {
    dir: PathBuf,
    runtime: Runtime<W>,
    registry: Registry<W>,
    allowance: Allowance,
    follow_symlinks_out: bool,
    guard: Guard,
    /// Per component path: what was last loaded from it, or last failed.
    last: Mutex<HashMap<PathBuf, Seen>>,
    /// Bumped when the directory is lost or the watcher stops: a load that
    /// began before is not activated. Activations hold it for reading, so
    /// none is half done while it is bumped.
    generation: RwLock<usize>,
}

impl<W: World> Reconciler<W> {
    fn new(dir: &Path, runtime: Runtime<W>, registry: Registry<W>, options: WatchOptions) -> Self {
        Reconciler {
            dir: dir.to_path_buf(),
            runtime,
            registry,
            allowance: options.allowance,
            follow_symlinks_out: options.follow_symlinks_out,
            guard: options.guard,
            last: Mutex::new(HashMap::new()),
            generation: RwLock::new(0),
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Seen>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn generation(&self) -> usize {
        *self
            .generation
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads in flight are not activated from now on. No activation runs
    /// while the returned guard is held.
    fn discard_in_flight(&self) -> RwLockWriteGuard<'_, usize> {
        let mut generation = self
            .generation
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *generation += 1;
        generation
    }

    /// Reconcile every component of the directory: loaded `lanes` at a
    /// time, then activated in name order (so which of two files claiming
    /// one name wins never depends on which compiled first).
    fn scan(&self, lanes: usize) -> anyhow::Result<()> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        let generation = self.generation();
        let next = AtomicUsize::new(0);
        let steps: Vec<Mutex<Option<Step<W>>>> = paths.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..lanes.min(paths.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { return };
                    let step = self.prepare(path);
                    *steps[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(step);
                });
            }
        });
        for (path, step) in paths.iter().zip(steps) {
            // `scope` returned, so no lane panicked: every step is there.
            let step = step.into_inner().unwrap_or_else(PoisonError::into_inner);
            self.commit(path, step.expect("every path was prepared"), generation);
        }
        Ok(())
    }

    /// Unload everything loaded from the directory (it is gone), and let
    /// no load in flight activate.
    fn unload_all(&self) {
        let _no_activation = self.discard_in_flight();
        for path in std::mem::take(&mut *self.last()).into_keys() {
            self.registry.remove_source(&Source::File(path));
        }
    }

    /// Read `path` (a component or a manifest), refusing a symbolic link
    /// that resolves outside the directory unless the options allow it.
    fn read(&self, path: &Path) -> Content {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Content::Absent,
            Err(e) => {
                return Content::Refused(anyhow!(e).context(format!("reading {}", path.display())))
            }
        };
        let target = if meta.file_type().is_symlink() {
            let target = match std::fs::canonicalize(path) {
                Ok(target) => target,
                Err(e) => {
                    let to = std::fs::read_link(path).unwrap_or_default();
                    return Content::Refused(anyhow!(
                        "{} is a symbolic link to {}, which cannot be resolved: {e}",
                        path.display(),
                        to.display()
                    ));
                }
            };
            let dir = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
            if !self.follow_symlinks_out && !target.starts_with(&dir) {
                return Content::Refused(anyhow!(
                    "{} is a symbolic link to {}, outside the watched directory {}; refused \
                     (WatchOptions::follow_symlinks_out allows it)",
                    path.display(),
                    target.display(),
                    dir.display()
                ));
            }
            target
        } else {
            path.to_path_buf()
        };
        match read_regular_file(&target) {
            Ok(Some(bytes)) => Content::Bytes(bytes),
            Ok(None) => Content::NotAFile,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Content::Absent,
            Err(e) => Content::Refused(anyhow!(e).context(format!("reading {}", path.display()))),
        }
    }

    /// [`prepare`](Self::prepare) then [`commit`](Self::commit): one path,
    /// start to end.
    fn reconcile(&self, path: &Path, generation: usize) {
        let step = self.prepare(path);
        self.commit(path, step, generation);
    }

    /// Read the component at `path` and its manifest; if they changed
    /// since they were last loaded or failed, load the component. Nothing
    /// here touches what serves: that is [`commit`](Self::commit).
    fn prepare(&self, path: &Path) -> Step<W> {
        let source = Source::File(path.to_path_buf());
        let bytes = match self.read(path) {
            Content::Absent => return Step::Remove,
            Content::NotAFile => return Step::Nothing,
            Content::Bytes(bytes) => Ok(bytes),
            Content::Refused(cause) => Err(cause),
        };
        let manifest_path = Manifest::beside(path);
        let manifest = match self.read(&manifest_path) {
            Content::Absent | Content::NotAFile => Ok(None),
            Content::Bytes(bytes) => Ok(Some(bytes)),
            Content::Refused(cause) => Err(cause),
        };

        let bytes = bytes.map(|bytes| {
            let hash = ContentHash::of(&bytes);
            (bytes, hash)
        });
        let seen = Seen {
            component: match &bytes {
                Ok((_, hash)) => Print::Bytes(*hash),
                Err(cause) => Print::Refused(format!("{cause:#}")),
            },
            manifest: match &manifest {
                Ok(None) => Print::Absent,
                Ok(Some(text)) => Print::Bytes(ContentHash::of(text)),
                Err(cause) => Print::Refused(format!("{cause:#}")),
            },
            failed: false,
        };
        let last = self.last().get(path).cloned();
        if let Some(last) = last {
            let same = last.component == seen.component && last.manifest == seen.manifest;
            // Unchanged since it failed, or since it was loaded and is
            // still the version from this file (or is held, or was
            // refused or rolled back): nothing to do.
            let settled = || match &seen.component {
                Print::Bytes(hash) => self.registry.settled(&source, *hash),
                _ => false,
            };
            if same && (last.failed || settled()) {
                return Step::Nothing;
            }
        }

        let refused = |cause| {
            Prepared::Loaded(Err(Error::Load {
                plugin: source.provisional_ref(),
                cause,
            }))
        };
        let prepared = match bytes {
            Ok((bytes, hash)) => match self.policy_for(path, &manifest_path, manifest) {
                Ok(policy) => admit::prepare(
                    &self.runtime,
                    &self.registry,
                    &self.guard,
                    bytes,
                    hash,
                    &source,
                    policy,
                ),
                Err(cause) => refused(cause),
            },
            Err(cause) => refused(cause),
        };
        Step::Admit { seen, prepared }
    }

    /// Act on what [`prepare`](Self::prepare) found for `path`: swap the
    /// loaded plugin in (or report why not), or unload a deleted file's.
    /// Nothing happens if the directory was lost, or the watcher stopped,
    /// since `generation`.
    fn commit(&self, path: &Path, step: Step<W>, generation: usize) {
        let now = self
            .generation
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if *now != generation {
            return;
        }
        let source = Source::File(path.to_path_buf());
        let (seen, prepared) = match step {
            Step::Nothing => return,
            Step::Remove => {
                self.last().remove(path);
                self.registry.remove_source(&source);
                return;
            }
            Step::Admit { seen, prepared } => (seen, prepared),
        };
        match admit::commit(&self.registry, &self.guard, &source, prepared) {
            Ok(_) => {
                self.last().insert(path.to_path_buf(), seen);
            }
            Err(error) => {
                self.last().insert(
                    path.to_path_buf(),
                    Seen {
                        failed: true,
                        ..seen
                    },
                );
                self.registry.emit(Event::Failed {
                    path: path.to_path_buf(),
                    error: Arc::new(error),
                });
            }
        }
    }

    /// The runtime's policy, plus what the manifest beside `component`
    /// asks for, within the allowance.
    fn policy_for(
        &self,
        component: &Path,
        manifest_path: &Path,
        manifest: anyhow::Result<Option<Vec<u8>>>,
    ) -> anyhow::Result<Policy> {
        let base = self.runtime.policy().clone();
        let Some(text) = manifest? else {
            return Ok(base);
        };
        let manifest = Manifest::from_bytes(&text, manifest_path)?;
        let dir = component.parent().unwrap_or(Path::new("."));
        manifest
            .apply(base, &self.allowance, dir)
            .with_context(|| format!("applying manifest {}", manifest_path.display()))
    }
}

/// The bytes of `path` if it is a regular file (`None` for a directory,
/// FIFO or socket). Does not follow a symbolic link in the last component
/// and does not block on a FIFO: `path` is already resolved.
fn read_regular_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let mut file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}
