//! What one plugin may do and use.
//!
//! Deny by default, in the style of `WasiCtxBuilder`: a [`Policy::default()`]
//! grants no filesystem, no environment variables, no arguments and no
//! network. Each grant is named: [`Policy::preopen_dir`], [`Policy::env`],
//! [`Policy::inherit_env`], [`Policy::arg`], and for the network, one use
//! each: [`Policy::allow_connect`], [`Policy::allow_listen`],
//! [`Policy::allow_udp`], [`Policy::allow_name_lookup`].
//!
//! **A grant is a handle, not a path.** A granted directory is opened when
//! it is added to the policy, and every instance gets that open handle: what
//! happens to the path later cannot widen what an instance reaches. A grant
//! inside a writable grant is refused ([`Policy::check`]) unless the
//! embedder allows it.
//! Clocks and random numbers are always available (WASI gives them without
//! a grant, and they reveal nothing about the host). The guest's stdout and
//! stderr go to the host's `tracing` log, tagged with the plugin's
//! `name@version`, up to [`Policy::output_limit`] bytes per stream per
//! instance (see **Output** below).
//!
//! Limits, each turning into an [`Error::Trap`](crate::Error::Trap) for the
//! call that hits it (the instance is then discarded):
//! * **memory** (default 256 MiB): the linear memory of one instance, summed
//!   over **every** memory of every core instance inside the component (the
//!   program's, the WASI adapter's, any shim's), from each memory's first
//!   page. A component cannot get round it by declaring several memories.
//!   A `memory.grow` past it fails inside the guest, which in practice
//!   aborts: the error's [`limit`](crate::Error::limit) says which limit was
//!   hit.
//! * **tables** (default 1,000,000 elements): the elements of every table of
//!   the instance, summed the same way.
//! * **instances** (default 100): core instances, and separately memories
//!   and tables, one instance may create.
//! * **time**: a deadline per call into the guest, `init` included (default
//!   10 s), by epoch interruption; [`Error::is_timeout`](crate::Error::is_timeout).
//!   An instance may override it per call with
//!   [`Instance::set_deadline`](crate::Instance::set_deadline).
//! * **fuel** (optional, [`RuntimeBuilder::fuel`](crate::runtime::RuntimeBuilder::fuel)):
//!   a budget of wasm instructions per call, for deterministic limits.
//!
//! What the memory cap does **not** cover is host memory spent on the
//! guest's behalf. It is bounded otherwise:
//! * values crossing the boundary (a string argument of an import, a result)
//!   are copied out of linear memory, so they are no bigger than the memory
//!   cap, and are freed when the call returns;
//! * log lines are cut at 16 KiB and bounded in all by the output limit;
//! * the store's resource table (the WASI streams, pollables, files and
//!   sockets the guest holds) is outside the memory cap: wasmtime caps it at
//!   1,000,000 entries per instance, and the grants decide what may be
//!   opened at all;
//! * WASI's buffers for one read (wasmtime-wasi allocates at most 64 KiB)
//!   or one write are freed when the host call returns;
//! * compiled code belongs to the plugin, not to an instance: it is shared
//!   by every instance and counted by neither cap.
//!
//! Dropping the instance frees all of it.
//!
//! **Output** ([`Policy::output_limit`], default 1 MiB) is a budget, not a
//! trap: what one instance may write to the host's log through stdout,
//! through stderr and through the reference world's `host.log` import, each
//! stream on a budget of its own. Past it the rest is dropped, with one
//! warning, and the guest's writes still succeed. Every line is escaped
//! before it is logged (see [`log::emit`](crate::log::emit)): a
//! guest cannot start a line of its own in the host's log, nor make one
//! look like the host's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::log::{GuestLog, GuestOutput, Stream};
use crate::telemetry::Tally;

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

/// One capability a [`Policy`] grants ([`Policy::grants`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// A host directory under a guest path; `write` when read-write.
    Dir {
        /// The directory on the host.
        host: PathBuf,
        /// Where the guest sees it.
        guest: String,
        /// Read-write (else read-only).
        write: bool,
    },
    /// An environment variable set by the policy (by name: its value is
    /// configuration, not reach).
    Env(String),
    /// A host variable passed through.
    InheritEnv(String),
    /// TCP connections to an address.
    Connect(SocketAddr),
    /// Listening on a local address.
    Listen(SocketAddr),
    /// UDP to and from an address.
    Udp(SocketAddr),
    /// Name lookups.
    NameLookup,
}

impl Grant {
    /// Whether holding `self` already grants everything `other` does: the
    /// same grant, or a read-write directory for the read-only one.
    pub fn covers(&self, other: &Grant) -> bool {
        match (self, other) {
            (
                Grant::Dir { host, guest, write },
                Grant::Dir {
                    host: h,
                    guest: g,
                    write: w,
                },
            ) => host == h && guest == g && (*write || !*w),
            _ => self == other,
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Dir { host, guest, write } => {
                let access = if *write { "read-write" } else { "read-only" };
                write!(f, "directory {} as {guest} ({access})", host.display())
            }
            Grant::Env(key) => write!(f, "env {key}"),
            Grant::InheritEnv(key) => write!(f, "env {key} (the host's)"),
            Grant::Connect(addr) => write!(f, "connect {addr}"),
            Grant::Listen(addr) => write!(f, "listen {addr}"),
            Grant::Udp(addr) => write!(f, "udp {addr}"),
            Grant::NameLookup => write!(f, "name lookup"),
        }
    }
}

/// A host directory granted to the guest under a guest path.
///
/// The directory is opened once, when the grant is added to the
/// [`Policy`]; every instance gets that same open handle, never the path
/// resolved again. Whatever happens to the path afterwards (the directory
/// renamed, removed, replaced by a symlink, by the guest itself through
/// another grant or by anyone else) cannot change what a later instance
/// reaches.
#[derive(Debug, Clone)]
pub struct DirGrant {
    /// The directory on the host, as it resolved when it was opened.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// What the guest may do in it.
    pub access: DirAccess,
    /// The open directory, or why it could not be opened.
    handle: Result<Arc<std::fs::File>, Arc<str>>,
}

impl PartialEq for DirGrant {
    fn eq(&self, other: &Self) -> bool {
        (&self.host, &self.guest, self.access) == (&other.host, &other.guest, other.access)
    }
}

impl Eq for DirGrant {}

impl DirGrant {
    /// Open `host` now (following symlinks once, here) and remember the
    /// handle. A failure is kept and reported when the policy is used.
    fn open(host: PathBuf, guest: String, access: DirAccess) -> Self {
        let opened =
            cap_primitives::fs::open_ambient_dir(&host, cap_primitives::ambient_authority());
        match opened {
            Ok(dir) => DirGrant {
                host: opened_path(&dir).unwrap_or(host),
                guest,
                access,
                handle: Ok(Arc::new(dir)),
            },
            Err(e) => DirGrant {
                handle: Err(format!("cannot open {}: {e}", host.display()).into()),
                host,
                guest,
                access,
            },
        }
    }

    /// Why the directory could not be opened, if it could not.
    pub fn open_error(&self) -> Option<&str> {
        self.handle.as_ref().err().map(|why| &**why)
    }

    /// The path wasmtime-wasi is given to open: on Linux the handle's own
    /// `/proc/self/fd` entry, which reopens exactly the directory the handle
    /// holds and is never resolved by name.
    fn handle_path(&self) -> anyhow::Result<PathBuf> {
        let dir = self
            .handle
            .as_ref()
            .map_err(|why| anyhow::anyhow!("{why}"))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            Ok(PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = dir;
            Ok(self.host.clone())
        }
    }
}

/// Where an open directory is now, as the kernel names it.
fn opened_path(dir: &std::fs::File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// The network a policy grants: each use named on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NetGrants {
    /// TCP connections to these addresses.
    connect: Vec<SocketAddr>,
    /// TCP listeners on these local addresses (port 0: any port of that IP).
    listen: Vec<SocketAddr>,
    /// UDP datagrams to and from these addresses.
    udp: Vec<SocketAddr>,
    /// `wasi:sockets/ip-name-lookup` (DNS), for any name.
    name_lookup: bool,
}

impl NetGrants {
    fn listens_on(&self, addr: SocketAddr) -> bool {
        self.listen
            .iter()
            .any(|l| l.ip() == addr.ip() && (l.port() == 0 || l.port() == addr.port()))
    }

    /// Whether the guest may use `addr` for `use_`. An implicit bind (the
    /// wildcard address, port 0, which wasmtime-wasi checks before every
    /// connect and first send) is allowed only with a grant it serves.
    fn permits(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let implicit = addr.ip().is_unspecified() && addr.port() == 0;
        match use_ {
            SocketAddrUse::TcpConnect => self.connect.contains(&addr),
            SocketAddrUse::TcpBind => {
                self.listens_on(addr) || (implicit && !self.connect.is_empty())
            }
            SocketAddrUse::TcpListen => self.listens_on(addr),
            SocketAddrUse::TcpAccept => !self.listen.is_empty(),
            SocketAddrUse::UdpBind => implicit && !self.udp.is_empty(),
            SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => self.udp.contains(&addr),
        }
    }
}

/// What a plugin may do and use. Build it like `WasiCtxBuilder`: start from
/// [`Policy::default()`] (nothing granted) and name each grant.
///
/// ```
/// use std::time::Duration;
/// use wasmplug::{policy::DirAccess, Policy};
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
    nested_grants: bool,
    env: Vec<(String, String)>,
    inherit_env: Vec<String>,
    args: Vec<String>,
    net: Arc<NetGrants>,
    pre_init: PreInit,
}

/// Whether a plugin's instances start from a snapshot taken after its
/// `init` ([`Policy::pre_initialize`]), and what that snapshot may freeze.
///
/// Loading a plugin with pre-initialization instantiates it once more, in
/// a store with nothing granted, runs `init` there, and has
/// [wasmtime-wizer](https://docs.rs/wasmtime-wizer) write the instance's
/// memories and globals into a new component (the *snapshot*). Every
/// instance of that version then starts from the snapshot, each in its own
/// store as always, and `init` is not run again. The snapshot is compiled
/// and kept in the runtime's caches (in memory, and on disk with
/// [`cache_dir`](crate::runtime::RuntimeBuilder::cache_dir)) in place of
/// the plain component.
///
/// A snapshot is refused, and with it the load, with an error naming what
/// `init` did, when:
/// * the policy grants anything (a directory, an environment variable, an
///   argument, a network address): `init` runs with nothing granted, so
///   what it read there would be frozen into instances that have grants;
/// * the component imports anything beyond WASI and what the world
///   declares safe for a snapshot's `init` to call
///   ([`World::add_to_snapshot_linker`](crate::World::add_to_snapshot_linker)):
///   what such an import returned may be host state;
/// * `init` left a handle open (a file, a stream, a socket): a snapshot
///   keeps its number but no new store holds what it stood for;
/// * under [`Deterministic`](PreInit::Deterministic), `init` read a clock
///   or a random number;
/// * its memory after `init` is over 128 MiB (wizer's work on the host
///   grows with it).
///
/// Not detected: a guest that learns the time by polling a timer's
/// readiness in a loop rather than reading a clock. `Deterministic` is the
/// embedder's word for the plugin's `init`; these checks catch the usual
/// ways it is wrong (a hash map's keys, a start time, a runtime's seed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreInit {
    /// Every instance runs `init` (the default).
    #[default]
    Off,
    /// `init` is declared deterministic: the same in every instance. It
    /// may not read clocks or random numbers.
    Deterministic,
    /// As `Deterministic`, but `init` may read clocks and random numbers,
    /// and what it read is frozen into every instance: the same hash seeds
    /// (Python's, Go's maps), the same start time. Interpreters read them
    /// as they start (JavaScript reads the clocks, Python random numbers),
    /// so this is the consent they need. Do not use it for a plugin that
    /// makes keys or tokens from what `init` read.
    FreezeClocksAndEntropy,
}

impl PreInit {
    /// The name a manifest uses for it (`pre_initialize = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            PreInit::Off => "off",
            PreInit::Deterministic => "deterministic",
            PreInit::FreezeClocksAndEntropy => "freeze-clocks-and-entropy",
        }
    }

    /// The mode a manifest names `name` ([`PreInit::name`]), if any.
    pub fn from_name(name: &str) -> Option<PreInit> {
        [
            PreInit::Off,
            PreInit::Deterministic,
            PreInit::FreezeClocksAndEntropy,
        ]
        .into_iter()
        .find(|mode| mode.name() == name)
    }
}

/// A call's deadline under [`Policy::default`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deadline: Some(DEFAULT_DEADLINE),
            memory_limit: 256 << 20,
            table_elements: 1_000_000,
            instances: 100,
            fuel: None,
            output: Output::Log,
            output_limit: 1 << 20,
            dirs: Vec::new(),
            nested_grants: false,
            env: Vec::new(),
            inherit_env: Vec::new(),
            args: Vec::new(),
            net: Arc::default(),
            pre_init: PreInit::Off,
        }
    }
}

impl Policy {
    /// The longest one call into the guest may run; `None` for no limit.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The most linear memory one instance may hold, in bytes, summed over
    /// all its memories.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The most table elements one instance may hold, summed over all its
    /// tables.
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
    /// fuel ([`RuntimeBuilder::fuel`](crate::runtime::RuntimeBuilder::fuel)).
    pub fn fuel(mut self, units: impl Into<Option<u64>>) -> Self {
        self.fuel = units.into();
        self
    }

    /// Where the guest's stdout and stderr go.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The most bytes of stdout, of stderr, and of `host.log` messages one
    /// instance may write to the log (each on its own budget, counted as
    /// written: escaped, a line break counting one); the rest is dropped,
    /// with one warning. Default 1 MiB.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// Grant the host directory `host` to the guest as `guest`. Nothing
    /// outside it is reachable: not through `..`, not through symlinks.
    ///
    /// The directory is **opened now**, and every instance gets that handle
    /// (see [`DirGrant`]). If it cannot be opened, the policy is refused
    /// when a plugin is loaded with it ([`check`](Self::check) says why).
    /// A grant inside a writable grant is refused too, unless
    /// [`allow_nested_grants`](Self::allow_nested_grants).
    pub fn preopen_dir(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        access: DirAccess,
    ) -> Self {
        self.dirs
            .push(DirGrant::open(host.into(), guest.into(), access));
        self
    }

    /// Allow a granted directory to lie inside (or be) another, writable,
    /// granted directory. Refused by default: through the writable grant the
    /// guest can change everything under the nested one, so the nested
    /// grant's own access (read-only, say) means nothing. With handles the
    /// guest still cannot reach outside either grant.
    pub fn allow_nested_grants(mut self) -> Self {
        self.nested_grants = true;
        self
    }

    /// Whether the policy can be used as it stands: every granted directory
    /// opened, and no grant inside a writable grant (unless
    /// [`allow_nested_grants`](Self::allow_nested_grants)). Loading a plugin
    /// runs this check and refuses the plugin with its error.
    ///
    /// # Errors
    /// Names the grant that could not be opened, or both grants of a nested
    /// pair.
    pub fn check(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            if let Err(why) = &dir.handle {
                anyhow::bail!(
                    "cannot grant {} as {}: {why}",
                    dir.host.display(),
                    dir.guest
                );
            }
        }
        if self.nested_grants {
            return Ok(());
        }
        for outer in self
            .dirs
            .iter()
            .filter(|d| d.access == DirAccess::ReadWrite)
        {
            for inner in &self.dirs {
                if std::ptr::eq(outer, inner) || !inner.host.starts_with(&outer.host) {
                    continue;
                }
                anyhow::bail!(
                    "the grant of {} as {} lies inside the writable grant of {} as {}: \
                     through {} the guest could replace it; grant one of them, or allow \
                     nested grants knowingly (Policy::allow_nested_grants)",
                    inner.host.display(),
                    inner.guest,
                    outer.host.display(),
                    outer.guest,
                    outer.guest,
                );
            }
        }
        Ok(())
    }

    /// Start every instance from a snapshot taken after `init` ran once
    /// ([`PreInit`] says when a snapshot is refused). Off by default.
    pub fn pre_initialize(mut self, mode: PreInit) -> Self {
        self.pre_init = mode;
        self
    }

    /// Whether instances start from a snapshot taken after `init`.
    pub fn pre_initialize_value(&self) -> PreInit {
        self.pre_init
    }

    /// What the policy grants that a snapshot taken with nothing granted
    /// would miss: every grant, and its arguments, named.
    pub(crate) fn snapshot_blockers(&self) -> Vec<String> {
        let mut granted: Vec<String> = self.grants().iter().map(ToString::to_string).collect();
        if !self.args.is_empty() {
            granted.push(format!("{} argument(s)", self.args.len()));
        }
        granted
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

    /// Let the guest open TCP connections to `addr` (and only to it; the
    /// implicit bind of the connecting socket to the wildcard address is
    /// part of it). Without any network grant the guest has no network at
    /// all. This grants no name lookup, no listening and no UDP: those are
    /// [`allow_name_lookup`](Self::allow_name_lookup),
    /// [`allow_listen`](Self::allow_listen) and [`allow_udp`](Self::allow_udp).
    pub fn allow_connect(mut self, addr: SocketAddr) -> Self {
        Arc::make_mut(&mut self.net).connect.push(addr);
        self
    }

    /// Let the guest bind a TCP socket to the local address `addr`, listen
    /// on it and accept connections (port 0 here: any port of that IP).
    pub fn allow_listen(mut self, addr: SocketAddr) -> Self {
        Arc::make_mut(&mut self.net).listen.push(addr);
        self
    }

    /// Let the guest send UDP datagrams to `addr` and receive them from it.
    pub fn allow_udp(mut self, addr: SocketAddr) -> Self {
        Arc::make_mut(&mut self.net).udp.push(addr);
        self
    }

    /// Let the guest resolve names through `wasi:sockets/ip-name-lookup`.
    /// Any name: a lookup is a query the host's resolver sends on the
    /// guest's behalf, so it is also a channel out (to whoever serves the
    /// queried domain), even when no connection may follow. Some guest
    /// libcs (wasi-libc's `getaddrinfo`) resolve IP literals through it too.
    pub fn allow_name_lookup(mut self) -> Self {
        Arc::make_mut(&mut self.net).name_lookup = true;
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
        &self.net.connect
    }

    /// Every capability this policy grants, one [`Grant`] each: what a
    /// swap compares ([`Reach`](crate::reach::Reach)). Limits (memory,
    /// deadline, fuel) and the values of variables are not capabilities
    /// and are not listed.
    pub fn grants(&self) -> Vec<Grant> {
        let mut grants: Vec<Grant> = self
            .dirs
            .iter()
            .map(|d| Grant::Dir {
                host: d.host.clone(),
                guest: d.guest.clone(),
                write: d.access == DirAccess::ReadWrite,
            })
            .collect();
        grants.extend(self.env.iter().map(|(key, _)| Grant::Env(key.clone())));
        grants.extend(self.inherit_env.iter().cloned().map(Grant::InheritEnv));
        grants.extend(self.net.connect.iter().copied().map(Grant::Connect));
        grants.extend(self.net.listen.iter().copied().map(Grant::Listen));
        grants.extend(self.net.udp.iter().copied().map(Grant::Udp));
        if self.net.name_lookup {
            grants.push(Grant::NameLookup);
        }
        grants
    }

    /// The WASI context for one new instance: exactly what was granted; and
    /// the log streams standing for its stdout and stderr, if they go to the
    /// log (to tag them anew once the plugin's identity is known).
    pub(crate) fn wasi_ctx(&self, label: &Arc<str>) -> anyhow::Result<(WasiCtx, Vec<GuestOutput>)> {
        let (mut builder, outputs) = self.wasi_builder(label)?;
        Ok((builder.build(), outputs))
    }

    /// [`wasi_ctx`](Self::wasi_ctx) before it is built, for a store that
    /// needs more (a snapshot's, whose clocks and random numbers count
    /// their reads).
    pub(crate) fn wasi_builder(
        &self,
        label: &Arc<str>,
    ) -> anyhow::Result<(WasiCtxBuilder, Vec<GuestOutput>)> {
        let mut builder = WasiCtxBuilder::new();
        let mut outputs = Vec::new();
        match self.output {
            Output::Log => {
                let stdout = GuestOutput::new(label.clone(), Stream::Stdout, self.output_limit);
                let stderr = GuestOutput::new(label.clone(), Stream::Stderr, self.output_limit);
                builder.stdout(stdout.clone()).stderr(stderr.clone());
                outputs = vec![stdout, stderr];
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
            let grant = || format!("granting directory {} as {}", dir.host.display(), dir.guest);
            let handle = dir.handle_path().with_context(grant)?;
            builder
                .preopened_dir(&handle, &dir.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(grant)?;
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
        let net = &self.net;
        if **net != NetGrants::default() {
            builder
                .allow_ip_name_lookup(net.name_lookup)
                .allow_tcp(!net.connect.is_empty() || !net.listen.is_empty())
                .allow_udp(!net.udp.is_empty());
            let net = net.clone();
            builder.socket_addr_check(move |addr, use_| {
                let ok = net.permits(addr, use_);
                Box::pin(async move { ok })
            });
        }
        Ok((builder, outputs))
    }

    /// The `log` import's budget for one store: the output limit.
    pub(crate) fn guest_log(&self) -> GuestLog {
        GuestLog::new(self.output_limit)
    }

    /// The limiter for one store; `total` adds up the linear memory of
    /// every store of one plugin.
    pub(crate) fn limits(&self, total: Arc<Tally>) -> Limits {
        Limits {
            memory: self.memory_limit,
            table_elements: self.table_elements,
            instances: self.instances,
            hit: None,
            memory_bytes: 0,
            table_total: 0,
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
        /// What the instance would have held with the growth, in bytes,
        /// summed over all its memories.
        requested: usize,
    },
    /// It asked for more table elements than the policy allows.
    Table {
        /// The cap, in elements.
        limit: usize,
        /// What the instance would have held with the growth, in elements,
        /// summed over all its tables.
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
/// linear memory and table elements the store holds.
///
/// A store holds one component instance, so the caps bound the **sum** over
/// every linear memory (and every table) of every core instance inside it:
/// the program's, the WASI adapter's, any shim's. wasmtime calls
/// [`memory_growing`](ResourceLimiter::memory_growing) once per memory
/// when it is created (with `current` 0) and again on every `memory.grow`,
/// so the running sum sees every byte from a memory's first page on.
pub(crate) struct Limits {
    memory: usize,
    table_elements: usize,
    instances: usize,
    pub(crate) hit: Option<LimitHit>,
    /// Linear memory of this store, in bytes: every memory, summed.
    pub(crate) memory_bytes: usize,
    /// Elements of every table of this store, summed.
    table_total: usize,
    /// The store's linear memory, summed over the plugin's stores.
    total: Arc<Tally>,
}

impl Limits {
    /// Let the store's memories grow `bytes` past the policy's cap: for
    /// wasmtime-wizer's accessors, which grow each memory by a page to
    /// read it, after the guest's own code has run (`snapshot.rs`).
    pub(crate) fn allow_more_memory(&mut self, bytes: usize) {
        self.memory = self.memory.saturating_add(bytes);
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        self.total.sub(self.memory_bytes);
    }
}

/// What a store would hold if one of its memories or tables went from
/// `current` to `desired`, when that growth is allowed under `cap`.
///
/// A growth past the memory's or table's own declared `maximum` is left to
/// wasmtime, which refuses it after asking (so it is not counted). Any other
/// growth the limiter allows is counted even if wasmtime then fails it (the
/// OS out of memory): the sum errs on the side of the cap.
fn grow(held: usize, current: usize, desired: usize, maximum: Option<usize>, cap: usize) -> Growth {
    if maximum.is_some_and(|max| desired > max) {
        return Growth::Refused;
    }
    // `current` is part of `held` (it was counted when it was allowed), so
    // this never underflows; saturate anyway rather than wrap.
    let after = held.saturating_sub(current).saturating_add(desired);
    if after > cap {
        Growth::OverCap { requested: after }
    } else {
        Growth::Allowed { after }
    }
}

enum Growth {
    Allowed { after: usize },
    OverCap { requested: usize },
    Refused,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match grow(self.memory_bytes, current, desired, maximum, self.memory) {
            Growth::Allowed { after } => {
                let grown = after.saturating_sub(self.memory_bytes);
                self.memory_bytes = after;
                self.total.add(grown);
                Ok(true)
            }
            Growth::OverCap { requested } => {
                self.hit = Some(LimitHit::Memory {
                    limit: self.memory,
                    requested,
                });
                Ok(false)
            }
            // wasmtime refuses it itself, past asking us.
            Growth::Refused => Ok(true),
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match grow(
            self.table_total,
            current,
            desired,
            maximum,
            self.table_elements,
        ) {
            Growth::Allowed { after } => {
                self.table_total = after;
                Ok(true)
            }
            Growth::OverCap { requested } => {
                self.hit = Some(LimitHit::Table {
                    limit: self.table_elements,
                    requested,
                });
                Ok(false)
            }
            Growth::Refused => Ok(true),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_network_use_needs_its_own_grant() {
        let peer = addr("127.0.0.1:6379");
        let wildcard = addr("0.0.0.0:0");
        let connect = NetGrants {
            connect: vec![peer],
            ..NetGrants::default()
        };
        assert!(connect.permits(peer, SocketAddrUse::TcpConnect));
        assert!(
            connect.permits(wildcard, SocketAddrUse::TcpBind),
            "the implicit bind of a connect"
        );
        assert!(!connect.permits(addr("127.0.0.1:6380"), SocketAddrUse::TcpConnect));
        // The review's hole: the implicit bind's wildcard admitted a listen
        // on every interface.
        assert!(!connect.permits(wildcard, SocketAddrUse::TcpListen));
        assert!(!connect.permits(addr("0.0.0.0:4000"), SocketAddrUse::TcpListen));
        assert!(!connect.permits(peer, SocketAddrUse::UdpSend));
        assert!(!connect.permits(wildcard, SocketAddrUse::UdpBind));
        assert!(!connect.permits(peer, SocketAddrUse::TcpAccept));

        let listen = NetGrants {
            listen: vec![addr("127.0.0.1:0")],
            ..NetGrants::default()
        };
        assert!(listen.permits(addr("127.0.0.1:0"), SocketAddrUse::TcpBind));
        assert!(listen.permits(addr("127.0.0.1:41000"), SocketAddrUse::TcpListen));
        assert!(!listen.permits(addr("0.0.0.0:41000"), SocketAddrUse::TcpListen));
        assert!(!listen.permits(wildcard, SocketAddrUse::TcpBind));
        assert!(!listen.permits(peer, SocketAddrUse::TcpConnect));

        let udp = NetGrants {
            udp: vec![peer],
            ..NetGrants::default()
        };
        assert!(udp.permits(wildcard, SocketAddrUse::UdpBind));
        assert!(udp.permits(peer, SocketAddrUse::UdpSend));
        assert!(udp.permits(peer, SocketAddrUse::UdpReceive));
        assert!(!udp.permits(addr("127.0.0.1:53"), SocketAddrUse::UdpSend));
        assert!(!udp.permits(peer, SocketAddrUse::TcpConnect));
    }

    #[test]
    fn grants_are_opened_when_added_and_nesting_is_checked() {
        let root = std::env::temp_dir().join(format!("wasmplug-policy-{}", std::process::id()));
        let inner = root.join("a").join("b");
        std::fs::create_dir_all(&inner).unwrap();
        let missing = Policy::default().preopen_dir(root.join("nope"), "/x", DirAccess::ReadOnly);
        let err = missing.check().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("/x"), "{err}");

        let nested = Policy::default()
            .preopen_dir(&inner, "/b", DirAccess::ReadOnly)
            .preopen_dir(root.join("a"), "/a", DirAccess::ReadWrite);
        let err = nested.check().unwrap_err().to_string();
        assert!(err.contains("/a") && err.contains("/b"), "{err}");
        assert!(nested.clone().allow_nested_grants().check().is_ok());
        // The same directory twice, once writable: nested too.
        let twice = Policy::default()
            .preopen_dir(&inner, "/w", DirAccess::ReadWrite)
            .preopen_dir(&inner, "/r", DirAccess::ReadOnly);
        assert!(twice.check().is_err());

        // The grant is the directory as opened: renaming it keeps the handle.
        let policy = Policy::default().preopen_dir(&inner, "/b", DirAccess::ReadOnly);
        std::fs::rename(&inner, root.join("a").join("moved")).unwrap();
        assert!(policy.check().is_ok());
        assert!(policy.dirs()[0].handle_path().is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }

    const MIB: usize = 1 << 20;

    fn limits(memory: usize, tables: usize) -> Limits {
        let policy = Policy::default().memory_limit(memory).table_limit(tables);
        policy.limits(Arc::default())
    }

    #[test]
    fn the_memory_cap_bounds_the_sum_of_every_memory() {
        let mut l = limits(64 * MIB, 10);
        // Two memories created (current 0), then each grown.
        assert!(l.memory_growing(0, 16 * MIB, None).unwrap());
        assert!(l.memory_growing(0, 16 * MIB, None).unwrap());
        assert!(l.memory_growing(16 * MIB, 32 * MIB, None).unwrap());
        assert_eq!(l.memory_bytes, 48 * MIB);
        // The second memory to 32 MiB would make 64 MiB + 16 MiB.
        assert!(!l.memory_growing(16 * MIB, 48 * MIB, None).unwrap());
        assert_eq!(
            l.hit,
            Some(LimitHit::Memory {
                limit: 64 * MIB,
                requested: 80 * MIB
            })
        );
        assert_eq!(l.memory_bytes, 48 * MIB);
        // Up to the cap exactly is allowed.
        assert!(l.memory_growing(16 * MIB, 32 * MIB, None).unwrap());
        assert_eq!(l.memory_bytes, 64 * MIB);
        assert!(!l.memory_growing(0, 64 * 1024, None).unwrap());
    }

    #[test]
    fn a_growth_past_the_memorys_own_maximum_is_not_counted() {
        let mut l = limits(64 * MIB, 10);
        assert!(l.memory_growing(0, MIB, Some(2 * MIB)).unwrap());
        // wasmtime refuses this one itself after asking.
        assert!(l.memory_growing(MIB, 3 * MIB, Some(2 * MIB)).unwrap());
        assert_eq!(l.memory_bytes, MIB);
        assert_eq!(l.hit, None);
    }

    #[test]
    fn the_table_cap_bounds_the_sum_of_every_table() {
        let mut l = limits(64 * MIB, 10);
        assert!(l.table_growing(0, 4, None).unwrap());
        assert!(l.table_growing(0, 4, None).unwrap());
        assert!(!l.table_growing(4, 7, None).unwrap());
        assert_eq!(
            l.hit,
            Some(LimitHit::Table {
                limit: 10,
                requested: 11
            })
        );
        assert!(l.table_growing(4, 6, None).unwrap());
    }

    #[test]
    fn a_dropped_store_gives_its_memory_back_to_the_plugins_total() {
        let total = Arc::new(Tally::default());
        let mut l = Policy::default().limits(total.clone());
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert_eq!(total.get(), 2 * MIB);
        drop(l);
        assert_eq!(total.get(), 0);
    }
}
