//! `wasmplug push`, `pull`, `sign`, `key generate`, and the flags of
//! `run --follow`: components in OCI registries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use wasmplug::oci::{
    Client, ClientOptions, Credentials, FollowOptions, LayerCache, SigningKey, Trust,
};

use crate::flags::parse_duration;

/// How registries are reached and whom to trust.
#[derive(Args, Debug, Default)]
pub struct OciFlags {
    /// A public key (PEM, P-256, as `cosign.pub`) whose signature an
    /// artefact needs before it is loaded. Repeatable: any one suffices.
    #[arg(long = "trust", value_name = "KEY.pub")]
    trust: Vec<PathBuf>,
    /// Accept artefacts without checking signatures (instead of --trust).
    #[arg(long, conflicts_with = "trust")]
    unsigned: bool,
    /// A registry (`HOST:PORT`) to reach over plain HTTP; loopback
    /// registries always are. Repeatable.
    #[arg(long = "plain-http", value_name = "HOST:PORT")]
    plain_http: Vec<String>,
    /// Where pulled layers are kept by digest (default
    /// `$XDG_CACHE_HOME/wasmplug/oci` or `~/.cache/wasmplug/oci`).
    #[arg(long = "layer-cache", value_name = "DIR")]
    layer_cache: Option<PathBuf>,
    /// Registry logins, as a Docker `config.json` (what `docker login`
    /// writes, or a Kubernetes pull secret's `.dockerconfigjson`). Default:
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, if there.
    #[arg(long = "registry-config", value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

impl OciFlags {
    /// The client options for a command on `references`. Logins come from
    /// the Docker config (`--registry-config`, else Docker's own when there
    /// is one), then from `WASMPLUG_REGISTRY_USER` and
    /// `WASMPLUG_REGISTRY_PASSWORD`, which are for one registry: the one
    /// `WASMPLUG_REGISTRY` names, else the one `references` name.
    pub fn client(&self, references: &[&str]) -> anyhow::Result<ClientOptions> {
        let mut options = ClientOptions {
            plain_http: self.plain_http.clone(),
            ..ClientOptions::default()
        };
        if let Some(dir) = &self.layer_cache {
            options.cache = Some(LayerCache::new(dir));
        }
        options.credentials = match &self.registry_config {
            Some(path) => Credentials::from_docker_config(path)?,
            // Docker's own, found rather than named: one that cannot be
            // read costs its logins, not the command (an anonymous pull
            // never needed it).
            None => match Credentials::docker_config_path().filter(|p| p.is_file()) {
                Some(path) => Credentials::from_docker_config(&path).unwrap_or_else(|e| {
                    tracing::warn!(target: "wasmplug::oci", "{e:#}: no logins from it");
                    Credentials::new()
                }),
                None => Credentials::new(),
            },
        };
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (
            var("WASMPLUG_REGISTRY_USER"),
            var("WASMPLUG_REGISTRY_PASSWORD"),
        ) {
            (Some(user), Some(password)) => {
                let registry = env_login_registry(var("WASMPLUG_REGISTRY"), references)?;
                options.credentials.insert(&registry, &user, &password);
            }
            (None, None) => {}
            (Some(_), None) => {
                bail!("WASMPLUG_REGISTRY_USER is set, WASMPLUG_REGISTRY_PASSWORD is unset or empty")
            }
            (None, Some(_)) => {
                bail!("WASMPLUG_REGISTRY_PASSWORD is set, WASMPLUG_REGISTRY_USER is unset or empty")
            }
        }
        Ok(options)
    }

    /// Whom to trust; one of --trust or --unsigned is required.
    pub fn trust(&self) -> anyhow::Result<Trust> {
        if self.unsigned {
            return Ok(Trust::Unsigned);
        }
        if self.trust.is_empty() {
            bail!(
                "pulled components must be signed: give the signers' public keys with \
                 --trust KEY.pub (or --unsigned to accept anything the registry serves)"
            );
        }
        Trust::keys_from_files(&self.trust)
    }
}

/// The registry the login in `WASMPLUG_REGISTRY_USER` is for: `named`
/// (`WASMPLUG_REGISTRY`), else the one registry `references` name. Never
/// every registry: a password sent to a registry it is not for is leaked.
fn env_login_registry(named: Option<String>, references: &[&str]) -> anyhow::Result<String> {
    if let Some(registry) = named {
        return Ok(registry);
    }
    let mut registries = Vec::new();
    for reference in references {
        let parsed = wasmplug::oci::parse_reference(reference)?;
        let registry = parsed.resolve_registry().to_string();
        if !registries.contains(&registry) {
            registries.push(registry);
        }
    }
    match registries.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            bail!("WASMPLUG_REGISTRY_USER is set but no registry is named: set WASMPLUG_REGISTRY")
        }
        many => bail!(
            "WASMPLUG_REGISTRY_USER is one login, and these references name {} registries ({}): \
             set WASMPLUG_REGISTRY to the one it is for, or give each its login in a Docker \
             config (--registry-config)",
            many.len(),
            many.join(", ")
        ),
    }
}

/// `run --follow`'s flags.
#[derive(Args, Debug, Default)]
pub struct FollowFlags {
    /// Follow an OCI reference (`REGISTRY/REPOSITORY:TAG`): whenever the
    /// tag moves, pull, verify and swap in what it points to. Repeatable.
    #[arg(long = "follow", value_name = "REF")]
    pub follow: Vec<String>,
    /// How often each followed tag is looked at (± 20 %).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    poll: Duration,
    #[command(flatten)]
    oci: OciFlags,
}

impl FollowFlags {
    /// The follower options, or why they cannot be made.
    pub fn options(&self, allow_widening: bool) -> anyhow::Result<FollowOptions> {
        let mut options = FollowOptions::new(self.oci.trust()?).poll(self.poll);
        let references: Vec<&str> = self.follow.iter().map(String::as_str).collect();
        options.client = self.oci.client(&references)?;
        options.guard.widening = allow_widening;
        Ok(options)
    }
}

/// `wasmplug key`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a new P-256 key pair: PREFIX.key (private, PKCS#8 PEM,
    /// unencrypted, mode 0600) and PREFIX.pub (public, as cosign.pub).
    Generate {
        /// Where to write them, without extension.
        prefix: PathBuf,
    },
}

/// A runtime for one command's requests.
fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting an async runtime")?;
    Ok(rt.block_on(future))
}

/// `wasmplug push FILE REF [--sign KEY]`.
pub fn push(
    file: &Path,
    reference: &str,
    sign: Option<&Path>,
    oci: &OciFlags,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let key = sign.map(SigningKey::from_file).transpose()?;
    let client = Client::new(oci.client(&[reference])?);
    let pushed = block_on(client.push(reference, bytes, key.as_ref()))?
        .with_context(|| format!("pushing {}", file.display()))?;
    outln!("pushed {} as {}", file.display(), pushed.digest);
    if let Some(tag) = pushed.signature_tag {
        outln!("signed (signature under the tag {tag})");
    }
    Ok(ExitCode::SUCCESS)
}

/// `wasmplug pull REF [-o FILE]`.
pub fn pull(reference: &str, output: Option<&Path>, oci: &OciFlags) -> anyhow::Result<ExitCode> {
    let trust = oci.trust()?;
    let client = Client::new(oci.client(&[reference])?);
    let pulled = block_on(client.pull(reference, &trust))??;
    let output = match output {
        Some(path) => path.to_path_buf(),
        None => {
            let parsed = wasmplug::oci::parse_reference(reference)?;
            let stem = parsed
                .repository()
                .rsplit('/')
                .next()
                .unwrap_or("component")
                .to_string();
            PathBuf::from(format!("{stem}.wasm"))
        }
    };
    // Written beside and renamed: a watcher of the directory never sees
    // half a component.
    let tmp = output.with_extension("wasm.part");
    std::fs::write(&tmp, &pulled.bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &output).with_context(|| format!("writing {}", output.display()))?;
    let how = match &pulled.signed_by {
        Some(key) => format!("signed by {key}"),
        None => "signature not checked".to_string(),
    };
    outln!(
        "pulled {} ({}, {} bytes{}; {how}) to {}",
        reference,
        pulled.digest,
        pulled.bytes.len(),
        if pulled.from_cache {
            ", from the layer cache"
        } else {
            ""
        },
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `wasmplug sign REF --key KEY`.
pub fn sign(reference: &str, key: &Path, oci: &OciFlags) -> anyhow::Result<ExitCode> {
    let key = SigningKey::from_file(key)?;
    let client = Client::new(oci.client(&[reference])?);
    let digest = block_on(client.sign(reference, &key))??;
    outln!(
        "signed {reference} ({digest}) with {}",
        key.verifying_key().fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

/// `wasmplug key generate PREFIX`.
pub fn key(command: &KeyCommand) -> anyhow::Result<ExitCode> {
    let KeyCommand::Generate { prefix } = command;
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    for path in [&private, &public] {
        if path.exists() {
            bail!("{} exists; not overwritten", path.display());
        }
    }
    let key = SigningKey::generate()?;
    write_private(&private, key.to_pem()?.as_bytes())?;
    std::fs::write(&public, key.verifying_key().to_pem()?)
        .with_context(|| format!("writing {}", public.display()))?;
    outln!(
        "wrote {} (keep it secret) and {} ({})",
        private.display(),
        public.display(),
        key.verifying_key().fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// `wasmplug tag REF TAG`.
pub fn tag(reference: &str, tag: &str, oci: &OciFlags) -> anyhow::Result<ExitCode> {
    let client = Client::new(oci.client(&[reference])?);
    let digest = block_on(client.tag(reference, tag))??;
    outln!("tagged {digest} as {tag}");
    Ok(ExitCode::SUCCESS)
}
