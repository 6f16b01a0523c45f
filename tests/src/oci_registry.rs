//! A real OCI registry for the tests: the Debian package `docker-registry`
//! (CNCF distribution 2.8), started on a free loopback port with its own
//! temporary storage, and stopped (killed) when dropped. No mock.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token_service::{self, Asked, TokenService};
use crate::TempDir;

/// Where Debian installs the registry server.
const BINARY: &str = "docker-registry";

/// A running registry.
pub struct OciRegistry {
    child: Option<Child>,
    addr: String,
    dir: TempDir,
    /// The one login it accepts, when it asks for one.
    login: Option<(String, String)>,
    /// The token service it sends clients to, when it asks for tokens.
    tokens: Option<TokenService>,
}

impl OciRegistry {
    /// Start a registry on a free loopback port.
    ///
    /// # Panics
    /// When `docker-registry` is not installed (with the command that
    /// installs it) or does not come up within 10 s (with its log).
    pub fn start() -> OciRegistry {
        Self::start_as(None)
    }

    /// Start a registry that accepts only `user` and `password`, asked for
    /// with a `Basic` challenge (its `htpasswd` auth, bcrypt).
    pub fn start_with_login(user: &str, password: &str) -> OciRegistry {
        Self::start_as(Some((user.to_string(), password.to_string())))
    }

    /// Start a registry that asks for bearer tokens (a `Bearer` challenge),
    /// from a token service of the tests' own ([`TokenService`]) that
    /// grants them to `user` and `password` only, as Docker Hub, GHCR or
    /// Harbor do. The registry checks every token itself.
    pub fn start_with_token_service(user: &str, password: &str) -> OciRegistry {
        let dir = TempDir::new("oci-registry");
        let tokens = TokenService::start(user, password, &dir.path().join("token-ca.pem"));
        Self::start_in(dir, None, Some(tokens))
    }

    /// What the token service was asked, when there is one.
    pub fn token_requests(&self) -> Vec<Asked> {
        self.tokens
            .as_ref()
            .map(TokenService::asked)
            .unwrap_or_default()
    }

    fn start_as(login: Option<(String, String)>) -> OciRegistry {
        Self::start_in(TempDir::new("oci-registry"), login, None)
    }

    fn start_in(
        dir: TempDir,
        login: Option<(String, String)>,
        tokens: Option<TokenService>,
    ) -> OciRegistry {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut registry = OciRegistry {
            child: None,
            addr,
            dir,
            login,
            tokens,
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("config.yml");
        let auth = match (&self.login, &self.tokens) {
            (None, Some(tokens)) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                tokens.realm(),
                token_service::SERVICE,
                token_service::ISSUER,
                self.dir.path().join("token-ca.pem").display()
            ),
            (None, None) => String::new(),
            (Some((user, password)), _) => {
                let htpasswd = self.dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, 4).expect("a bcrypt hash");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("writing htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: wasmplug-tests\n    path: {}\n",
                    htpasswd.display()
                )
            }
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {}\n{auth}",
                self.storage().display(),
                self.addr
            ),
        )
        .expect("writing the registry config");
        let log = std::fs::File::create(self.log_path()).expect("creating the registry log");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{BINARY}` ({e}): the OCI registry tests need the Debian \
                     package docker-registry: `apt-get install -y docker-registry` \
                     (`just setup` installs it)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the registry did not answer on {} within 10 s; its log:\n{}",
            self.addr,
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    /// Whether `GET /v2/` answers: 200, or 401 when it asks for a login.
    fn answers(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let request = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
            || ((self.login.is_some() || self.tokens.is_some())
                && answer.starts_with("HTTP/1.1 401"))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/REPOSITORY:TAG`.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.addr)
    }

    /// The registry's storage directory (blobs under
    /// `docker/registry/v2/blobs/sha256/…/data`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file the registry keeps blob `digest` in.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Stop the server (its storage stays): the registry is unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the server and listen on its port instead: what the tests'
    /// own (hostile) server answers is then what a client of the registry
    /// gets.
    pub fn take_over(&mut self) -> TcpListener {
        self.stop();
        TcpListener::bind(&self.addr).expect("the registry's port")
    }

    /// Start it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- raw registry operations, as other tools (or an attacker) do them ----

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn raw() -> oci_client::Client {
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    crate::current_thread().block_on(f)
}

impl OciRegistry {
    fn at(&self, repository: &str, tag_or_digest: &str) -> oci_client::Reference {
        let (registry, repository) = (self.addr.clone(), repository.to_string());
        if tag_or_digest.starts_with("sha256:") {
            oci_client::Reference::with_digest(registry, repository, tag_or_digest.into())
        } else {
            oci_client::Reference::with_tag(registry, repository, tag_or_digest.into())
        }
    }

    /// The manifest at a tag or digest, as bytes.
    pub fn manifest(&self, repository: &str, at: &str) -> Vec<u8> {
        let anonymous = oci_client::secrets::RegistryAuth::Anonymous;
        block_on(raw().pull_manifest_raw(&self.at(repository, at), &anonymous, &[MANIFEST]))
            .unwrap_or_else(|e| panic!("pulling the manifest {repository}:{at}: {e}"))
            .0
            .to_vec()
    }

    /// Store `body` as the manifest at a tag or digest.
    pub fn put_manifest(&self, repository: &str, at: &str, body: Vec<u8>) {
        let reference = self.at(repository, at);
        let client = raw();
        block_on(async {
            let anonymous = oci_client::secrets::RegistryAuth::Anonymous;
            client.store_auth_if_needed(&self.addr, &anonymous).await;
            client
                .push_manifest_raw(&reference, body, MANIFEST.parse().expect("valid"))
                .await
        })
        .unwrap_or_else(|e| panic!("pushing the manifest {repository}:{at}: {e}"));
    }

    /// Point `tag` at the manifest `digest` (what `crane tag` does).
    pub fn retag(&self, repository: &str, digest: &str, tag: &str) {
        let body = self.manifest(repository, digest);
        self.put_manifest(repository, tag, body);
    }

    /// The digest of the one layer of the manifest `digest`.
    pub fn layer_digest(&self, repository: &str, digest: &str) -> String {
        let body = self.manifest(repository, digest);
        let manifest: serde_json::Value = serde_json::from_slice(&body).expect("a JSON manifest");
        manifest["layers"][0]["digest"]
            .as_str()
            .expect("a layer digest")
            .to_string()
    }

    /// Push an artefact of any shape under `tag`: `config_media_type` over
    /// `{}`, and `layers` (media type, bytes).
    pub fn push_raw(
        &self,
        repository: &str,
        tag: &str,
        config_media_type: &str,
        layers: &[(&str, &[u8])],
    ) {
        let layers: Vec<oci_client::client::ImageLayer> = layers
            .iter()
            .map(|(m, d)| oci_client::client::ImageLayer::new(d.to_vec(), m.to_string(), None))
            .collect();
        let config =
            oci_client::client::Config::new(b"{}".to_vec(), config_media_type.to_string(), None);
        let anonymous = oci_client::secrets::RegistryAuth::Anonymous;
        block_on(raw().push(&self.at(repository, tag), &layers, config, &anonymous, None))
            .unwrap_or_else(|e| panic!("pushing {repository}:{tag}: {e}"));
    }
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Write a new key pair under `dir`; returns the paths (private, public).
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, wasmplug::oci::SigningKey) {
    let key = wasmplug::oci::SigningKey::generate().expect("a key");
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&private, key.to_pem().expect("pem")).expect("writing a key");
    std::fs::write(&public, key.verifying_key().to_pem().expect("pem")).expect("writing a key");
    (private, public, key)
}
