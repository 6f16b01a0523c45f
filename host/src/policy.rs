//! What one plugin may do and use.
//!
//! Deny by default, in the style of `WasiCtxBuilder`: a [`Policy::default()`]
//! grants no filesystem, no environment variables, no arguments and no
//! network. Each grant is named: [`Policy::preopen_dir`], [`Policy::env`],
//! [`Policy::inherit_env`], [`Policy::arg`], [`Policy::allow_connect`].
//! Clocks and random numbers are always available (WASI gives them without
//! a grant, and they reveal nothing about the host). The guest's stdout and
//! stderr go to the host's `tracing` log, tagged with the plugin's
//! `name@version`, up to [`Policy::output_limit`] bytes per stream per
//! instance.
//!
//! Limits, each turning into an [`Error::Trap`](crate::Error::Trap) for the
//! call that hits it (the instance is then discarded):
//! * **memory**: linear memory per instance (default 256 MiB). A
//!   `memory.grow` past it fails inside the guest, which in practice aborts:
//!   the error's [`limit`](crate::Error::limit) says which limit was hit.
//! * **tables** (default 1,000,000 elements) and **instances** (default 100
//!   core instances, memories and tables per store).
//! * **time**: a deadline per call into the guest, `init` included (default
//!   10 s), by epoch interruption; [`Error::is_timeout`](crate::Error::is_timeout).
//!   An instance may override it per call with
//!   [`Instance::set_deadline`](crate::Instance::set_deadline).
//! * **fuel** (optional, [`RuntimeBuilder::fuel`](crate::RuntimeBuilder::fuel)):
//!   a budget of wasm instructions per call, for deterministic limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::log::{GuestOutput, Stream};

/// Where a guest's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// To the host's `tracing` log, a line an event, tagged with the plugin.
    #[default]
    Log,
    /// Straight to the host process's own stdout and stderr.
    Inherit,
    /// Nowhere.
    Discard,
}

/// Read-only or read-write access to a granted directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirAccess {
    /// Files and directories may be read, not changed.
    ReadOnly,
    /// Files and directories may be read, created, written and removed.
    ReadWrite,
}

/// A host directory granted to the guest under a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// What the guest may do in it.
    pub access: DirAccess,
}

/// What a plugin may do and use. Build it like `WasiCtxBuilder`: start from
/// [`Policy::default()`] (nothing granted) and name each grant.
///
/// ```
/// use std::time::Duration;
/// use wasmplug::{DirAccess, Policy};
/// let policy = Policy::default()
///     .preopen_dir("/srv/plugin-data", "/data", DirAccess::ReadOnly)
///     .inherit_env("LANG")
///     .deadline(Duration::from_millis(500))
///     .memory_limit(16 << 20);
/// assert_eq!(policy.deadline_value(), Some(Duration::from_millis(500)));
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    deadline: Option<Duration>,
    memory_limit: usize,
    table_elements: usize,
    instances: usize,
    fuel: Option<u64>,
    output: Output,
    output_limit: usize,
    dirs: Vec<DirGrant>,
    env: Vec<(String, String)>,
    inherit_env: Vec<String>,
    args: Vec<String>,
    connect: Vec<SocketAddr>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deadline: Some(Duration::from_secs(10)),
            memory_limit: 256 << 20,
            table_elements: 1_000_000,
            instances: 100,
            fuel: None,
            output: Output::Log,
            output_limit: 1 << 20,
            dirs: Vec::new(),
            env: Vec::new(),
            inherit_env: Vec::new(),
            args: Vec::new(),
            connect: Vec::new(),
        }
    }
}

impl Policy {
    /// The longest one call into the guest may run; `None` for no limit.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The most linear memory one instance may hold, in bytes.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The most elements any one table of an instance may hold.
    pub fn table_limit(mut self, elements: usize) -> Self {
        self.table_elements = elements;
        self
    }

    /// The most core instances, memories and tables one store may create.
    pub fn instance_limit(mut self, count: usize) -> Self {
        self.instances = count;
        self
    }

    /// Fuel per call (roughly, wasm instructions), when the runtime meters
    /// fuel ([`RuntimeBuilder::fuel`](crate::RuntimeBuilder::fuel)).
    pub fn fuel(mut self, units: impl Into<Option<u64>>) -> Self {
        self.fuel = units.into();
        self
    }

    /// Where the guest's stdout and stderr go.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The most bytes of stdout, and of stderr, one instance may write to
    /// the log; the rest is dropped, with one warning. Default 1 MiB.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// Grant the host directory `host` to the guest as `guest`. Nothing
    /// outside it is reachable: not through `..`, not through symlinks.
    pub fn preopen_dir(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        access: DirAccess,
    ) -> Self {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            access,
        });
        self
    }

    /// Give the guest the environment variable `key` = `value`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Pass the host's own variable `key` through, if it is set.
    pub fn inherit_env(mut self, key: impl Into<String>) -> Self {
        self.inherit_env.push(key.into());
        self
    }

    /// Append an argument to the guest's `argv`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Let the guest open TCP connections (and send UDP) to `addr`. Without
    /// any such grant the guest has no network at all.
    pub fn allow_connect(mut self, addr: SocketAddr) -> Self {
        self.connect.push(addr);
        self
    }

    /// The per-call deadline in force.
    pub fn deadline_value(&self) -> Option<Duration> {
        self.deadline
    }

    /// The memory cap in force, in bytes.
    pub fn memory_limit_value(&self) -> usize {
        self.memory_limit
    }

    /// The fuel per call, if any.
    pub fn fuel_value(&self) -> Option<u64> {
        self.fuel
    }

    /// The directories granted.
    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    /// The addresses the guest may connect to.
    pub fn connect_allowed(&self) -> &[SocketAddr] {
        &self.connect
    }

    /// The WASI context for one new instance: exactly what was granted.
    pub(crate) fn wasi_ctx(&self, label: &Arc<str>) -> anyhow::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        match self.output {
            Output::Log => {
                builder
                    .stdout(GuestOutput::new(
                        label.clone(),
                        Stream::Stdout,
                        self.output_limit,
                    ))
                    .stderr(GuestOutput::new(
                        label.clone(),
                        Stream::Stderr,
                        self.output_limit,
                    ));
            }
            Output::Inherit => {
                builder.inherit_stdout().inherit_stderr();
            }
            Output::Discard => {} // WasiCtxBuilder's default stdio is empty.
        }
        for dir in &self.dirs {
            let perms = match dir.access {
                DirAccess::ReadOnly => FsPerms::ReadOnly,
                DirAccess::ReadWrite => FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("granting directory {} as {}", dir.host.display(), dir.guest)
                })?;
        }
        for (key, value) in &self.env {
            builder.env(key, value);
        }
        for key in &self.inherit_env {
            if let Ok(value) = std::env::var(key) {
                builder.env(key, value);
            }
        }
        builder.args(&self.args);
        if !self.connect.is_empty() {
            let allowed = self.connect.clone();
            // wasi-libc resolves even IP literals through `ip-name-lookup`;
            // what may be connected to is still only the listed addresses.
            builder
                .allow_ip_name_lookup(true)
                .allow_tcp(true)
                .allow_udp(true);
            builder.socket_addr_check(move |addr, _use| {
                // A connect first binds implicitly to the wildcard address.
                let ok =
                    allowed.contains(&addr) || (addr.ip().is_unspecified() && addr.port() == 0);
                Box::pin(async move { ok })
            });
        }
        Ok(builder.build())
    }

    /// The limiter for one store; `total` adds up the linear memory of
    /// every store of one plugin.
    pub(crate) fn limits(&self, total: Arc<AtomicUsize>) -> Limits {
        Limits {
            memory: self.memory_limit,
            table_elements: self.table_elements,
            instances: self.instances,
            hit: None,
            memory_bytes: 0,
            total,
        }
    }
}

/// Which resource limit a guest ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    /// It asked for more linear memory than the policy allows.
    Memory {
        /// The cap, in bytes.
        limit: usize,
        /// What the guest asked for, in bytes.
        requested: usize,
    },
    /// It asked for a bigger table than the policy allows.
    Table {
        /// The cap, in elements.
        limit: usize,
        /// What the guest asked for.
        requested: usize,
    },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory { limit, requested } => {
                write!(
                    f,
                    "the memory limit of {limit} bytes (it asked for {requested})"
                )
            }
            LimitHit::Table { limit, requested } => {
                write!(
                    f,
                    "the table limit of {limit} elements (it asked for {requested})"
                )
            }
        }
    }
}

/// The store's resource limiter: the policy's caps, a note of the last cap
/// hit (so a trap that follows can be reported as "out of memory"), and the
/// linear memory the store holds.
pub(crate) struct Limits {
    memory: usize,
    table_elements: usize,
    instances: usize,
    pub(crate) hit: Option<LimitHit>,
    /// Linear memory of this store, in bytes.
    pub(crate) memory_bytes: usize,
    /// The same, summed over the plugin's stores.
    total: Arc<AtomicUsize>,
}

impl Drop for Limits {
    fn drop(&mut self) {
        self.total.fetch_sub(self.memory_bytes, Ordering::Relaxed);
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = Some(LimitHit::Memory {
                limit: self.memory,
                requested: desired,
            });
            return Ok(false);
        }
        // Called with `current` 0 when a memory is created, so this counts
        // every memory from its first page.
        let grown = desired.saturating_sub(current);
        self.memory_bytes += grown;
        self.total.fetch_add(grown, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = Some(LimitHit::Table {
                limit: self.table_elements,
                requested: desired,
            });
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.instances
    }
}
