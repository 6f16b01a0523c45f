//! Registry logins, each sent only to the registry it was given for.
//!
//! A password for one registry must never reach another: a service that
//! follows tags in two registries would otherwise hand the first one's
//! password to the second the moment it asked (`Basic`), or to its token
//! service. So logins are kept by registry and looked up by the registry a
//! reference names; a registry with no login is spoken to anonymously.
//!
//! They can be read from a Docker `config.json` (what `docker login`,
//! `oras login` and `crane auth login` write, and what a Kubernetes
//! `imagePullSecret` holds as `.dockerconfigjson`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;

/// The largest Docker config read: far above any real one, and a file
/// claiming to be one but larger is refused before it is parsed.
const MAX_CONFIG: u64 = 4 << 20;

/// Registry logins, by registry (`host` or `host:port`).
///
/// Each login is sent only to its own registry (and to the token service
/// that registry names in a `Bearer` challenge), never to another. Docker
/// Hub's names (`docker.io`, `index.docker.io`, `registry-1.docker.io`,
/// `https://index.docker.io/v1/`) are one registry.
///
/// `Debug` shows the registries and users, never a password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    logins: BTreeMap<String, Login>,
}

#[derive(Clone, PartialEq, Eq)]
struct Login {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.logins.iter().map(|(registry, login)| {
                    (registry, format!("{} (password hidden)", login.user))
                }),
            )
            .finish()
    }
}

impl Credentials {
    /// No logins: every registry is spoken to anonymously.
    pub fn new() -> Self {
        Credentials::default()
    }

    /// These credentials with `user` and `password` (or a token as the
    /// password) for `registry`, replacing any login it had.
    pub fn with(mut self, registry: &str, user: &str, password: &str) -> Self {
        self.insert(registry, user, password);
        self
    }

    /// Set `user` and `password` for `registry`, replacing any login it had.
    pub fn insert(&mut self, registry: &str, user: &str, password: &str) {
        self.logins.insert(
            registry_key(registry),
            Login {
                user: user.to_string(),
                password: password.to_string(),
            },
        );
    }

    /// The user and password for `registry`, if it has a login.
    pub fn get(&self, registry: &str) -> Option<(&str, &str)> {
        self.logins
            .get(&registry_key(registry))
            .map(|l| (l.user.as_str(), l.password.as_str()))
    }

    /// The registries with a login.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.logins.keys().map(String::as_str)
    }

    /// Whether there is no login at all.
    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }

    /// The logins of a Docker `config.json` at `path`: each entry of its
    /// `auths` with an `auth` (base64 of `user:password`) or a `username`
    /// and `password`. A registry is its key's host (`host:port`), as
    /// Docker reads it: keys naming one host twice (`quay.io/org-a` and
    /// `quay.io/org-b`) keep the first login, with a warning. Logins kept
    /// by a credential helper (`credHelpers`, `credsStore`) or as an
    /// identity token are not used (wasmplug runs no helper program): a
    /// warning names the registries left without a login because of it.
    ///
    /// # Errors
    /// When the file cannot be read, is larger than 4 MiB, is not JSON,
    /// or an entry's `auth` is not base64 of `user:password`. The message
    /// names the file and the entry.
    pub fn from_docker_config(path: &Path) -> anyhow::Result<Self> {
        let context = || format!("reading the registry logins in {}", path.display());
        let file = std::fs::File::open(path).with_context(context)?;
        let text = read_bounded(file).with_context(context)?;
        Self::parse_docker_config(&text).with_context(context)
    }

    /// The Docker config a Docker client would read, if there is one:
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn docker_config_path() -> Option<PathBuf> {
        let dir = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".docker")
            }
        };
        Some(dir.join("config.json"))
    }

    fn parse_docker_config(text: &[u8]) -> anyhow::Result<Self> {
        let config: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| anyhow!("not a Docker config.json: {e}"))?;
        let Some(config) = config.as_object() else {
            bail!("not a Docker config.json: expected a JSON object");
        };
        let none = serde_json::Map::new();
        let auths = match config.get("auths") {
            None | Some(serde_json::Value::Null) => &none,
            Some(serde_json::Value::Object(auths)) => auths,
            Some(_) => bail!("not a Docker config.json: `auths` is not an object of registries"),
        };
        let mut credentials = Credentials::new();
        // Registries whose login is where wasmplug does not look.
        let mut elsewhere: Vec<(String, String)> = Vec::new();
        for (key, entry) in auths {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            // An identity token comes with a placeholder `auth` (a user,
            // no password): the token is the login, and it is not used.
            let (user, password) = if field("identitytoken").is_some() {
                elsewhere.push((key.clone(), "an identity token".into()));
                continue;
            } else if let Some(auth) = field("auth") {
                decode_auth(auth).with_context(|| format!("`auths.{key}.auth`"))?
            } else if let (Some(user), Some(password)) = (field("username"), field("password")) {
                (user.to_string(), password.to_string())
            } else {
                continue;
            };
            if let Some((first, _)) = credentials.get(key) {
                tracing::warn!(
                    target: "wasmplug::oci",
                    "registry logins: `{key}` names the registry `{}` again; its first login \
                     (user `{first}`) is kept: a login is for a whole registry",
                    registry_key(key),
                );
                continue;
            }
            credentials.insert(key, &user, &password);
        }
        if let Some(helpers) = config.get("credHelpers").and_then(|h| h.as_object()) {
            for (key, helper) in helpers {
                let helper = helper.as_str().unwrap_or("?");
                elsewhere.push((key.clone(), format!("credential helper `{helper}`")));
            }
        }
        elsewhere.retain(|(key, _)| credentials.get(key).is_none());
        if !elsewhere.is_empty() {
            let named: Vec<String> = elsewhere
                .iter()
                .map(|(key, how)| format!("`{key}` ({how})"))
                .collect();
            tracing::warn!(
                target: "wasmplug::oci",
                "registry logins: {} kept where wasmplug does not look (it runs no credential \
                 helper): spoken to anonymously",
                named.join(", ")
            );
        }
        if let Some(store) = config.get("credsStore").and_then(|s| s.as_str()) {
            // Docker Desktop sets one on every machine: not worth a warning
            // on every command.
            tracing::debug!(
                target: "wasmplug::oci",
                "registry logins: credsStore `{store}` is not run; registries without a login in \
                 `auths` are spoken to anonymously"
            );
        }
        Ok(credentials)
    }
}

fn read_bounded(file: std::fs::File) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut text = Vec::new();
    file.take(MAX_CONFIG + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_CONFIG {
        bail!("larger than {MAX_CONFIG} bytes");
    }
    Ok(text)
}

/// `auth` of a Docker config entry: base64 of `user:password`.
fn decode_auth(auth: &str) -> anyhow::Result<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        // The decoder's error would quote a byte of the secret.
        .map_err(|_| anyhow!("not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| anyhow!("not UTF-8 once decoded"))?;
    let Some((user, password)) = decoded.split_once(':') else {
        bail!("expected base64 of `user:password`, and it has no `:`");
    };
    if user.is_empty() {
        bail!("expected base64 of `user:password`, and the user is empty");
    }
    Ok((user.to_string(), password.to_string()))
}

/// The one name of a registry: a Docker config's key (`https://host/v1/`)
/// or a reference's registry (`host:port`), lower-cased, with Docker Hub's
/// names made one.
pub(crate) fn registry_key(registry: &str) -> String {
    let bare = registry
        .trim()
        .strip_prefix("https://")
        .or_else(|| registry.trim().strip_prefix("http://"))
        .unwrap_or(registry.trim());
    let host = bare.split('/').next().unwrap_or(bare).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => "index.docker.io".into(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_login_is_found_only_under_its_own_registry() {
        let creds = Credentials::new()
            .with("registry.a:5000", "ops", "s3cret")
            .with("docker.io", "hub", "hubpass");
        assert_eq!(creds.get("registry.a:5000"), Some(("ops", "s3cret")));
        assert_eq!(creds.get("REGISTRY.A:5000"), Some(("ops", "s3cret")));
        // Another port is another registry.
        assert_eq!(creds.get("registry.a"), None);
        assert_eq!(creds.get("registry.a:5001"), None);
        assert_eq!(creds.get("registry.b:5000"), None);
        // A name that merely begins or ends like it is another registry.
        assert_eq!(creds.get("registry.a:5000.evil"), None);
        assert_eq!(creds.get("evil.registry.a:5000"), None);
        for hub in [
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            assert_eq!(creds.get(hub), Some(("hub", "hubpass")), "{hub}");
        }
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hubpass"),
            "{shown}"
        );
        assert!(
            shown.contains("ops") && shown.contains("registry.a:5000"),
            "{shown}"
        );
    }

    #[test]
    fn a_docker_config_gives_its_auths_and_skips_what_helpers_keep() {
        let config = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": { "auth": b64("hub:hub:pass:with:colons") },
                "registry.a:5000": { "username": "ops", "password": "s3cret" },
                "helped.example": { "auth": "" },
                // As ACR writes it: a placeholder user and no password.
                "oauth.example": {
                    "auth": b64("00000000-0000-0000-0000-000000000000:"),
                    "identitytoken": "refresh",
                },
                // Podman's keys by namespace: one registry, the first kept.
                "quay.io/org-a": { "username": "a", "password": "pa" },
                "quay.io/org-b": { "username": "b", "password": "pb" },
            },
            "credsStore": "desktop",
            "credHelpers": { "gcr.io": "gcloud" },
        });
        let creds = Credentials::parse_docker_config(config.to_string().as_bytes()).unwrap();
        // Only the first `:` splits: a password may hold more.
        assert_eq!(
            creds.get("docker.io"),
            Some(("hub", "hub:pass:with:colons"))
        );
        assert_eq!(creds.get("registry.a:5000"), Some(("ops", "s3cret")));
        assert_eq!(creds.get("helped.example"), None);
        assert_eq!(creds.get("oauth.example"), None);
        assert_eq!(creds.get("gcr.io"), None);
        assert_eq!(creds.get("quay.io"), Some(("a", "pa")));
        assert_eq!(creds.registries().count(), 3);

        // No `auths` at all is no login, not an error.
        assert!(Credentials::parse_docker_config(b"{}").unwrap().is_empty());
    }

    #[test]
    fn a_malformed_docker_config_is_refused_naming_what_was_expected() {
        let refused = |text: &str| {
            format!(
                "{:#}",
                Credentials::parse_docker_config(text.as_bytes()).unwrap_err()
            )
        };
        assert!(refused("{\"auths\": {").contains("EOF"), "truncated");
        assert!(refused("[]").contains("expected a JSON object"));
        // No byte of a secret is quoted.
        let quoted = refused(r#"{"auths": {"r.example": {"auth": "s3cr#t=="}}}"#);
        assert!(
            !quoted.contains('#') && !quoted.contains("s3cr"),
            "{quoted}"
        );
        assert!(refused("{\"auths\": 3}").contains("`auths` is not an object"));
        let bad = refused(r#"{"auths": {"r.example": {"auth": "%%%"}}}"#);
        assert!(
            bad.contains("auths.r.example.auth") && bad.contains("not base64"),
            "{bad}"
        );
        let no_colon = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("nocolon")
        );
        assert!(refused(&no_colon).contains("has no `:`"));
        let no_user = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64(":pw")
        );
        assert!(refused(&no_user).contains("user is empty"));
    }

    #[test]
    fn a_docker_config_file_is_named_in_its_errors_and_bounded() {
        let dir = std::env::temp_dir().join(format!("wasmplug-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, "{\"auths\": ").unwrap();
        let err = format!("{:#}", Credentials::from_docker_config(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");

        std::fs::write(&path, vec![b' '; (MAX_CONFIG + 1) as usize]).unwrap();
        let err = format!("{:#}", Credentials::from_docker_config(&path).unwrap_err());
        assert!(err.contains("larger than"), "{err}");

        let missing = dir.join("absent.json");
        let err = format!(
            "{:#}",
            Credentials::from_docker_config(&missing).unwrap_err()
        );
        assert!(err.contains("absent.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
