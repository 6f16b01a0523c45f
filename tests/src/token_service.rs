//! A token service, as Docker Hub, GHCR or Harbor run beside their
//! registries: the real registry (`docker-registry`) is configured to ask
//! for bearer tokens from it (`auth: token:`), and it hands them out, as
//! JWTs signed with a key the registry trusts, to one login. The registry
//! checks every token itself (issuer, audience, expiry, signature, and
//! the actions granted on the repository), so what a client does with a
//! token is judged by the real server, not by this one.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, Signature, SigningKey};

/// The `issuer` the registry expects of a token.
pub const ISSUER: &str = "wasmplug-tests-tokens";
/// The `service` (a token's audience) the registry names itself.
pub const SERVICE: &str = "wasmplug-tests";

/// A running token service on a loopback port.
pub struct TokenService {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

/// One request to the token service.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The scopes asked for (`repository:NAME:ACTIONS`), decoded.
    pub scopes: Vec<String>,
    /// Whether the request carried the one login it accepts.
    pub logged_in: bool,
}

impl TokenService {
    /// Start it, granting tokens to `user`/`password` only, and write the
    /// certificate of its signing key to `certificate` (PEM), for the
    /// registry's `rootcertbundle`.
    pub fn start(user: &str, password: &str, certificate: &Path) -> TokenService {
        // A fixed key: this is a test's authority, not a secret.
        let key = SigningKey::from_bytes(&[0x5a; 32].into()).expect("a P-256 key");
        let der = self_signed(&key, certificate);
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let login = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (user, noted) = (user.to_string(), asked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = answer(&stream, &login, &user, &key, &der, &noted);
                let _ = (&stream).write_all(answer.as_bytes());
            }
        });
        TokenService { addr, asked }
    }

    /// `http://127.0.0.1:PORT/token`: the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The requests made so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

/// The answer to one request: a token for the login, 401 otherwise.
fn answer(
    stream: &TcpStream,
    login: &str,
    user: &str,
    key: &SigningKey,
    der: &[u8],
    asked: &Mutex<Vec<Asked>>,
) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut lines = BufReader::new(stream).lines();
    let request = lines.next().and_then(Result::ok).unwrap_or_default();
    let mut logged_in = false;
    for line in lines.map_while(Result::ok) {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            logged_in |= name.eq_ignore_ascii_case("authorization") && value.trim() == login;
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "scope")
        .map(|(_, scope)| scope.into_owned())
        .collect();
    asked.lock().unwrap().push(Asked {
        scopes: scopes.clone(),
        logged_in,
    });
    if !logged_in {
        let body = r#"{"details":"a login is needed"}"#;
        return format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let token = jwt(key, der, user, &scopes);
    let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A token granting `scopes` (`repository:NAME:ACTIONS`) to `user`, signed
/// with `key` (ES256), its certificate (`der`) in the header for the
/// registry to check against the one it trusts.
fn jwt(key: &SigningKey, der: &[u8], user: &str, scopes: &[String]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(der)] });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now - 10,
        "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// A self-signed certificate for `key`, written to `path` as PEM; returns
/// its DER.
fn self_signed(key: &SigningKey, path: &Path) -> Vec<u8> {
    use std::str::FromStr as _;
    use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
    use x509_cert::der::{pem::LineEnding, Encode as _, EncodePem as _};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).expect("its public key");
    let certificate = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        Validity::from_now(Duration::from_secs(24 * 3600)).expect("a validity"),
        Name::from_str("CN=wasmplug tests token service").expect("a name"),
        spki,
        key,
    )
    .expect("a certificate builder")
    .build::<DerSignature>()
    .expect("a certificate");
    let pem = certificate.to_pem(LineEnding::LF).expect("PEM");
    std::fs::write(path, pem).expect("writing the certificate");
    certificate.to_der().expect("DER")
}
