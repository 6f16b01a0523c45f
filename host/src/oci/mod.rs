//! Plugins from an OCI registry: push and pull components as Wasm OCI
//! artefacts, sign and verify them, and follow a tag
//! ([`Follower`]) so that every replica of a service converges on the
//! version the tag points to.
//!
//! The layout is the CNCF Wasm OCI artefact's, as `wkg`, Spin and wasmCloud
//! push it (crate `oci-wasm`): an image manifest whose config has the media
//! type `application/vnd.wasm.config.v0+json` and whose one layer is the
//! component, `application/wasm`. Signatures are cosign's keyed signatures
//! ([`sign`]). A registry on a loopback address is spoken to over plain
//! HTTP (as Docker does for `127.0.0.0/8`); every other over HTTPS unless
//! [`ClientOptions::plain_http`] names it.
//!
//! The client is async (reqwest's, and `oci-client`'s for blob pulls); a
//! [`Follower`] runs it on a thread of its own, so a synchronous embedder
//! never sees it.

mod cache;
mod credentials;
mod follow;
pub mod sign;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    OciDescriptor, OciImageManifest, IMAGE_CONFIG_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use oci_wasm::ToConfig as _;
use reqwest::{header, Method, StatusCode};

pub use cache::LayerCache;
pub use credentials::Credentials;
pub use follow::{FollowOptions, FollowStatus, Follower};
pub use sign::{SigningKey, Trust, VerifyingKey};

use crate::error::Error;
use cache::sha256_digest;

/// The media type of a Wasm artefact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = oci_wasm::WASM_MANIFEST_CONFIG_MEDIA_TYPE;
/// The media type of a Wasm artefact's layer: the component's bytes.
pub const WASM_LAYER_MEDIA_TYPE: &str = oci_wasm::WASM_LAYER_MEDIA_TYPE;
/// The media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = oci_wasm::WASM_MANIFEST_MEDIA_TYPE;

/// The largest component pulled unless [`ClientOptions::max_size`] says
/// otherwise: 256 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 256 << 20;
/// The most signature layers read for one artefact.
const MAX_SIGNATURES: usize = 16;
/// The largest signature payload read.
const MAX_PAYLOAD: i64 = 64 << 10;
/// The largest manifest read: 4 MiB, the size the OCI distribution spec
/// asks every registry to accept. A manifest declared or sent larger is
/// refused after reading no more than this.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// The most of an error answer's body kept for its message.
const MAX_ERROR_BODY: usize = 4 << 10;
/// The largest answer read from a registry's token service.
const MAX_TOKEN_ANSWER: usize = 64 << 10;
/// The most redirects followed for one request (reqwest's default).
const MAX_REDIRECTS: usize = 10;
/// How long what a registry asked for (a token, a password or nothing) is
/// kept before asking again: under the 60 s the distribution spec's token
/// service grants when it says nothing. A request refused with 401 asks
/// again at once.
const TOKEN_KEPT: Duration = Duration::from_secs(50);
/// What a tag may point to, as `Accept` when resolving it.
const ANY_MANIFEST: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// How a [`Client`] reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host:port`) spoken to over plain HTTP besides the
    /// loopback ones.
    pub plain_http: Vec<String>,
    /// Logins by registry, each sent only to its own registry (and to the
    /// token service it names); a registry without one is spoken to
    /// anonymously. [`Credentials::from_docker_config`] reads Docker's.
    pub credentials: Credentials,
    /// Where pulled layers are kept by digest; `None` keeps nothing.
    pub cache: Option<LayerCache>,
    /// The largest component accepted; a manifest that declares a larger
    /// layer, or a blob that runs past it, is refused.
    pub max_size: u64,
    /// The longest a connection or a read may take.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: Vec::new(),
            credentials: Credentials::new(),
            cache: LayerCache::default_dir().map(LayerCache::new),
            max_size: DEFAULT_MAX_SIZE,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference as asked for.
    pub reference: String,
    /// The manifest's digest: what a signature signs and a tag points to.
    pub digest: String,
    /// The component layer's digest.
    pub layer_digest: String,
    /// The component.
    pub bytes: Vec<u8>,
    /// The fingerprint of the key whose signature was accepted; `None`
    /// under [`Trust::Unsigned`].
    pub signed_by: Option<String>,
    /// Whether the layer came from the local cache.
    pub from_cache: bool,
}

/// What a push made.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pushed to.
    pub reference: String,
    /// The manifest's digest (`REPOSITORY@DIGEST` pulls exactly this).
    pub digest: String,
    /// The tag its signature is stored under, when it was signed.
    pub signature_tag: Option<String>,
}

/// A failure, and whether trying again may help.
pub(crate) struct Fault {
    /// The registry could not be reached or did not answer as expected
    /// for now (network, 5xx, no such tag yet, not signed yet).
    pub(crate) transient: bool,
    pub(crate) cause: anyhow::Error,
}

impl Fault {
    fn refused(cause: anyhow::Error) -> Fault {
        Fault {
            transient: false,
            cause,
        }
    }

    fn transient(cause: anyhow::Error) -> Fault {
        Fault {
            transient: true,
            cause,
        }
    }

    pub(crate) fn into_error(self, reference: &str, digest: Option<&str>) -> Error {
        Error::Oci {
            reference: reference.to_string(),
            digest: digest.map(str::to_string),
            refused: !self.transient,
            cause: self.cause,
        }
    }
}

impl From<OciDistributionError> for Fault {
    fn from(e: OciDistributionError) -> Self {
        Fault::transient(anyhow!(e))
    }
}

/// Parse `reference` (`REGISTRY/REPOSITORY[:TAG][@DIGEST]`).
///
/// # Errors
/// [`Error::Oci`] (refused) naming what is wrong with it.
pub fn parse_reference(reference: &str) -> Result<Reference, Error> {
    reference.parse::<Reference>().map_err(|e| Error::Oci {
        reference: reference.to_string(),
        digest: None,
        refused: true,
        cause: anyhow!("not an OCI reference (REGISTRY/REPOSITORY[:TAG][@DIGEST]): {e}"),
    })
}

/// A connection to OCI registries.
///
/// Blob pulls go through `oci-client`, into a buffer bounded by the size
/// the manifest declares. Manifests and every push are sent here, over one
/// HTTP client: `oci-client` reads a manifest, and a registry's error
/// answers, whole into memory, so a registry (or anyone in its place)
/// answering an endless one would grow the host without bound; and on a
/// push it sends the registry's login along to wherever the registry says
/// to upload. Here a manifest is refused past [`MAX_MANIFEST_SIZE`], an
/// error answer is read no further than its first 4 KiB, and a login or
/// token goes only to its own registry (and the token service it names).
pub struct Client {
    options: ClientOptions,
    /// One `oci-client` per registry: each remembers its own tokens.
    clients: Mutex<HashMap<String, oci_client::Client>>,
    /// The HTTP client manifests are read with; made on first use.
    http: OnceLock<reqwest::Client>,
    /// Per `registry/repository` and [`Op`]: what the registry last asked
    /// for, and when.
    tokens: Mutex<HashMap<(String, Op), (Access, Instant)>>,
}

/// What a request to a registry is for: the scope a token is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    /// Reading manifests and blobs.
    Pull,
    /// Uploading blobs and putting manifests (and reading, as a push does).
    Push,
}

impl Op {
    /// The actions of a token's `repository:NAME:ACTIONS` scope.
    fn actions(self) -> &'static str {
        match self {
            Op::Pull => "pull",
            Op::Push => "pull,push",
        }
    }
}

/// What a registry asks of a request, as its `/v2/` answer says.
#[derive(Clone)]
enum Access {
    /// Nothing: no credentials are sent.
    Anonymous,
    /// The registry's login ([`ClientOptions::credentials`]), asked for
    /// with a `Basic` challenge: only then is it sent.
    Basic,
    /// A token from its token service.
    Bearer(String),
}

/// A manifest as a registry answered it.
struct Manifest {
    /// The body; empty for a `HEAD`.
    body: Vec<u8>,
    /// The `Docker-Content-Digest` header, when sent.
    digest: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `options`.
    pub fn new(options: ClientOptions) -> Client {
        Client {
            options,
            clients: Mutex::new(HashMap::new()),
            http: OnceLock::new(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Its options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Hand `client` (`oci-client`'s for `registry`) the login of
    /// `registry`, or nothing when it has none.
    async fn log_in(&self, client: &oci_client::Client, registry: &str) {
        let auth = match self.options.credentials.get(registry) {
            Some((user, password)) => RegistryAuth::Basic(user.into(), password.into()),
            None => RegistryAuth::Anonymous,
        };
        client.store_auth_if_needed(registry, &auth).await;
    }

    /// Whether `registry` is spoken to over plain HTTP.
    fn plain(&self, registry: &str) -> bool {
        is_loopback(registry) || self.options.plain_http.iter().any(|r| r == registry)
    }

    /// `registry`'s base URL, `https://host[:port]` (or `http://`).
    fn base(&self, registry: &str) -> String {
        let scheme = if self.plain(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{registry}")
    }

    /// The URL of the manifest `reference` names (by digest, else by tag).
    fn manifest_url(&self, reference: &Reference) -> String {
        format!(
            "{}/v2/{}/manifests/{}",
            self.base(reference.resolve_registry()),
            reference.repository(),
            reference
                .digest()
                .or_else(|| reference.tag())
                .unwrap_or("latest"),
        )
    }

    /// `request` to `registry` itself, carrying what it asked for: its
    /// token, its login, or nothing.
    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        registry: &str,
        access: &Access,
    ) -> reqwest::RequestBuilder {
        match (access, self.options.credentials.get(registry)) {
            (Access::Bearer(token), _) => request.bearer_auth(token),
            (Access::Basic, Some((user, password))) => request.basic_auth(user, Some(password)),
            _ => request,
        }
    }

    /// Send the request `make` builds (`what`, for messages: `METHOD URL`)
    /// to `reference`'s registry, carrying what the registry asks for
    /// `op`. Refused with 401, it is sent once more with what the registry
    /// asks anew (a token expired early or was revoked).
    async fn send(
        &self,
        reference: &Reference,
        op: Op,
        what: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Fault> {
        let http = self.http()?;
        let registry = reference.resolve_registry();
        let mut fresh = false;
        loop {
            let access = self.access(reference, op, fresh).await?;
            let response = self
                .authorize(make(&http), registry, &access)
                .send()
                .await
                .map_err(|e| Fault::transient(anyhow!("{what}: {}", e.without_url())))?;
            if response.status() == StatusCode::UNAUTHORIZED && !fresh {
                fresh = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// The `oci-client` for `reference`'s registry.
    fn client(&self, reference: &Reference) -> oci_client::Client {
        let registry = reference.resolve_registry().to_string();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(registry.clone())
            .or_insert_with(|| {
                oci_client::Client::new(ClientConfig {
                    protocol: if self.plain(&registry) {
                        ClientProtocol::HttpsExcept(vec![registry])
                    } else {
                        ClientProtocol::Https
                    },
                    connect_timeout: Some(self.options.timeout),
                    read_timeout: Some(self.options.timeout),
                    ..ClientConfig::default()
                })
            })
            .clone()
    }

    fn http(&self) -> Result<reqwest::Client, Fault> {
        if let Some(http) = self.http.get() {
            return Ok(http.clone());
        }
        // A whole request is bounded too, not only each read: a server
        // sending a byte every few seconds would otherwise hold a pull for
        // hours.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if downgrades(attempt.previous(), attempt.url()) {
                    attempt.error("a redirect from HTTPS to plain HTTP: refused")
                } else {
                    attempt.follow()
                }
            }))
            .connect_timeout(self.options.timeout)
            .read_timeout(self.options.timeout)
            .timeout(self.options.timeout * 4)
            .user_agent(concat!("wasmplug/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Fault::transient(anyhow!("no HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| http).clone())
    }

    /// What `op` on `reference`'s repository needs: what was learnt
    /// unless `fresh` or older than [`TOKEN_KEPT`], else the registry's
    /// `/v2/` answer: no challenge, a `Basic` one (the password is sent
    /// only then), or a `Bearer` one, whose token service is asked for a
    /// token of `op`'s scope here, its answer bounded, and never over
    /// plain HTTP for a registry spoken to over HTTPS. What pulls need is
    /// handed to `oci-client` for the blobs, so that it asks no token
    /// service itself.
    async fn access(&self, reference: &Reference, op: Op, fresh: bool) -> Result<Access, Fault> {
        let registry = reference.resolve_registry();
        let key = (format!("{registry}/{}", reference.repository()), op);
        let lock = || self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if !fresh {
            if let Some((access, _)) = lock().get(&key).filter(|(_, at)| at.elapsed() < TOKEN_KEPT)
            {
                return Ok(access.clone());
            }
        }
        let http = self.http()?;
        let plain = self.plain(registry);
        let url = format!("{}/v2/", self.base(registry));
        let answer = http
            .get(&url)
            .send()
            .await
            .map_err(|e| Fault::transient(anyhow!("GET {url}: {}", e.without_url())))?;
        let challenge = answer
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let unauthorized = answer.status() == StatusCode::UNAUTHORIZED;
        drop(answer);
        let scheme = challenge.split_whitespace().next().unwrap_or("");
        let access = if !unauthorized {
            Access::Anonymous
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Access::Bearer(
                self.bearer_token(reference, op, &url, &challenge[scheme.len()..], plain)
                    .await?,
            )
        } else if scheme.eq_ignore_ascii_case("basic")
            && self.options.credentials.get(registry).is_some()
        {
            Access::Basic
        } else {
            Access::Anonymous
        };
        // Pushes go out through `send`, not through `oci-client`.
        if op == Op::Pull {
            let client = self.client(reference);
            match &access {
                Access::Bearer(token) => {
                    let bearer = RegistryAuth::Bearer(token.clone());
                    // No network: oci-client keeps a given token as it is.
                    client
                        .auth(reference, &bearer, RegistryOperation::Pull)
                        .await?;
                }
                Access::Basic => self.log_in(&client, registry).await,
                Access::Anonymous => {}
            }
        }
        lock().insert(key, (access.clone(), Instant::now()));
        Ok(access)
    }

    /// A token for `op` on `reference` from the token service a `Bearer`
    /// challenge (its parameters: `params`) names, with the login of
    /// `reference`'s registry when it has one.
    async fn bearer_token(
        &self,
        reference: &Reference,
        op: Op,
        url: &str,
        params: &str,
        plain: bool,
    ) -> Result<String, Fault> {
        let params = challenge_params(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| Fault::transient(anyhow!("{url}: a Bearer challenge with no realm")))?;
        if !plain && !realm.starts_with("https://") {
            return Err(Fault::transient(anyhow!(
                "{url} sends for tokens to `{realm}`, not over HTTPS: refused"
            )));
        }
        let mut query = vec![(
            "scope",
            format!("repository:{}:{}", reference.repository(), op.actions()),
        )];
        if let Some(service) = params.get("service") {
            query.push(("service", service.clone()));
        }
        let mut request = self.http()?.get(realm.as_str()).query(&query);
        if let Some((user, password)) = self.options.credentials.get(reference.resolve_registry()) {
            request = request.basic_auth(user, Some(password));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| Fault::transient(anyhow!("GET {realm}: {}", e.without_url())))?;
        if !answer.status().is_success() {
            return Err(refusal(&format!("the token service at {realm}"), answer).await);
        }
        let body = body_within(answer, MAX_TOKEN_ANSWER, "token service's answer")
            .await
            .map_err(|f| Fault::transient(f.cause))?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                Fault::transient(anyhow!("the token service at {realm} answered no token"))
            })
    }

    /// `method` (`GET` or `HEAD`) on the manifest `reference` names,
    /// accepting `accept`; `None` when the registry has no such manifest.
    /// A body declared or sent past [`MAX_MANIFEST_SIZE`] is refused; one
    /// asked for by digest must hash to it.
    async fn manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
        method: Method,
    ) -> Result<Option<Manifest>, Fault> {
        let url = self.manifest_url(reference);
        let what = format!("{method} {url}");
        let accept = accept.join(", ");
        let response = self
            .send(reference, Op::Pull, &what, |http| {
                http.request(method.clone(), &url)
                    .header(header::ACCEPT, &accept)
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(refusal(&what, response).await);
        }
        let digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        if method == Method::HEAD {
            return Ok(Some(Manifest {
                body: Vec::new(),
                digest,
            }));
        }
        let body = body_within(response, MAX_MANIFEST_SIZE, "manifest").await?;
        if let Some(expected) = reference.digest() {
            // What is signed, what is pulled and what is compared are then
            // the same bytes.
            let actual = sha256_digest(&body);
            if actual != expected {
                return Err(Fault::refused(anyhow!(
                    "the registry answered a manifest that hashes to {actual}, not {expected}"
                )));
            }
        }
        Ok(Some(Manifest { body, digest }))
    }

    /// The digest `reference` points to now (one `HEAD` request; a
    /// reference with a digest is its own answer).
    ///
    /// # Errors
    /// [`Error::Oci`] when the reference does not parse or the registry
    /// does not answer with a digest.
    pub async fn resolve(&self, reference: &str) -> Result<String, Error> {
        self.parse_and_resolve(reference)
            .await
            .map(|(_, digest)| digest)
    }

    /// `reference` parsed, and the digest it points to now.
    async fn parse_and_resolve(&self, reference: &str) -> Result<(Reference, String), Error> {
        let parsed = parse_reference(reference)?;
        let digest = self
            .resolve_parsed(&parsed)
            .await
            .map_err(|f| f.into_error(reference, None))?;
        Ok((parsed, digest))
    }

    pub(crate) async fn resolve_parsed(&self, reference: &Reference) -> Result<String, Fault> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_string());
        }
        let no_tag = || Fault::transient(anyhow!("the registry has no such tag (yet)"));
        // A `HEAD` answers with the digest in a header; a registry that
        // leaves it out is asked for the manifest, which is hashed.
        // A registry or proxy that answers `HEAD` with an error (405, 501)
        // is asked with `GET` too.
        let head = match self.manifest(reference, ANY_MANIFEST, Method::HEAD).await {
            Ok(head) => head.ok_or_else(no_tag)?.digest,
            Err(fault) if fault.transient => None,
            Err(fault) => return Err(fault),
        };
        let digest = match head {
            Some(digest) => digest,
            None => {
                let got = self
                    .manifest(reference, ANY_MANIFEST, Method::GET)
                    .await?
                    .ok_or_else(no_tag)?;
                // The bytes are what counts, not what a header says of them.
                sha256_digest(&got.body)
            }
        };
        check_digest(&digest).map_err(Fault::transient)?;
        Ok(digest)
    }

    /// Pull the component `reference` points to, checked against `trust`
    /// before its bytes are returned: the manifest must be a Wasm artefact
    /// with one component layer, signed as `trust` requires, and the layer
    /// must hash to what the manifest says.
    ///
    /// # Errors
    /// [`Error::Oci`], with `refused` set when the artefact itself was
    /// refused (layout, signature, digest, size) rather than unreachable.
    pub async fn pull(&self, reference: &str, trust: &Trust) -> Result<Pulled, Error> {
        let (parsed, digest) = self.parse_and_resolve(reference).await?;
        self.pull_digest(&parsed, &digest, trust)
            .await
            .map(|mut pulled| {
                pulled.reference = reference.to_string();
                pulled
            })
            .map_err(|f| f.into_error(reference, Some(&digest)))
    }

    /// The manifest at `by_digest` (`digest` in a repository), checked
    /// against the digest, as its bytes, and its component layer: it must
    /// be a Wasm artefact whose one layer declares at most `max_size`
    /// bytes.
    async fn artefact(
        &self,
        by_digest: &Reference,
        digest: &str,
        max_size: u64,
    ) -> Result<(Vec<u8>, OciDescriptor), Fault> {
        let body = self
            .manifest(by_digest, &[MANIFEST_MEDIA_TYPE], Method::GET)
            .await?
            .ok_or_else(|| Fault::transient(anyhow!("the registry has no manifest {digest}")))?
            .body;
        let manifest: OciImageManifest = serde_json::from_slice(&body).map_err(|e| {
            Fault::refused(anyhow!("the manifest is not an OCI image manifest: {e}"))
        })?;
        let layer = wasm_layer(&manifest, max_size).map_err(Fault::refused)?;
        Ok((body, layer))
    }

    /// Pull the artefact `digest` of `reference`'s repository.
    pub(crate) async fn pull_digest(
        &self,
        reference: &Reference,
        digest: &str,
        trust: &Trust,
    ) -> Result<Pulled, Fault> {
        // Only sha256 digests, in their one spelling: what is signed, what
        // is pulled and what is compared are then the same string.
        check_digest(digest).map_err(Fault::refused)?;
        let by_digest = at_digest(reference, digest);
        let client = self.client(reference);
        // Checked against the digest asked for: the signature is over it.
        let (_, layer) = self
            .artefact(&by_digest, digest, self.options.max_size)
            .await?;

        // The signature first: nothing of the artefact is read before it
        // is trusted.
        let signed_by = match trust {
            Trust::Unsigned => None,
            Trust::Keys(_) => {
                let layers = self.signatures(reference, digest).await?;
                trust.check(digest, &layers).map_err(|e| {
                    if layers.is_empty() {
                        // Perhaps signed in a moment (`cosign sign` after
                        // the push): tried again.
                        Fault::transient(e)
                    } else {
                        Fault::refused(e)
                    }
                })?
            }
        };

        let cached = self
            .options
            .cache
            .as_ref()
            .and_then(|c| c.get(&layer.digest));
        let from_cache = cached.is_some();
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let bytes = self.blob(&client, &by_digest, &layer).await?;
                if let Some(cache) = &self.options.cache {
                    if let Err(e) = cache.put(&layer.digest, &bytes) {
                        tracing::warn!(target: "wasmplug::oci", "layer cache: {e:#}");
                    }
                }
                bytes
            }
        };
        Ok(Pulled {
            reference: by_digest.whole(),
            digest: digest.to_string(),
            layer_digest: layer.digest.clone(),
            bytes,
            signed_by,
            from_cache,
        })
    }

    /// A blob, no larger than it is declared, hashing to its digest.
    async fn blob(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        layer: &OciDescriptor,
    ) -> Result<Vec<u8>, Fault> {
        let limit = u64::try_from(layer.size).unwrap_or(0);
        let mut out = Bounded {
            buf: Vec::with_capacity(usize::try_from(limit.min(1 << 20)).unwrap_or(0)),
            limit,
        };
        client
            .pull_blob(reference, layer, &mut out)
            .await
            .map_err(|e| match e {
                OciDistributionError::IoError(io)
                    if io.kind() == std::io::ErrorKind::FileTooLarge =>
                {
                    Fault::refused(anyhow!(
                        "the blob {} is larger than the {} bytes its manifest declares",
                        layer.digest,
                        layer.size
                    ))
                }
                OciDistributionError::DigestError(d) => {
                    Fault::refused(anyhow!("the blob {} was tampered with: {d}", layer.digest))
                }
                other => Fault::from(other),
            })?;
        let actual = sha256_digest(&out.buf);
        if actual != layer.digest {
            return Err(Fault::refused(anyhow!(
                "the blob hashes to {actual}, not to {} as its manifest says: tampered with",
                layer.digest
            )));
        }
        Ok(out.buf)
    }

    /// The signature layers (payload, base64 signature) stored under the
    /// signature tag of `digest`; empty when there is none.
    async fn signatures(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<Vec<(Vec<u8>, Option<String>)>, Fault> {
        let tag = Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            sign::signature_tag(digest),
        );
        let client = self.client(reference);
        let Some(Manifest { body: manifest, .. }) = self
            .manifest(&tag, SIGNATURE_MANIFESTS, Method::GET)
            .await?
        else {
            return Ok(Vec::new());
        };
        let manifest: OciImageManifest = serde_json::from_slice(&manifest).map_err(|e| {
            Fault::refused(anyhow!(
                "the signature manifest is not an image manifest: {e}"
            ))
        })?;
        let mut layers = Vec::new();
        // Junk layers put before a good signature neither use up the
        // signatures read nor refuse the artefact: each is skipped.
        for layer in manifest
            .layers
            .iter()
            .filter(|l| is_signature_layer(l))
            .take(MAX_SIGNATURES)
        {
            let payload = match self.blob(&client, &tag, layer).await {
                Ok(payload) => payload,
                Err(fault) if !fault.transient => continue,
                Err(fault) => return Err(fault),
            };
            let signature = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(sign::SIGNATURE_ANNOTATION))
                .cloned();
            layers.push((payload, signature));
        }
        Ok(layers)
    }

    /// Push `component` to `reference` (a tag) as a Wasm artefact, signed
    /// with `key` when given. The tag moves last: the artefact and its
    /// signature are in place, by digest, before anyone following the tag
    /// can see them.
    ///
    /// # Errors
    /// [`Error::Oci`]: refused when `component` is not a component or the
    /// reference does not parse; otherwise the registry's answer.
    pub async fn push(
        &self,
        reference: &str,
        component: Vec<u8>,
        key: Option<&SigningKey>,
    ) -> Result<Pushed, Error> {
        let parsed = parse_reference(reference)?;
        let fail = |f: Fault, digest: Option<&str>| f.into_error(reference, digest);
        let (config, layer) =
            oci_wasm::WasmConfig::from_raw_component(component, None).map_err(|e| {
                fail(
                    Fault::refused(e.context("it is not a WebAssembly component")),
                    None,
                )
            })?;
        let config = config
            .to_config()
            .map_err(|e| fail(Fault::refused(e), None))?;
        let (manifest, digest) = self
            .push_artefact(&parsed, vec![layer], config, None)
            .await
            .map_err(|f| fail(f, None))?;
        let signature_tag = match key {
            Some(key) => Some(
                self.push_signature(&parsed, &digest, key)
                    .await
                    .map_err(|f| fail(f, Some(&digest)))?,
            ),
            None => None,
        };
        if parsed.digest().is_none() {
            self.put_manifest(&parsed, manifest)
                .await
                .map_err(|f| fail(f, Some(&digest)))?;
        }
        Ok(Pushed {
            reference: reference.to_string(),
            digest,
            signature_tag,
        })
    }

    /// Sign the artefact `reference` points to with `key` (as
    /// `cosign sign --key` does), returning its digest.
    ///
    /// # Errors
    /// [`Error::Oci`] when the reference does not resolve or the registry
    /// refuses the signature.
    pub async fn sign(&self, reference: &str, key: &SigningKey) -> Result<String, Error> {
        let (parsed, digest) = self.parse_and_resolve(reference).await?;
        // What is signed is seen first: the manifest the digest names, a
        // Wasm artefact, not only a digest a registry's header named.
        let fail = |f: Fault| f.into_error(reference, Some(&digest));
        self.artefact(&at_digest(&parsed, &digest), &digest, u64::MAX)
            .await
            .map_err(fail)?;
        self.push_signature(&parsed, &digest, key)
            .await
            .map_err(fail)?;
        Ok(digest)
    }

    /// Point `tag` (a tag of the same repository) at what `reference`
    /// points to: the promotion of a tested digest to a release channel,
    /// or the rollback of a channel to an earlier digest. The manifest is
    /// copied byte for byte, so its digest, and the signatures stored
    /// under it, are unchanged. Returns the digest.
    ///
    /// # Errors
    /// [`Error::Oci`] when `reference` does not resolve, is not a Wasm
    /// artefact, or the registry refuses the tag.
    pub async fn tag(&self, reference: &str, tag: &str) -> Result<String, Error> {
        let (parsed, digest) = self.parse_and_resolve(reference).await?;
        let fail = |f: Fault| f.into_error(reference, Some(&digest));
        let (body, _) = self
            .artefact(&at_digest(&parsed, &digest), &digest, u64::MAX)
            .await
            .map_err(fail)?;
        let target = Reference::with_tag(
            parsed.registry().to_string(),
            parsed.repository().to_string(),
            tag.to_string(),
        );
        self.put_manifest(&target, body).await.map_err(fail)?;
        Ok(digest)
    }

    /// Push the blobs of an artefact and its manifest by digest; return the
    /// manifest's bytes and digest (the tag is not touched).
    async fn push_artefact(
        &self,
        reference: &Reference,
        layers: Vec<ImageLayer>,
        config: Config,
        annotations: Option<BTreeMap<String, String>>,
    ) -> Result<(Vec<u8>, String), Fault> {
        let mut manifest = OciImageManifest::build(&layers, &config, annotations);
        manifest.media_type = Some(MANIFEST_MEDIA_TYPE.to_string());
        for layer in &layers {
            self.push_blob(reference, &layer.data, &layer.sha256_digest())
                .await?;
        }
        self.push_blob(reference, &config.data, &config.sha256_digest())
            .await?;
        let body = serde_json::to_vec(&manifest).map_err(|e| Fault::refused(anyhow!(e)))?;
        let digest = sha256_digest(&body);
        self.put_manifest(&at_digest(reference, &digest), body.clone())
            .await?;
        Ok((body, digest))
    }

    /// Upload `data` as the blob `digest` of `reference`'s repository,
    /// unless the registry has it already. The upload goes where the
    /// registry says (its `Location`); the registry's login or token goes
    /// with it only when that is the registry itself, not, say, a storage
    /// service's pre-signed URL.
    async fn push_blob(
        &self,
        reference: &Reference,
        data: &[u8],
        digest: &str,
    ) -> Result<(), Fault> {
        let registry = reference.resolve_registry();
        let base = self.base(registry);
        let repository = reference.repository();

        let url = format!("{base}/v2/{repository}/blobs/{digest}");
        let what = format!("HEAD {url}");
        let there = self
            .send(reference, Op::Push, &what, |http| http.head(&url))
            .await?;
        match there.status() {
            status if status.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => {}
            _ => return Err(refusal(&what, there).await),
        }

        let url = format!("{base}/v2/{repository}/blobs/uploads/");
        let what = format!("POST {url}");
        let started = self
            .send(reference, Op::Push, &what, |http| {
                http.post(&url).header(header::CONTENT_LENGTH, 0)
            })
            .await?;
        if started.status() != StatusCode::ACCEPTED {
            return Err(refusal(&what, started).await);
        }
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Fault::transient(anyhow!("{what} answered with no upload Location")))?;
        drop(started);
        let posted = reqwest::Url::parse(&url)
            .map_err(|e| Fault::refused(anyhow!("`{url}` is not a URL: {e}")))?;
        // Not quoted: a pre-signed URL carries its signature.
        let mut upload = posted.join(&location).map_err(|e| {
            Fault::transient(anyhow!("{what}: the upload Location is not a URL: {e}"))
        })?;
        let home = upload.origin() == posted.origin();
        // Named without its query or a login, either of which may be a
        // pre-signed URL's secret.
        let mut shown = upload.clone();
        shown.set_query(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        if !matches!(upload.scheme(), "https" | "http")
            || (upload.scheme() == "http" && !self.plain(registry) && !home)
        {
            return Err(Fault::refused(anyhow!(
                "{what}: the registry sends the upload to `{shown}`, not over HTTPS: refused"
            )));
        }
        upload.query_pairs_mut().append_pair("digest", digest);
        let what = format!("PUT {shown}");
        let put = |http: &reqwest::Client| {
            http.put(upload.clone())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(data.to_vec())
        };
        // To the registry itself, under its login or token (a token that
        // expired since the upload began is asked for anew, once); anywhere
        // else, under nothing.
        let done = if home {
            self.send(reference, Op::Push, &what, put).await?
        } else {
            put(&self.http()?)
                .send()
                .await
                .map_err(|e| Fault::transient(anyhow!("{what}: {}", e.without_url())))?
        };
        match done.status() {
            status if status.is_success() => Ok(()),
            _ if home => Err(refusal(&what, done).await),
            // A storage service's refusal may quote the signature it was
            // sent (S3's `SignatureDoesNotMatch` does): its status only.
            status => Err(Fault::transient(anyhow!("{what} answered {status}"))),
        }
    }

    /// Put `body`, a Wasm artefact's or a signature's image manifest, as
    /// the manifest `reference` names (a tag, or its digest).
    async fn put_manifest(&self, reference: &Reference, body: Vec<u8>) -> Result<(), Fault> {
        let url = self.manifest_url(reference);
        let what = format!("PUT {url}");
        let response = self
            .send(reference, Op::Push, &what, |http| {
                http.put(&url)
                    .header(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                    .body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(refusal(&what, response).await);
        }
        Ok(())
    }

    /// Push a signature of `digest` under its signature tag, keeping the
    /// signatures already there (as cosign appends).
    async fn push_signature(
        &self,
        reference: &Reference,
        digest: &str,
        key: &SigningKey,
    ) -> Result<String, Fault> {
        let docker_reference = format!("{}/{}", reference.registry(), reference.repository());
        let (payload, signature) = key.sign(&docker_reference, digest);
        let tag_name = sign::signature_tag(digest);
        let tag = Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            tag_name.clone(),
        );
        let mut layers = Vec::new();
        let client = self.client(reference);
        // Only "no signatures yet" starts a new list: a registry that
        // failed to answer must not have the signatures it holds replaced
        // by this one alone.
        if let Some(Manifest { body, .. }) = self
            .manifest(&tag, SIGNATURE_MANIFESTS, Method::GET)
            .await?
        {
            if let Ok(existing) = serde_json::from_slice::<OciImageManifest>(&body) {
                for layer in existing
                    .layers
                    .into_iter()
                    .filter(is_signature_layer)
                    .take(MAX_SIGNATURES - 1)
                {
                    let data = self.blob(&client, &tag, &layer).await?;
                    layers.push(ImageLayer::new(data, layer.media_type, layer.annotations));
                }
            }
        }
        layers.push(ImageLayer::new(
            payload,
            sign::SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
            Some(BTreeMap::from([(
                sign::SIGNATURE_ANNOTATION.to_string(),
                signature,
            )])),
        ));
        // cosign's minimal image config, so container tooling can read it.
        let diff_ids: Vec<String> = layers.iter().map(ImageLayer::sha256_digest).collect();
        let config = serde_json::json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{ "created": "0001-01-01T00:00:00Z" }],
            "os": "",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "config": {},
        });
        let config = Config::new(
            serde_json::to_vec(&config).expect("json"),
            IMAGE_CONFIG_MEDIA_TYPE.to_string(),
            None,
        );
        let (body, _) = self.push_artefact(&tag, layers, config, None).await?;
        self.put_manifest(&tag, body).await?;
        Ok(tag_name)
    }
}

/// What a signature manifest may be, as `Accept`.
const SIGNATURE_MANIFESTS: &[&str] = &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE];

/// A layer that may be a signature, and is small enough to read.
fn is_signature_layer(layer: &OciDescriptor) -> bool {
    layer.media_type == sign::SIMPLE_SIGNING_MEDIA_TYPE
        && (0..=MAX_PAYLOAD).contains(&layer.size)
        && check_digest(&layer.digest).is_ok()
}

/// `reference`'s repository at `digest`.
fn at_digest(reference: &Reference, digest: &str) -> Reference {
    Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest.to_string(),
    )
}

/// The component layer of a Wasm artefact's manifest.
fn wasm_layer(manifest: &OciImageManifest, max_size: u64) -> anyhow::Result<OciDescriptor> {
    anyhow::ensure!(
        manifest.config.media_type == WASM_CONFIG_MEDIA_TYPE,
        "it is not a Wasm artefact: its config has the media type `{}`, not `{WASM_CONFIG_MEDIA_TYPE}`",
        manifest.config.media_type
    );
    let [layer] = manifest.layers.as_slice() else {
        anyhow::bail!(
            "a Wasm artefact has exactly one layer; this one has {}",
            manifest.layers.len()
        );
    };
    anyhow::ensure!(
        layer.media_type == WASM_LAYER_MEDIA_TYPE,
        "its layer has the media type `{}`, not `{WASM_LAYER_MEDIA_TYPE}`",
        layer.media_type
    );
    check_digest(&layer.digest)?;
    let size = u64::try_from(layer.size)
        .map_err(|_| anyhow!("its layer declares a negative size ({})", layer.size))?;
    anyhow::ensure!(
        size <= max_size,
        "its layer declares {size} bytes, more than the {max_size} accepted"
    );
    Ok(layer.clone())
}

/// A sha256 digest, as every digest this module handles must be.
fn check_digest(digest: &str) -> anyhow::Result<()> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    });
    anyhow::ensure!(valid, "`{digest}` is not a sha256 digest");
    Ok(())
}

/// Whether a redirect to `next`, after `previous`, leaves HTTPS for plain
/// HTTP: refused, as what was sent over HTTPS would then go in the clear.
fn downgrades(previous: &[reqwest::Url], next: &reqwest::Url) -> bool {
    next.scheme() != "https" && previous.iter().any(|url| url.scheme() == "https")
}

/// Whether a registry address (`host[:port]`) is on a loopback interface.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        // `[::1]:5000`, `127.0.0.1:5000`, `localhost:5000`
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `response`'s body (a registry's `what`), refused when declared or sent
/// past `limit` bytes; nothing past it is read.
async fn body_within(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, Fault> {
    let too_large = |size: String| {
        Fault::refused(anyhow!(
            "the registry's {what} is {size}, more than the {limit} bytes accepted"
        ))
    };
    if let Some(declared) = response.content_length().filter(|&n| n > limit as u64) {
        return Err(too_large(format!("{declared} bytes by its Content-Length")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Fault::transient(anyhow!("reading the {what}: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large("longer".to_string()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Up to `limit` bytes of `response`'s body, for an error message; the
/// rest is never read.
async fn body_start(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    body
}

/// A registry's (or its token service's) answer other than the one
/// wanted, as a fault naming the request (`what`), the status and what the
/// start of its body said; the rest is never read.
async fn refusal(what: &str, response: reqwest::Response) -> Fault {
    let status = response.status();
    let body = body_start(response, MAX_ERROR_BODY).await;
    Fault::transient(anyhow!("{what} answered {status}: {}", said(&body)))
}

/// What an error answer's body said, on one line.
fn said(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parameters of an HTTP authentication challenge after its scheme
/// (`realm="https://auth.example/token",service="registry"`): names
/// lowercased, values unquoted.
fn challenge_params(rest: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = rest.trim_start();
    while let Some((name, after)) = rest.split_once('=') {
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                // A quoted value ends at the first quote not escaped.
                let mut value = String::new();
                let mut end = quoted.len();
                let mut chars = quoted.char_indices();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        params.insert(name, value);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// A writer that refuses to grow past `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() as u64 + data.len() as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "larger than declared",
            )));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_never_leaves_https_for_plain_http() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let https = [url("https://registry.example/v2/x/blobs/uploads/")];
        assert!(downgrades(&https, &url("http://registry.example/upload")));
        assert!(downgrades(
            &[https[0].clone(), url("https://storage.example/a")],
            &url("http://storage.example/b")
        ));
        assert!(!downgrades(&https, &url("https://storage.example/upload")));
        // A registry spoken to over plain HTTP (loopback, or named so)
        // may redirect over plain HTTP.
        assert!(!downgrades(
            &[url("http://127.0.0.1:5000/v2/")],
            &url("http://127.0.0.1:5000/v2/x")
        ));
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.9.9.9",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.local:5000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    fn manifest(config: &str, layers: &[(&str, i64)]) -> OciImageManifest {
        let descriptor = |media_type: &str, size: i64| OciDescriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(b"x"),
            size,
            urls: None,
            annotations: None,
            artifact_type: None,
        };
        OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: descriptor(config, 2),
            layers: layers.iter().map(|(m, s)| descriptor(m, *s)).collect(),
            subject: None,
            artifact_type: None,
            annotations: None,
        }
    }

    #[test]
    fn only_a_one_layer_wasm_artefact_within_the_size_is_accepted() {
        let ok = manifest(WASM_CONFIG_MEDIA_TYPE, &[(WASM_LAYER_MEDIA_TYPE, 10)]);
        assert!(wasm_layer(&ok, 10).is_ok());
        let refused = |m: OciImageManifest, max: u64| wasm_layer(&m, max).unwrap_err().to_string();
        assert!(refused(ok.clone(), 9).contains("more than the 9"));
        assert!(refused(
            manifest(IMAGE_CONFIG_MEDIA_TYPE, &[(WASM_LAYER_MEDIA_TYPE, 1)]),
            10
        )
        .contains("not a Wasm artefact"));
        assert!(refused(manifest(WASM_CONFIG_MEDIA_TYPE, &[]), 10).contains("has 0"));
        assert!(refused(
            manifest(
                WASM_CONFIG_MEDIA_TYPE,
                &[(WASM_LAYER_MEDIA_TYPE, 1), (WASM_LAYER_MEDIA_TYPE, 1)]
            ),
            10
        )
        .contains("has 2"));
        assert!(refused(
            manifest(WASM_CONFIG_MEDIA_TYPE, &[("application/x-tar", 1)]),
            10
        )
        .contains("application/x-tar"));
        assert!(refused(
            manifest(WASM_CONFIG_MEDIA_TYPE, &[(WASM_LAYER_MEDIA_TYPE, -1)]),
            10
        )
        .contains("negative"));
        let mut bad_digest = ok;
        bad_digest.layers[0].digest = "sha256:../../x".into();
        assert!(refused(bad_digest, 10).contains("not a sha256 digest"));
    }
}
