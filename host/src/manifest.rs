//! A plugin's manifest: what it *asks* for, in `<name>.toml` beside
//! `<name>.wasm`. The embedder decides what any manifest may grant, with an
//! [`Allowance`]; a request beyond it refuses the plugin at load, naming the
//! request. Nothing in a manifest can widen what the allowance permits.
//!
//! ```toml
//! env = ["LANG"]                                  # host variables to pass through
//! connect = ["127.0.0.1:6379"]                    # addresses it may connect to
//! memory_mb = 64                                  # linear memory cap
//! deadline_ms = 500                               # per-call deadline
//! pre_initialize = "deterministic"                # start instances from a snapshot
//! [[dirs]]
//! host = "data"                                   # relative to the manifest
//! guest = "/data"
//! write = false
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

use crate::policy::{DirAccess, PreInit};
use crate::Policy;

/// What a plugin asks for. See the module docs for the file format.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Host environment variables to pass through.
    #[serde(default)]
    pub env: Vec<String>,
    /// Directories to grant.
    #[serde(default)]
    pub dirs: Vec<ManifestDir>,
    /// Addresses to connect to.
    #[serde(default)]
    pub connect: Vec<SocketAddr>,
    /// Linear memory cap, in MiB.
    pub memory_mb: Option<u64>,
    /// Per-call deadline, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Start every instance from a snapshot taken after `init`
    /// (`"deterministic"` or `"freeze-clocks-and-entropy"`, see
    /// [`PreInit`]), if the allowance permits it.
    pub pre_initialize: Option<PreInit>,
}

/// A directory a manifest asks for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestDir {
    /// The host directory, relative to the manifest's own directory.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Whether the guest may write.
    #[serde(default)]
    pub write: bool,
}

/// What manifests may grant: the embedder's ceiling. [`Allowance::none`]
/// (the default) lets a manifest ask only for tighter limits.
#[derive(Debug, Clone)]
pub struct Allowance {
    env: Vec<String>,
    dirs: Vec<(PathBuf, DirAccess)>,
    connect: Vec<SocketAddr>,
    max_memory: Option<usize>,
    max_deadline: Option<Duration>,
    max_pre_init: PreInit,
}

impl Default for Allowance {
    fn default() -> Self {
        Self::none()
    }
}

impl Allowance {
    /// Manifests may grant nothing, only tighten limits.
    pub fn none() -> Self {
        Allowance {
            env: Vec::new(),
            dirs: Vec::new(),
            connect: Vec::new(),
            max_memory: None,
            max_deadline: None,
            max_pre_init: PreInit::Off,
        }
    }

    /// Manifests may pass through host variable `key`.
    pub fn env(mut self, key: impl Into<String>) -> Self {
        self.env.push(key.into());
        self
    }

    /// Manifests may grant directories inside `root`, with at most `access`.
    pub fn dirs_under(mut self, root: impl Into<PathBuf>, access: DirAccess) -> Self {
        self.dirs.push((root.into(), access));
        self
    }

    /// Manifests may allow connections to `addr`.
    pub fn connect(mut self, addr: SocketAddr) -> Self {
        self.connect.push(addr);
        self
    }

    /// Manifests may raise the memory cap up to `bytes`.
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Manifests may raise the deadline up to `deadline`.
    pub fn max_deadline(mut self, deadline: Duration) -> Self {
        self.max_deadline = Some(deadline);
        self
    }

    /// Manifests may ask for pre-initialization up to `mode`:
    /// [`PreInit::Deterministic`] admits only that,
    /// [`PreInit::FreezeClocksAndEntropy`] both.
    pub fn pre_initialize(mut self, mode: PreInit) -> Self {
        self.max_pre_init = mode;
        self
    }
}

impl Manifest {
    /// The manifest beside a component file (`x.wasm` → `x.toml`), if any.
    pub fn beside(component: &Path) -> PathBuf {
        component.with_extension("toml")
    }

    /// Read and parse a manifest file. An error names the file and, for a
    /// file that is not a valid manifest, gives the TOML message with its
    /// line and column but never the file's text: a manifest path may be
    /// made to point at a file that is not a manifest (a secret).
    ///
    /// # Errors
    /// When the file cannot be read, is not UTF-8 or not a valid manifest: the
    /// message names the file and, for TOML errors, the line and column, never
    /// the file's text.
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse a manifest already read from `path` (named in errors only), as
    /// [`load`](Self::load) does.
    pub(crate) fn from_bytes(bytes: &[u8], path: &Path) -> anyhow::Result<Manifest> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            anyhow!(
                "manifest {} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.valid_up_to()
            )
        })?;
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(text, span.start);
                    format!(" at line {line}, column {column}")
                })
                .unwrap_or_default();
            anyhow!(
                "manifest {} is not a valid manifest{at}: {}",
                path.display(),
                redact(e.message())
            )
        })
    }

    /// `base` plus what this manifest asks for, if `allowance` permits all
    /// of it; otherwise an error naming the first request refused.
    /// `manifest_dir` anchors the manifest's relative directory paths.
    ///
    /// # Errors
    /// When the manifest asks for more than `allowance` permits (naming the
    /// request), or a directory it asks for cannot be opened or lies outside
    /// every allowed root.
    pub fn apply(
        &self,
        base: Policy,
        allowance: &Allowance,
        manifest_dir: &Path,
    ) -> anyhow::Result<Policy> {
        let mut policy = base;
        for key in &self.env {
            if !allowance.env.contains(key) {
                bail!(
                    "manifest asks for environment variable `{key}`, which the host does not allow"
                );
            }
            policy = policy.inherit_env(key.clone());
        }
        for dir in &self.dirs {
            let wanted = if dir.write {
                DirAccess::ReadWrite
            } else {
                DirAccess::ReadOnly
            };
            // Open the directory first, then judge where the open handle
            // really is: a path checked and opened later could be swapped
            // for a symlink in between.
            let requested = manifest_dir.join(&dir.host);
            let granted = policy.preopen_dir(&requested, dir.guest.clone(), wanted);
            let grant = granted.dirs().last().expect("a grant was just added");
            if let Some(why) = grant.open_error() {
                bail!("manifest asks for directory {}: {why}", requested.display());
            }
            let host = grant.host.clone();
            let permitted = allowance.dirs.iter().any(|(root, access)| {
                let inside = root.canonicalize().is_ok_and(|root| host.starts_with(root));
                inside && (wanted == DirAccess::ReadOnly || *access == DirAccess::ReadWrite)
            });
            if !permitted {
                bail!(
                    "manifest asks for {} access to {}, which the host does not allow",
                    if dir.write { "read-write" } else { "read-only" },
                    host.display()
                );
            }
            policy = granted;
        }
        for addr in &self.connect {
            if !allowance.connect.contains(addr) {
                bail!("manifest asks to connect to {addr}, which the host does not allow");
            }
            policy = policy.allow_connect(*addr);
        }
        if let Some(mb) = self.memory_mb {
            let bytes = usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            let ceiling = allowance.max_memory.unwrap_or(policy.memory_limit_value());
            if bytes > ceiling {
                bail!(
                    "manifest asks for {mb} MiB of memory; the host allows at most {} MiB",
                    ceiling >> 20
                );
            }
            policy = policy.memory_limit(bytes);
        }
        if let Some(ms) = self.deadline_ms {
            let wanted = Duration::from_millis(ms);
            let ceiling = allowance.max_deadline.or(policy.deadline_value());
            if ceiling.is_some_and(|c| wanted > c) {
                bail!(
                    "manifest asks for a {ms} ms deadline; the host allows at most {:?}",
                    ceiling.unwrap()
                );
            }
            policy = policy.deadline(wanted);
        }
        if let Some(mode) = self.pre_initialize {
            if mode > allowance.max_pre_init {
                bail!(
                    "manifest asks for pre_initialize = \"{}\"; the host allows at most \"{}\"",
                    mode.name(),
                    allowance.max_pre_init.name()
                );
            }
            policy = policy.pre_initialize(mode);
        }
        Ok(policy)
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The manifest's own keys: the only quoted words an error may repeat.
const KEYS: [&str; 12] = [
    "env",
    "dirs",
    "connect",
    "memory_mb",
    "deadline_ms",
    "host",
    "guest",
    "write",
    "pre_initialize",
    "off",
    "deterministic",
    "freeze-clocks-and-entropy",
];

/// A TOML or serde message on one line, with every quoted or backquoted
/// fragment that is not one of the manifest's keys replaced by `…`: serde
/// repeats the values and unknown keys it read ("invalid type: string
/// \"hunter2\"", "unknown field `ROOT_PASSWORD`"), which would echo the
/// content of a file that is not a manifest.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['`', '"', '\'']) {
        let quote = rest[start..].chars().next().unwrap_or('`');
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                let inner = &after[..end];
                if KEYS.contains(&inner) || inner.chars().all(|c| !c.is_alphanumeric()) {
                    out.push(quote);
                    out.push_str(inner);
                    out.push(quote);
                } else {
                    out.push(quote);
                    out.push('…');
                    out.push(quote);
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push(quote);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn an_empty_allowance_lets_a_manifest_only_tighten_limits() {
        let m = manifest("memory_mb = 16\ndeadline_ms = 100");
        let policy = m
            .apply(Policy::default(), &Allowance::none(), Path::new("."))
            .unwrap();
        assert_eq!(policy.memory_limit_value(), 16 << 20);
        assert_eq!(policy.deadline_value(), Some(Duration::from_millis(100)));

        let err = manifest("memory_mb = 100000").apply(
            Policy::default(),
            &Allowance::none(),
            Path::new("."),
        );
        assert!(err.unwrap_err().to_string().contains("at most 256 MiB"));
        let err = manifest(r#"env = ["HOME"]"#).apply(
            Policy::default(),
            &Allowance::none(),
            Path::new("."),
        );
        assert!(err.unwrap_err().to_string().contains("`HOME`"));
        let err = manifest(r#"connect = ["10.0.0.1:80"]"#).apply(
            Policy::default(),
            &Allowance::none(),
            Path::new("."),
        );
        assert!(err.unwrap_err().to_string().contains("10.0.0.1:80"));
    }

    #[test]
    fn a_manifest_asks_for_pre_initialization_only_as_far_as_the_allowance_goes() {
        let apply = |text: &str, allowance: &Allowance| {
            manifest(text).apply(Policy::default(), allowance, Path::new("."))
        };
        let deterministic = r#"pre_initialize = "deterministic""#;
        let freeze = r#"pre_initialize = "freeze-clocks-and-entropy""#;
        let err = apply(deterministic, &Allowance::none()).unwrap_err();
        assert!(
            err.to_string().contains(r#"the host allows at most "off""#),
            "{err}"
        );
        let some = Allowance::none().pre_initialize(PreInit::Deterministic);
        let policy = apply(deterministic, &some).unwrap();
        assert_eq!(policy.pre_initialize_value(), PreInit::Deterministic);
        let err = apply(freeze, &some).unwrap_err();
        assert!(
            err.to_string().contains("freeze-clocks-and-entropy"),
            "{err}"
        );
        let all = Allowance::none().pre_initialize(PreInit::FreezeClocksAndEntropy);
        let policy = apply(freeze, &all).unwrap();
        assert_eq!(
            policy.pre_initialize_value(),
            PreInit::FreezeClocksAndEntropy
        );
        // A manifest without the key leaves the base policy's choice.
        let base = Policy::default().pre_initialize(PreInit::Deterministic);
        let policy = manifest("").apply(base, &Allowance::none(), Path::new("."));
        assert_eq!(
            policy.unwrap().pre_initialize_value(),
            PreInit::Deterministic
        );
        // A value the manifest format does not know is refused at parse.
        assert!(toml::from_str::<Manifest>(r#"pre_initialize = "always""#).is_err());
    }

    #[test]
    fn a_manifest_dir_must_lie_inside_an_allowed_root_with_allowed_access() {
        let root = std::env::temp_dir().join(format!("wasmplug-manifest-{}", std::process::id()));
        std::fs::create_dir_all(root.join("data")).unwrap();
        let allowance = Allowance::none().dirs_under(&root, DirAccess::ReadOnly);
        let ro = manifest("[[dirs]]\nhost = \"data\"\nguest = \"/data\"");
        assert_eq!(
            ro.apply(Policy::default(), &allowance, &root)
                .unwrap()
                .dirs()
                .len(),
            1
        );

        let rw = manifest("[[dirs]]\nhost = \"data\"\nguest = \"/data\"\nwrite = true");
        assert!(rw
            .apply(Policy::default(), &allowance, &root)
            .unwrap_err()
            .to_string()
            .contains("read-write"));

        // `..` resolves outside the allowed root: refused.
        let escape = manifest("[[dirs]]\nhost = \"..\"\nguest = \"/up\"");
        assert!(escape
            .apply(Policy::default(), &allowance, &root.join("data"))
            .is_ok());
        assert!(escape.apply(Policy::default(), &allowance, &root).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_manifest_is_never_echoed() {
        for text in [
            "ROOT_PASSWORD=hunter2\n",
            "ROOT_PASSWORD = \"hunter2\"\n",
            "env = \"hunter2\"\n",
            "memory_mb = 1\n[hunter2]\nx = 1\n",
            "memory_mb = 1\nhunter2 hunter2\n",
            "deadline_ms = 'hunter2'\n",
        ] {
            let err = Manifest::from_bytes(text.as_bytes(), Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("ROOT_PASSWORD"),
                "{text:?}: {err}"
            );
            assert!(
                err.contains("x.toml is not a valid manifest at line"),
                "{err}"
            );
        }
        let err = Manifest::from_bytes(b"memory_mb = 1\nmemroy_mb = 2\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 2, column 1"), "{err}");
        assert!(err.contains("expected one of `env`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Manifest>("memory = 5").is_err());
    }
}
