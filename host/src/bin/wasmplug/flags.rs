//! Flags shared by the commands that run plugins: grants, limits, cache.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wasmplug::{DirAccess, Policy, Runtime, RuntimeBuilder, World};

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
    /// Deadline for each call (and for `init`), e.g. `500ms`, `2s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
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
        policy
    }
}

/// Where compiled code is kept between runs.
#[derive(Args, Debug)]
pub struct Cache {
    /// The compiled-code cache directory [default: $XDG_CACHE_HOME/wasmplug
    /// or ~/.cache/wasmplug].
    #[arg(long, value_name = "DIR", env = "WASMPLUG_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Compile every time; neither read nor write the cache.
    #[arg(long, global = true, conflicts_with = "cache_dir")]
    no_cache: bool,
}

impl Cache {
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("wasmplug"))
        })
    }

    /// A runtime for world `W` with this cache and `policy` as the default.
    pub fn runtime<W: World>(&self, policy: Policy) -> anyhow::Result<Runtime<W>> {
        let builder = RuntimeBuilder::<W>::new().policy(policy);
        match self.dir() {
            Some(dir) => builder.cache_dir(dir),
            None => builder,
        }
        .build()
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

fn parse_duration(arg: &str) -> Result<Duration, String> {
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
