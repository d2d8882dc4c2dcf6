//! Request signing as Binance does it (SPEC §3.1), for the three key types: HMAC-SHA256 → hex;
//! RSA (PKCS#1 v1.5 / SHA-256) → base64; Ed25519 → base64. REST signs the percent-encoded query
//! string; the WebSocket API signs its parameters sorted by key, `k=v` joined by `&`. A key is
//! parsed once, when the configuration is read: a PEM that does not parse, or whose type is not
//! `binance.key_type`, is a configuration error that never shows the key.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use hmac::{Hmac, KeyInit, Mac};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use sha2::Sha256;

/// `binance.key_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Hmac,
    Ed25519,
    Rsa,
}

impl std::str::FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyType, String> {
        match s {
            "hmac" => Ok(KeyType::Hmac),
            "ed25519" => Ok(KeyType::Ed25519),
            "rsa" => Ok(KeyType::Rsa),
            other => Err(format!("must be `hmac`, `ed25519` or `rsa`, got `{other}`")),
        }
    }
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Hmac => "hmac",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
        }
    }
}

/// A private key ready to sign. Its `Debug` shows only the type.
pub enum Signer {
    Hmac(Vec<u8>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, <secret>)", self.key_type().as_str())
    }
}

/// Why a secret is not a key of its type (never containing the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// What kind of private key a PEM holds, judged by parsing it.
fn pem_kind(pem: &str) -> Option<KeyType> {
    if ed25519_dalek::SigningKey::from_pkcs8_pem(pem).is_ok() {
        Some(KeyType::Ed25519)
    } else if rsa::PrivateKey::from_pkcs8_pem(pem).is_ok()
        || rsa::PrivateKey::from_pkcs1_pem(pem).is_ok()
    {
        Some(KeyType::Rsa)
    } else {
        None
    }
}

/// A PEM given with its line breaks escaped (`\n` in an environment variable) is unescaped.
fn unescape_pem(secret: &str) -> String {
    let s = secret.trim();
    if s.starts_with("-----BEGIN") && !s.contains('\n') && s.contains("\\n") {
        s.replace("\\n", "\n")
    } else {
        s.to_owned()
    }
}

impl Signer {
    /// Parses `secret` as a key of `key_type`: the HMAC secret itself, or a PKCS#8 PEM private
    /// key (RSA also as PKCS#1).
    pub fn new(key_type: KeyType, secret: &str) -> Result<Signer, KeyError> {
        let pem = unescape_pem(secret);
        let is_pem = pem.starts_with("-----BEGIN");
        match key_type {
            KeyType::Hmac if is_pem => Err(KeyError(format!(
                "is a PEM private key{}, but binance.key_type is `hmac` (set it to `ed25519` or `rsa`)",
                pem_kind(&pem).map_or(String::new(), |k| format!(" ({})", k.as_str()))
            ))),
            KeyType::Hmac => Ok(Signer::Hmac(secret.as_bytes().to_vec())),
            _ if !is_pem => Err(KeyError(format!(
                "binance.key_type is `{}`, so the secret must be the private key in PEM (PKCS#8, `-----BEGIN PRIVATE KEY-----`)",
                key_type.as_str()
            ))),
            KeyType::Ed25519 => match ed25519_dalek::SigningKey::from_pkcs8_pem(&pem) {
                Ok(k) => Ok(Signer::Ed25519(Box::new(k))),
                Err(_) => Err(mismatch(key_type, &pem)),
            },
            KeyType::Rsa => {
                let key = rsa::PrivateKey::from_pkcs8_pem(&pem)
                    .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(&pem))
                    .map_err(|_| mismatch(key_type, &pem))?;
                Ok(Signer::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key))))
            }
        }
    }

    pub fn key_type(&self) -> KeyType {
        match self {
            Signer::Hmac(_) => KeyType::Hmac,
            Signer::Ed25519(_) => KeyType::Ed25519,
            Signer::Rsa(_) => KeyType::Rsa,
        }
    }

    /// The signature of `payload`: hex (HMAC) or base64 (Ed25519, RSA), not URL-encoded.
    pub fn sign(&self, payload: &str) -> String {
        match self {
            Signer::Hmac(secret) => {
                // HMAC accepts keys of any length, so this cannot fail.
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                    return String::new();
                };
                mac.update(payload.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            Signer::Ed25519(key) => BASE64
                .encode(ed25519_dalek::Signer::sign(key.as_ref(), payload.as_bytes()).to_bytes()),
            Signer::Rsa(key) => BASE64.encode(key.sign(payload.as_bytes()).to_bytes()),
        }
    }
}

fn mismatch(want: KeyType, pem: &str) -> KeyError {
    KeyError(match pem_kind(pem) {
        Some(found) => format!(
            "is an {} private key, but binance.key_type is `{}`",
            found.as_str(),
            want.as_str()
        ),
        None => format!(
            "is not a PKCS#8 PEM private key of type `{}` (it does not parse)",
            want.as_str()
        ),
    })
}

/// `k=v&k=v` with keys and values percent-encoded as in a URL query.
pub fn encode_query(params: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The signed query: the encoded parameters followed by `&signature=` and the signature,
/// percent-encoded (base64 signatures hold `+`, `/` and `=`).
pub fn signed_query(params: &[(&str, String)], signer: &Signer) -> String {
    let query = encode_query(params);
    let signature = encode_query(&[("signature", signer.sign(&query))]);
    if query.is_empty() {
        signature
    } else {
        format!("{query}&{signature}")
    }
}

/// WebSocket API payload: every parameter but `signature`, sorted by key, `k=v` joined by `&`.
pub fn ws_payload(params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> =
        params.iter().filter(|(k, _)| *k != "signature").collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use rsa::pkcs8::LineEnding;
    use rsa::signature::Verifier;

    fn hmac(secret: &str) -> Signer {
        Signer::new(KeyType::Hmac, secret).unwrap()
    }

    #[test]
    fn binance_documented_example() {
        // The HMAC example of Binance's REST documentation ("SIGNED Endpoint Examples").
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            hmac(secret).sign(query),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn query_is_encoded_before_signing() {
        let q = signed_query(
            &[("symbol", "A B".into()), ("timestamp", "1".into())],
            &hmac("s"),
        );
        assert!(q.starts_with("symbol=A+B&timestamp=1&signature="));
        let sig = q.rsplit('=').next().unwrap_or_default();
        assert_eq!(sig, hmac("s").sign("symbol=A+B&timestamp=1"));
    }

    #[test]
    fn ws_params_sorted() {
        let p = [
            ("timestamp", "2".to_string()),
            ("apiKey", "k".to_string()),
            ("recvWindow", "5000".to_string()),
        ];
        assert_eq!(ws_payload(&p), "apiKey=k&recvWindow=5000&timestamp=2");
    }

    fn ed25519_pem() -> (String, ed25519_dalek::VerifyingKey) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        (pem, key.verifying_key())
    }

    fn rsa_pem() -> (String, rsa::pkcs1v15::VerifyingKey<Sha256>) {
        let key = rsa::PrivateKey::new(&mut rand010::rng(), 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let verifying = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.to_public_key());
        (pem, verifying)
    }

    #[test]
    fn ed25519_signs_base64_that_verifies_and_is_url_encoded_in_a_query() {
        let (pem, public) = ed25519_pem();
        let s = Signer::new(KeyType::Ed25519, &pem).unwrap();
        let payload = "symbol=BTCUSDT&timestamp=1";
        let sig = BASE64.decode(s.sign(payload)).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        public.verify_strict(payload.as_bytes(), &sig).unwrap();
        let q = signed_query(&[("timestamp", "1".into())], &s);
        let encoded = q.trim_start_matches("timestamp=1&signature=");
        assert!(!encoded.contains('+') && !encoded.contains('/'), "{q}");
        // An escaped PEM (one line, `\n`) from an environment variable works too.
        assert!(Signer::new(KeyType::Ed25519, &pem.replace('\n', "\\n")).is_ok());
        assert_eq!(format!("{s:?}"), "Signer(ed25519, <secret>)");
    }

    #[test]
    fn rsa_signs_pkcs1v15_sha256_base64() {
        let (pem, public) = rsa_pem();
        let s = Signer::new(KeyType::Rsa, &pem).unwrap();
        let payload = "symbol=BTCUSDT&timestamp=1";
        let bytes = BASE64.decode(s.sign(payload)).unwrap();
        let sig = rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).unwrap();
        public.verify(payload.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn a_key_of_the_wrong_type_or_garbage_is_refused_without_showing_it() {
        let (ed, _) = ed25519_pem();
        let err = Signer::new(KeyType::Rsa, &ed).unwrap_err().to_string();
        assert!(err.contains("ed25519") && err.contains("`rsa`"), "{err}");
        assert!(!err.contains("BEGIN"), "{err}");
        let err = Signer::new(KeyType::Hmac, &ed).unwrap_err().to_string();
        assert!(err.contains("`hmac`"), "{err}");
        let garbage = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n";
        let err = Signer::new(KeyType::Ed25519, garbage)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not parse") && !err.contains("not a key"),
            "{err}"
        );
        let err = Signer::new(KeyType::Ed25519, "plain-hmac-secret").unwrap_err();
        assert!(!err.to_string().contains("plain-hmac-secret"));
    }
}
