//! `acctstate run` with Ed25519 and RSA API keys (PKCS#8 PEM secrets) against a sim that checks
//! those signatures as Binance does: REST and the Spot WebSocket API subscription are signed
//! with the key's type, and the daemon converges like the HMAC runs.

use acctstate::sim::{SimConfig, SimMarket};
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::pkcs8::LineEnding;

use crate::bounce::*;

/// A generated key pair: (private PKCS#8 PEM for the daemon, public SPKI PEM for the sim).
fn ed25519_pair() -> (String, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand010::random::<[u8; 32]>());
    let private = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("spki");
    (private, public)
}

fn rsa_pair() -> (String, String) {
    let key = rsa::PrivateKey::new(&mut rand010::rng(), 2048).expect("rsa key");
    let private = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("spki");
    (private, public)
}

async fn converges_with(market: SimMarket, key_type: &str) {
    let (private, public) = match key_type {
        "ed25519" => ed25519_pair(),
        _ => rsa_pair(),
    };
    let api_key = format!("simKey{key_type}0000000000000000000000000000000000000000000000000");
    let cfg = match key_type {
        "ed25519" => SimConfig::new(market).with_ed25519(api_key.clone(), public),
        _ => SimConfig::new(market).with_rsa(api_key.clone(), public),
    };
    let mut b = Bounce::with_sim(cfg, None, None).await;
    b.extra.extend([
        ("ACCTSTATE__BINANCE__KEY_TYPE", key_type.to_owned()),
        ("BINANCE_API_KEY", api_key),
        ("BINANCE_API_SECRET", private.clone()),
    ]);
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(3_000).await;
    // A reconnect signs a fresh subscription (Spot) / a new listenKey session (USD-M).
    b.sim.drop_connections();
    b.delivered(MIN_EVENTS).await;
    trader.abort();
    let body = private.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        d.stdout().iter().all(|l| !l.contains(&body)),
        "the private key reached a log line"
    );
    b.finish(d, 300, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_with_an_ed25519_key_converges() {
    converges_with(SimMarket::Spot, "ed25519").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_with_an_rsa_key_converges() {
    converges_with(SimMarket::Spot, "rsa").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_with_an_ed25519_key_converges() {
    converges_with(SimMarket::Usdm, "ed25519").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_with_an_rsa_key_converges() {
    converges_with(SimMarket::Usdm, "rsa").await;
}
