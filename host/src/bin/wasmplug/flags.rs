//! Flags shared by the commands that run plugins: grants, limits, cache.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use wasmplug::policy::{DirAccess, PreInit};
use wasmplug::{runtime::RuntimeBuilder, Policy, Runtime, World};

/// What a plugin may use. Nothing unless granted.
#[derive(Args, Debug, Default)]
pub struct Grants {
    /// Give the plugin a host directory, read-only: `HOST[::GUEST]`
    /// (GUEST defaults to HOST). Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    dirs: Vec<(PathBuf, String)>,
    /// Like --dir, but the plugin may also write there.
    #[arg(long = "dir-rw", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    dirs_rw: Vec<(PathBuf, String)>,
    /// Set an environment variable: `KEY=VALUE`, or `KEY` to pass the
    /// host's value through. Repeatable.
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Cap each instance's linear memory: bytes, or with a unit (KiB, MiB,
    /// GiB; e.g. `64MiB`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<usize>,
    /// Deadline for each call (and for `init`), e.g. `500ms`, `2s`. It
    /// holds while the plugin is blocked in WASI too (a sleep, a read).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Let the plugin open TCP connections to `IP:PORT` (only there; no DNS,
    /// no listening, no UDP). Repeatable.
    #[arg(long = "connect", value_name = "IP:PORT")]
    connect: Vec<std::net::SocketAddr>,
    /// Let the plugin listen for TCP on the local `IP:PORT` (port 0: any
    /// port of that IP). Repeatable.
    #[arg(long = "listen", value_name = "IP:PORT")]
    listen: Vec<std::net::SocketAddr>,
    /// Let the plugin exchange UDP datagrams with `IP:PORT`. Repeatable.
    #[arg(long = "udp", value_name = "IP:PORT")]
    udp: Vec<std::net::SocketAddr>,
    /// Let the plugin resolve host names (DNS, any name).
    #[arg(long = "dns")]
    dns: bool,
    /// Allow a granted directory inside a writable one (refused by default:
    /// through the writable grant the plugin could rewrite the other).
    #[arg(long = "allow-nested-grants")]
    nested: bool,
    /// Start every instance from a snapshot taken after `init` ran once:
    /// `deterministic` (refused if `init` reads a clock or random numbers)
    /// or `freeze-clocks-and-entropy` (what it read is frozen into every
    /// instance; JavaScript and Python need it). Refused with any grant.
    #[arg(long = "pre-initialize", value_name = "MODE", value_parser = parse_pre_init)]
    pre_init: Option<PreInit>,
}

impl Grants {
    pub fn policy(&self) -> Policy {
        let mut policy = Policy::default();
        for (host, guest) in &self.dirs {
            policy = policy.preopen_dir(host, guest, DirAccess::ReadOnly);
        }
        for (host, guest) in &self.dirs_rw {
            policy = policy.preopen_dir(host, guest, DirAccess::ReadWrite);
        }
        for var in &self.env {
            policy = match var.split_once('=') {
                Some((key, value)) => policy.env(key, value),
                None => policy.inherit_env(var),
            };
        }
        if let Some(bytes) = self.memory {
            policy = policy.memory_limit(bytes);
        }
        if let Some(timeout) = self.timeout {
            policy = policy.deadline(timeout);
        }
        for addr in &self.connect {
            policy = policy.allow_connect(*addr);
        }
        for addr in &self.listen {
            policy = policy.allow_listen(*addr);
        }
        for addr in &self.udp {
            policy = policy.allow_udp(*addr);
        }
        if self.dns {
            policy = policy.allow_name_lookup();
        }
        if self.nested {
            policy = policy.allow_nested_grants();
        }
        if let Some(mode) = self.pre_init {
            policy = policy.pre_initialize(mode);
        }
        policy
    }
}

/// Where compiled code is kept between runs.
#[derive(Args, Debug)]
pub struct Cache {
    /// The compiled-code cache directory [default: $XDG_CACHE_HOME/wasmplug
    /// or ~/.cache/wasmplug]. It must be private: created 0700, refused if
    /// other users may write it. If it cannot be used, commands warn once
    /// and compile every time.
    #[arg(long, value_name = "DIR", env = "WASMPLUG_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Compile every time; neither read nor write the cache.
    #[arg(long, global = true, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// The cache failed once (and the user was warned): do not try again.
    #[arg(skip)]
    unusable: Cell<bool>,
}

impl Cache {
    /// The cache directory: `--cache-dir`, `WASMPLUG_CACHE_DIR`,
    /// `$XDG_CACHE_HOME/wasmplug` or `$HOME/.cache/wasmplug`. An empty or
    /// relative `XDG_CACHE_HOME` counts as unset (as the XDG spec says),
    /// and so does an empty `HOME`.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        let absolute = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|path| path.is_absolute())
        };
        self.cache_dir.clone().or_else(|| {
            let base =
                absolute("XDG_CACHE_HOME").or_else(|| Some(absolute("HOME")?.join(".cache")))?;
            Some(base.join("wasmplug"))
        })
    }

    /// A runtime for world `W` with this cache and `policy` as the default.
    /// When the cache cannot be used (not creatable, not writable, refused
    /// as not private), the first call warns on stderr and every call
    /// returns a runtime without it: the cache only saves time.
    pub fn runtime<W: World>(&self, policy: Policy) -> anyhow::Result<Runtime<W>> {
        self.runtime_with(policy, |builder| builder)
    }

    /// [`runtime`](Self::runtime), with `customize` applied to the builder
    /// (once per attempt: with the cache, and without it if that fails).
    pub fn runtime_with<W: World>(
        &self,
        policy: Policy,
        customize: impl Fn(RuntimeBuilder<W>) -> RuntimeBuilder<W>,
    ) -> anyhow::Result<Runtime<W>> {
        let builder = || customize(RuntimeBuilder::<W>::new().policy(policy.clone()));
        if let Some(dir) = self.dir().filter(|_| !self.unusable.get()) {
            match builder().cache_dir(dir).build() {
                Ok(runtime) => return Ok(runtime),
                Err(err) => {
                    self.unusable.set(true);
                    eprintln!(
                        "warning: running without the compiled-code cache (every load \
                         compiles): {err:#}"
                    );
                }
            }
        }
        builder().build()
    }

    /// A runtime for world `W` that must have the cache, and its directory.
    pub fn runtime_with_cache<W: World>(
        &self,
        policy: Policy,
    ) -> anyhow::Result<(Runtime<W>, PathBuf)> {
        let dir = self
            .dir()
            .context("no cache directory: pass --cache-dir or set WASMPLUG_CACHE_DIR (or HOME)")?;
        let runtime = RuntimeBuilder::<W>::new()
            .policy(policy)
            .cache_dir(&dir)
            .build()?;
        Ok((runtime, dir))
    }
}

fn parse_dir(arg: &str) -> Result<(PathBuf, String), String> {
    let (host, guest) = arg.split_once("::").unwrap_or((arg, arg));
    if host.is_empty() || guest.is_empty() {
        return Err("expected HOST or HOST::GUEST, e.g. `./data::/data`".into());
    }
    Ok((PathBuf::from(host), guest.to_string()))
}

fn parse_size(arg: &str) -> Result<usize, String> {
    let digits = arg.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &arg[digits.len()..];
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{arg}` is not a size: expected e.g. `65536`, `64KiB`, `64MiB`"))?;
    let scale: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown unit `{unit}`: use KiB, MiB or GiB")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{arg}` is too large"))
}

/// How new versions come to serve under `run --watch`.
#[derive(Args, Debug)]
pub struct RolloutFlags {
    /// Swap in at once a new version that imports interfaces (e.g.
    /// `wasi:sockets`) the version it replaces does not. Without it such a
    /// version is held, the old one goes on serving, and `approve NAME` or
    /// `refuse NAME` on stdin decides.
    #[arg(long)]
    pub allow_widening: bool,
    /// How long a replaced version stays loaded and warm, so that
    /// `rollback NAME` on stdin returns to it at once (`0s`: unloaded as
    /// soon as it is replaced).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub grace: Duration,
    /// Roll a new version out as a canary: it takes this share of calls
    /// (e.g. `10%`) beside the serving version, and is rolled back at once
    /// if its trap rate, error rate or p99 latency is worse, or promoted
    /// after --promote-after calls.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub canary: Option<f64>,
    /// The canary's calls before it is promoted (default 1000).
    #[arg(long, value_name = "CALLS", requires = "canary")]
    pub promote_after: Option<u64>,
}

impl RolloutFlags {
    /// The library's rollout for these flags.
    pub fn rollout(&self) -> wasmplug::canary::Rollout {
        use wasmplug::canary::{Canary, Rollout};
        let Some(share) = self.canary else {
            return Rollout::AllAtOnce;
        };
        let defaults = Canary::default();
        let promote_after_calls = self.promote_after.unwrap_or(defaults.promote_after_calls);
        Rollout::Canary(Canary {
            share,
            promote_after_calls,
            // Judge no later than promotion.
            min_calls: defaults.min_calls.min(promote_after_calls),
            ..defaults
        })
    }
}

fn parse_percent(arg: &str) -> Result<f64, String> {
    let number = arg.strip_suffix('%').unwrap_or(arg);
    match number.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        _ => Err(format!(
            "`{arg}` is not a share of calls: expected a percentage above 0 and up to 100, e.g. `10%`"
        )),
    }
}

pub fn parse_pre_init(arg: &str) -> Result<PreInit, String> {
    PreInit::from_name(arg).ok_or_else(|| {
        format!("`{arg}` is not a mode: expected `deterministic` or `freeze-clocks-and-entropy`")
    })
}

pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    humantime::parse_duration(arg)
        .map_err(|e| format!("`{arg}` is not a duration ({e}): expected e.g. `500ms`, `2s`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_dirs_parse_or_say_what_was_expected() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("500ms"));
        assert_eq!(
            parse_dir("./data::/data"),
            Ok((PathBuf::from("./data"), "/data".to_string()))
        );
        assert_eq!(
            parse_dir("/srv"),
            Ok((PathBuf::from("/srv"), "/srv".to_string()))
        );
        assert!(parse_dir("::/x").is_err());
    }
}
