//! Keyed signatures over an artefact's manifest digest, in cosign's format.
//!
//! A signature is an OCI artefact of its own, stored in the same repository
//! under the tag cosign derives from the signed digest (`sha256:ab…` →
//! `sha256-ab….sig`), which works on every registry (no referrers API
//! needed). Its one layer (`application/vnd.dev.cosign.simplesigning.v1+json`)
//! is the "simple signing" payload naming the manifest digest; the layer's
//! annotation `dev.cosignproject.cosign/signature` holds the base64 ECDSA
//! P-256 / SHA-256 signature of that payload. Keys are PEM: a public key as
//! SubjectPublicKeyInfo (what `cosign generate-key-pair` writes as
//! `cosign.pub`), a private key as unencrypted PKCS#8 or SEC1.
//!
//! What is verified is the payload's digest, never the tag: the manifest
//! pins its layer by digest, so a signature over the manifest digest covers
//! the component bytes.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde::{Deserialize, Serialize};

/// The layer media type of a cosign signature.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The tag under which the signatures of `digest` are stored
/// (`sha256:ab…` → `sha256-ab….sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// A private key that signs artefacts (`wasmplug push --sign KEY`).
#[derive(Clone)]
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.verifying_key().fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    ///
    /// # Errors
    /// When the operating system has no randomness to give.
    pub fn generate() -> anyhow::Result<SigningKey> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness for a key: {e}"))?;
            // Out of range with probability ~2^-32: draw again.
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return Ok(SigningKey { key });
            }
        }
    }

    /// Parse a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
    /// (`BEGIN EC PRIVATE KEY`), on the P-256 curve.
    ///
    /// # Errors
    /// When the text is not such a key; an encrypted cosign key is named as
    /// such.
    pub fn from_pem(pem: &str) -> anyhow::Result<SigningKey> {
        if pem.contains("ENCRYPTED") {
            bail!(
                "an encrypted private key (such as cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`) \
                 is not supported: use an unencrypted PKCS#8 P-256 key (`wasmplug key generate`, \
                 or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)"
            );
        }
        let key = if pem.contains("BEGIN EC PRIVATE KEY") {
            let secret = p256::SecretKey::from_sec1_pem(pem)
                .map_err(|e| anyhow!("not a SEC1 P-256 private key: {e}"))?;
            p256::ecdsa::SigningKey::from(secret)
        } else {
            p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
                .map_err(|e| anyhow!("not a PKCS#8 P-256 private key: {e}"))?
        };
        Ok(SigningKey { key })
    }

    /// Read a PEM private key file.
    ///
    /// # Errors
    /// When the file cannot be read or is not such a key (the error names it).
    pub fn from_file(path: &Path) -> anyhow::Result<SigningKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the private key {}", path.display()))?;
        SigningKey::from_pem(&text).with_context(|| format!("private key {}", path.display()))
    }

    /// The key as unencrypted PKCS#8 PEM.
    ///
    /// # Errors
    /// Never in practice (encoding a valid key).
    pub fn to_pem(&self) -> anyhow::Result<String> {
        Ok(self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow!("encoding the private key: {e}"))?
            .to_string())
    }

    /// Its public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            key: *self.key.verifying_key(),
        }
    }

    /// The payload and base64 signature that sign `digest` (a manifest
    /// digest) of the repository `docker_reference`.
    pub(crate) fn sign(&self, docker_reference: &str, digest: &str) -> (Vec<u8>, String) {
        let payload = Payload {
            critical: Critical {
                identity: PayloadIdentity {
                    docker_reference: docker_reference.to_string(),
                },
                image: PayloadImage {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: PAYLOAD_TYPE.to_string(),
            },
            optional: None,
        };
        let payload = serde_json::to_vec(&payload).expect("a payload always serializes");
        let signature: DerSignature = self.key.sign(&payload);
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature.as_bytes());
        (payload, encoded)
    }
}

/// A public key that artefacts must be signed by.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    key: p256::ecdsa::VerifyingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.fingerprint())
    }
}

impl VerifyingKey {
    /// Parse a PEM public key (`BEGIN PUBLIC KEY`, P-256), as cosign writes
    /// `cosign.pub`.
    ///
    /// # Errors
    /// When the text is not such a key.
    pub fn from_pem(pem: &str) -> anyhow::Result<VerifyingKey> {
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| anyhow!("not a P-256 public key in PEM (BEGIN PUBLIC KEY): {e}"))?;
        Ok(VerifyingKey { key })
    }

    /// Read a PEM public key file.
    ///
    /// # Errors
    /// When the file cannot be read or is not such a key (the error names it).
    pub fn from_file(path: &Path) -> anyhow::Result<VerifyingKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the public key {}", path.display()))?;
        VerifyingKey::from_pem(&text).with_context(|| format!("public key {}", path.display()))
    }

    /// The key as PEM.
    ///
    /// # Errors
    /// Never in practice (encoding a valid key).
    pub fn to_pem(&self) -> anyhow::Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow!("encoding the public key: {e}"))
    }

    /// A short name for the key in messages: `sha256:` and the first 16
    /// hex digits of its DER encoding's digest.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let der = self
            .key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let digest = sha2::Sha256::digest(&der);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        // cosign writes ASN.1 DER; a raw r||s signature is accepted too.
        if let Ok(sig) = DerSignature::from_bytes(signature) {
            if self.key.verify(payload, &sig).is_ok() {
                return true;
            }
        }
        Signature::from_slice(signature).is_ok_and(|sig| self.key.verify(payload, &sig).is_ok())
    }
}

/// Whom pulled artefacts must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A valid signature by one of these keys over the artefact's manifest
    /// digest is required. An empty list trusts nothing.
    Keys(Vec<VerifyingKey>),
    /// No signature is checked (an explicit choice: for a registry that is
    /// itself the trust boundary, or for development).
    Unsigned,
}

impl Trust {
    /// Trust the public key files `paths`.
    ///
    /// # Errors
    /// When a file cannot be read or is not a P-256 public key.
    pub fn keys_from_files<P: AsRef<Path>>(paths: &[P]) -> anyhow::Result<Trust> {
        paths
            .iter()
            .map(|p| VerifyingKey::from_file(p.as_ref()))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Trust::Keys)
    }

    /// Check the signature layers `layers` (payload bytes, base64
    /// signature) found under the signature tag of `digest`: one of them
    /// must be signed by a trusted key and name `digest`. Returns the
    /// fingerprint of the key that signed.
    pub(crate) fn check(
        &self,
        digest: &str,
        layers: &[(Vec<u8>, Option<String>)],
    ) -> anyhow::Result<Option<String>> {
        let keys = match self {
            Trust::Unsigned => return Ok(None),
            Trust::Keys(keys) => keys,
        };
        if keys.is_empty() {
            bail!("no public key is trusted, so no signature can be accepted");
        }
        if layers.is_empty() {
            bail!(
                "it is not signed: no signature under the tag {}",
                signature_tag(digest)
            );
        }
        let mut reasons = Vec::new();
        for (payload, signature) in layers {
            let Some(signature) = signature else {
                reasons.push(format!("a layer has no {SIGNATURE_ANNOTATION} annotation"));
                continue;
            };
            let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim())
            else {
                reasons.push("a signature is not base64".to_string());
                continue;
            };
            let Some(key) = keys.iter().find(|k| k.verifies(payload, &signature)) else {
                reasons.push(format!(
                    "a signature verifies with none of the {} trusted key(s)",
                    keys.len()
                ));
                continue;
            };
            let parsed: Payload = match serde_json::from_slice(payload) {
                Ok(parsed) => parsed,
                Err(e) => {
                    reasons.push(format!("a signed payload is not simple signing JSON: {e}"));
                    continue;
                }
            };
            if parsed.critical.kind != PAYLOAD_TYPE {
                reasons.push(format!(
                    "a signed payload has type `{}`, not `{PAYLOAD_TYPE}`",
                    parsed.critical.kind
                ));
                continue;
            }
            if parsed.critical.image.docker_manifest_digest != digest {
                reasons.push(format!(
                    "a valid signature by {} is for another artefact ({}), not this one",
                    key.fingerprint(),
                    parsed.critical.image.docker_manifest_digest
                ));
                continue;
            }
            return Ok(Some(key.fingerprint()));
        }
        bail!("no valid signature: {}", reasons.join("; "))
    }
}

/// cosign's "simple signing" payload.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: PayloadIdentity,
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct PayloadIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn signed(key: &SigningKey, digest: &str) -> Vec<(Vec<u8>, Option<String>)> {
        let (payload, sig) = key.sign("127.0.0.1:5000/plugins/hello", digest);
        vec![(payload, Some(sig))]
    }

    #[test]
    fn a_signature_by_a_trusted_key_over_the_digest_is_accepted() {
        let key = SigningKey::generate().unwrap();
        let trust = Trust::Keys(vec![key.verifying_key()]);
        let by = trust.check(DIGEST, &signed(&key, DIGEST)).unwrap();
        assert_eq!(by, Some(key.verifying_key().fingerprint()));
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(&key.to_pem().unwrap()).unwrap();
        let public = VerifyingKey::from_pem(&key.verifying_key().to_pem().unwrap()).unwrap();
        assert_eq!(again.verifying_key(), public);
        assert!(
            SigningKey::from_pem("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
                .unwrap_err()
                .to_string()
                .contains("encrypted")
        );
        assert!(VerifyingKey::from_pem("garbage").is_err());
    }

    #[test]
    fn every_way_of_not_being_signed_is_refused() {
        let key = SigningKey::generate().unwrap();
        let stranger = SigningKey::generate().unwrap();
        let trust = Trust::Keys(vec![key.verifying_key()]);
        let refused = |layers: &[(Vec<u8>, Option<String>)]| {
            trust.check(DIGEST, layers).unwrap_err().to_string()
        };
        assert!(refused(&[]).contains("not signed"));
        assert!(refused(&signed(&stranger, DIGEST)).contains("none of the 1 trusted"));
        // A genuine signature copied onto another artefact.
        assert!(refused(&signed(&key, OTHER)).contains("for another artefact"));
        // The payload changed after signing.
        let mut tampered = signed(&key, DIGEST);
        tampered[0].0.push(b' ');
        assert!(refused(&tampered).contains("none of the 1 trusted"));
        let unannotated = vec![(signed(&key, DIGEST)[0].0.clone(), None)];
        assert!(refused(&unannotated).contains("annotation"));
        let not_base64 = vec![(signed(&key, DIGEST)[0].0.clone(), Some("@@".into()))];
        assert!(refused(&not_base64).contains("base64"));
        assert!(Trust::Keys(vec![])
            .check(DIGEST, &signed(&key, DIGEST))
            .is_err());
        assert_eq!(
            Trust::Unsigned.check(DIGEST, &[]).unwrap(),
            None,
            "unsigned is an explicit choice"
        );
        // One good signature among bad ones is enough.
        let mut mixed = signed(&stranger, DIGEST);
        mixed.extend(signed(&key, DIGEST));
        assert!(trust.check(DIGEST, &mixed).is_ok());
    }

    #[test]
    fn the_signature_tag_is_cosigns() {
        assert_eq!(
            signature_tag("sha256:abc"),
            "sha256-abc.sig",
            "cosign's triangulation"
        );
    }
}
