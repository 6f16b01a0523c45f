//! Who a plugin is and where it came from: the [`Identity`] a guest gives
//! itself (checked here, before anything shows it) and the [`Source`] it
//! was loaded from.

use std::fmt;
use std::path::PathBuf;

use anyhow::anyhow;
use sha2::{Digest, Sha256};

use crate::error::PluginRef;

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

/// A character that does not show as itself: what the log escapes
/// ([`crate::log::misleads`]), and the zero-width characters, which a log
/// line may carry but a name must not (two names would look the same).
fn is_hidden(c: char) -> bool {
    crate::log::misleads(c)
        || matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2065}' | '\u{feff}')
}

/// Where a plugin was loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A component file.
    File(PathBuf),
    /// Bytes handed over in memory, with the label they were given.
    Bytes(String),
    /// An OCI reference followed by an [`oci::Follower`](crate::oci::Follower)
    /// (`REGISTRY/REPOSITORY:TAG`), as it was given.
    Oci(String),
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
            // `registry:5000/plugins/hello:stable` -> `hello`
            Source::Oci(reference) => {
                let path = reference.split('@').next().unwrap_or(reference);
                let last = path.rsplit('/').next().unwrap_or(path);
                last.split(':').next().unwrap_or(last).to_string()
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Bytes(label) => write!(f, "<bytes: {label}>"),
            Source::Oci(reference) => write!(f, "oci://{reference}"),
        }
    }
}

impl Source {
    /// How to name a plugin in an error before its identity is known.
    pub(crate) fn provisional_ref(&self) -> PluginRef {
        PluginRef {
            name: self.stem().into(),
            version: None,
            source: self.to_string().into(),
        }
    }
}

/// The SHA-256 of a component's bytes: what identifies compiled code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// The first 12 hex digits, enough to tell versions apart in a listing.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
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
