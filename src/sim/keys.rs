//! API keys of the sim: which key types it accepts (HMAC secret, Ed25519 or RSA public key)
//! and how a signature is checked for each, the way Binance checks them.
//!
//! What Binance does (SPEC §3.1, [S-REST] "Request Security", [S-WSAPI] "Signed requests"):
//! - HMAC-SHA256 with the secret → hex, not case-sensitive;
//! - RSA (the user registers a PEM SPKI public key): RSASSA-PKCS1-v1_5 with SHA-256 → base64,
//!   case-sensitive, URL-encoded when sent in a query string or form body;
//! - Ed25519 (PEM SPKI public key): the signature over the payload → base64, case-sensitive,
//!   URL-encoded in REST requests;
//! - the payload is the same for every key type: REST = the query string as sent (still
//!   percent-encoded) + the body; WS API = the params except `signature`, sorted, `k=v&…`.
//!
//! Inference: a REST signature value is form-decoded (`+` reads as a space, `%2B` as `+`), as
//! any HTTP server does with a query, so a base64 signature sent without URL-encoding fails
//! with -1022 here just as Binance asks clients to encode it.

use std::str::FromStr;

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The kind of API key a sim accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimKeyType {
    /// HMAC-SHA256 with `SimConfig::api_secret`; hex signatures.
    #[default]
    Hmac,
    /// Ed25519 with `SimConfig::public_key_pem`; base64 signatures.
    Ed25519,
    /// RSA PKCS#1 v1.5 / SHA-256 with `SimConfig::public_key_pem`; base64 signatures.
    Rsa,
}

impl FromStr for SimKeyType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hmac" => Ok(SimKeyType::Hmac),
            "ed25519" => Ok(SimKeyType::Ed25519),
            "rsa" => Ok(SimKeyType::Rsa),
            other => anyhow::bail!(
                "unknown key type {other:?} (expected \"hmac\", \"ed25519\" or \"rsa\")"
            ),
        }
    }
}

impl std::fmt::Display for SimKeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimKeyType::Hmac => "hmac",
            SimKeyType::Ed25519 => "ed25519",
            SimKeyType::Rsa => "rsa",
        })
    }
}

/// The parsed key a running sim checks signatures with.
pub(crate) enum Verifier {
    Hmac(String),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
    Rsa(Box<rsa::PublicKey>),
}

impl Verifier {
    /// Parse the configured key (a PEM SPKI public key for Ed25519 and RSA).
    pub fn new(
        key_type: SimKeyType,
        secret: &str,
        public_pem: Option<&str>,
    ) -> anyhow::Result<Verifier> {
        let pem = || {
            public_pem
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| anyhow::anyhow!("sim: a {key_type} key needs its public key (PEM)"))
        };
        Ok(match key_type {
            SimKeyType::Hmac => Verifier::Hmac(secret.to_string()),
            SimKeyType::Ed25519 => Verifier::Ed25519(Box::new(
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem()?).map_err(|e| {
                    anyhow::anyhow!("sim: not an Ed25519 public key (PEM SPKI): {e}")
                })?,
            )),
            SimKeyType::Rsa => {
                let pem = pem()?;
                let key = rsa::PublicKey::from_public_key_pem(pem)
                    .map_err(|e| anyhow::anyhow!("sim: not an RSA public key (PEM): {e}"))?;
                Verifier::Rsa(Box::new(key))
            }
        })
    }

    /// Check `signature` (already URL-decoded) over `payload`.
    pub fn verify(&self, payload: &[u8], signature: &str) -> bool {
        match self {
            Verifier::Hmac(secret) => verify_hex(secret, payload, signature),
            Verifier::Ed25519(key) => {
                let Some(raw) = b64(signature) else {
                    return false;
                };
                let Ok(sig) = ed25519_dalek::Signature::from_slice(&raw) else {
                    return false;
                };
                key.verify_strict(payload, &sig).is_ok()
            }
            Verifier::Rsa(key) => {
                let Some(raw) = b64(signature) else {
                    return false;
                };
                key.pkcs1v15_verify::<Sha256>(payload, &raw).is_ok()
            }
        }
    }
}

/// Standard base64 (with or without padding), case-sensitive.
fn b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(s.trim().as_bytes()).ok()
}

/// Constant-time check of a hex HMAC-SHA256 signature (case-insensitive).
pub(crate) fn verify_hex(secret: &str, payload: &[u8], signature: &str) -> bool {
    let Ok(sig) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    m.update(payload);
    m.verify_slice(&sig).is_ok()
}

/// A REST parameter value as the server reads it: `+` is a space, `%XX` a byte.
pub(crate) fn form_decode(v: &str) -> String {
    let spaced = v.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Binance's API keys are 64 ASCII letters and digits; anything else is "format invalid"
/// (-2014) rather than "invalid key" (-2015). Inference from the measured answers (SPEC §5a).
pub(crate) fn plausible_api_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| b.is_ascii_alphanumeric())
}
