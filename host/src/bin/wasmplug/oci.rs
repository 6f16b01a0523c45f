//! `wasmplug push`, `pull`, `sign`, `key generate`, and the flags of
//! `run --follow`: components in OCI registries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use wasmplug::oci::{Client, ClientOptions, FollowOptions, LayerCache, SigningKey, Trust};

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
}

impl OciFlags {
    /// The client options: credentials from `WASMPLUG_REGISTRY_USER` and
    /// `WASMPLUG_REGISTRY_PASSWORD` when set.
    pub fn client(&self) -> ClientOptions {
        let mut options = ClientOptions {
            plain_http: self.plain_http.clone(),
            ..ClientOptions::default()
        };
        if let Some(dir) = &self.layer_cache {
            options.cache = Some(LayerCache::new(dir));
        }
        if let (Ok(user), Ok(password)) = (
            std::env::var("WASMPLUG_REGISTRY_USER"),
            std::env::var("WASMPLUG_REGISTRY_PASSWORD"),
        ) {
            options.basic_auth = Some((user, password));
        }
        options
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
        options.client = self.oci.client();
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
    let client = Client::new(oci.client());
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
    let client = Client::new(oci.client());
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
    let client = Client::new(oci.client());
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
    let client = Client::new(oci.client());
    let digest = block_on(client.tag(reference, tag))??;
    outln!("tagged {digest} as {tag}");
    Ok(ExitCode::SUCCESS)
}
