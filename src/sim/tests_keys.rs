//! Tests of the key types: Ed25519 and RSA keys generated here, good and bad signatures on
//! both markets' REST APIs and on the Spot WS API, and the API-key answers (-2014 / -2015).

use base64::Engine;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::EncodePublicKey as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use futures_util::SinkExt;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

use super::tests::{T, http, next_json, now, sign, ws_connect};
use super::*;

const KEY: &str = "userKey0000000000000000000000000000000000000000000000000000000001";

/// A signer of one key type, written apart from the sim's verifier.
enum Signer {
    Ed(Box<ed25519_dalek::SigningKey>),
    Rsa(Box<rsa::PrivateKey>),
}

impl Signer {
    fn ed25519() -> (Signer, String) {
        let k = ed25519_dalek::SigningKey::from_bytes(&rand010::random::<[u8; 32]>());
        let pem = k
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        (Signer::Ed(Box::new(k)), pem)
    }

    fn rsa() -> (Signer, String) {
        let k = rsa::PrivateKey::new(&mut rand010::rng(), 2048).expect("rsa key");
        let pem = k
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        (Signer::Rsa(Box::new(k)), pem)
    }

    /// base64 signature over `payload`.
    fn sign(&self, payload: &str) -> String {
        let raw = match self {
            Signer::Ed(k) => k.sign(payload.as_bytes()).to_bytes().to_vec(),
            Signer::Rsa(k) => k.pkcs1v15_sign::<Sha256>(payload.as_bytes()).expect("sign"),
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn cfg(market: SimMarket, ed: bool, pem: &str) -> SimConfig {
    let c = SimConfig::new(market);
    if ed {
        c.with_ed25519(KEY, pem)
    } else {
        c.with_rsa(KEY, pem)
    }
}

fn code(r: &super::tests::Resp) -> (u16, Option<i64>) {
    (r.status, r.json()["code"].as_i64())
}

/// Good and bad signatures of `signer` on one market's REST API and (Spot) the WS API.
async fn check(market: SimMarket, ed: bool, signer: &Signer, other: &Signer, pem: &str) {
    let sim = Sim::start(cfg(market, ed, pem)).await.expect("start");
    let path = match market {
        SimMarket::Spot => "/api/v3/account",
        SimMarket::Usdm => "/fapi/v3/account",
    };
    let q = format!("recvWindow=5000&timestamp={}", now());
    let get = |sig: String, key: Option<String>| {
        let target = format!("{path}?{q}&signature={sig}");
        let sim = sim.clone();
        async move { http(&sim, "GET", &target, key.as_deref(), "").await }
    };
    let key = || Some(KEY.to_string());
    let ok = get(url_encode(&signer.sign(&q)), key()).await;
    assert_eq!(ok.status, 200, "{market} {}", ok.body);
    // Another key's signature, an HMAC hex signature and a signature over other params: -1022.
    for bad in [
        url_encode(&other.sign(&q)),
        sign(DEMO_API_SECRET, &q),
        url_encode(&signer.sign("timestamp=1")),
    ] {
        let r = get(bad, key()).await;
        assert_eq!(code(&r), (400, Some(-1022)), "{market}: {}", r.body);
        assert_eq!(r.json()["msg"], "Signature for this request is not valid.");
    }
    // A base64 signature with `+` sent without URL-encoding reads `+` as a space.
    let raw = signer.sign(&q);
    if raw.contains('+') {
        assert_eq!(code(&get(raw, key()).await), (400, Some(-1022)));
    }
    // Keys: ours with a good signature but no header → -2014; a plausible other → -2015.
    let good = url_encode(&signer.sign(&q));
    assert_eq!(code(&get(good.clone(), None).await), (401, Some(-2014)));
    let r = get(good.clone(), Some("bad key!".into())).await;
    assert_eq!(
        r.json(),
        json!({"code": -2014, "msg": "API-key format invalid."})
    );
    assert_eq!(r.status, 401);
    let r = get(good, Some("B".repeat(64))).await;
    assert_eq!(
        r.json(),
        json!({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    );
    assert_eq!(r.status, 401);
    if market == SimMarket::Usdm {
        // USER_STREAM: the key alone.
        let r = http(&sim, "POST", "/fapi/v1/listenKey", Some(KEY), "").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    if market == SimMarket::Spot {
        let mut ws = ws_connect(&sim.ws_url()).await;
        let ts = now();
        let payload = format!("apiKey={KEY}&timestamp={ts}");
        let send = |id: u32, api_key: &str, sig: String| {
            json!({"id": id, "method": "userDataStream.subscribe.signature",
                "params": {"apiKey": api_key, "timestamp": ts, "signature": sig}})
            .to_string()
        };
        let cases: Vec<(String, Value, Value)> = vec![
            (send(1, KEY, other.sign(&payload)), json!(400), json!(-1022)),
            (
                send(2, KEY, sign(DEMO_API_SECRET, &payload)),
                json!(400),
                json!(-1022),
            ),
            (
                send(3, "x y", signer.sign(&payload)),
                json!(401),
                json!(-2014),
            ),
            (
                send(4, &"C".repeat(64), signer.sign(&payload)),
                json!(401),
                json!(-2015),
            ),
        ];
        for (req, status, code) in cases {
            ws.send(Message::Text(req.into())).await.expect("send");
            let r = next_json(&mut ws, T).await.expect("resp");
            assert_eq!(
                (r["status"].clone(), r["error"]["code"].clone()),
                (status, code),
                "{r}"
            );
            assert!(r["rateLimits"].is_array());
        }
        ws.send(Message::Text(send(5, KEY, signer.sign(&payload)).into()))
            .await
            .expect("send");
        let r = next_json(&mut ws, T).await.expect("resp");
        assert_eq!(r["status"], 200, "{r}");
        assert!(r["result"]["subscriptionId"].is_u64(), "{r}");
        sim.wait_for_subscriber(T).await.expect("subscriber");
    }
}

#[tokio::test]
async fn ed25519_keys_sign_rest_and_ws_api() {
    let (signer, pem) = Signer::ed25519();
    let (other, _) = Signer::ed25519();
    check(SimMarket::Spot, true, &signer, &other, &pem).await;
    check(SimMarket::Usdm, true, &signer, &other, &pem).await;
}

#[tokio::test]
async fn rsa_keys_sign_rest_and_ws_api() {
    let (signer, pem) = Signer::rsa();
    let (other, _) = Signer::ed25519();
    check(SimMarket::Spot, false, &signer, &other, &pem).await;
    check(SimMarket::Usdm, false, &signer, &other, &pem).await;
}

#[tokio::test]
async fn a_key_that_does_not_parse_is_refused_at_start() {
    let (_, ed_pem) = Signer::ed25519();
    // An Ed25519 key given as RSA, garbage, and a missing key.
    assert!(
        Sim::start(cfg(SimMarket::Spot, false, &ed_pem))
            .await
            .is_err()
    );
    assert!(
        Sim::start(cfg(SimMarket::Spot, true, "not a pem"))
            .await
            .is_err()
    );
    let mut c = SimConfig::new(SimMarket::Spot).with_ed25519(KEY, "");
    assert!(Sim::start(c.clone()).await.is_err());
    c.public_key_pem = None;
    assert!(Sim::start(c).await.is_err());
    // HMAC keeps working as before, under another key.
    let sim = Sim::start(SimConfig::new(SimMarket::Spot).with_hmac(KEY, "s3cret"))
        .await
        .expect("start");
    let q = format!("timestamp={}", now());
    let r = http(
        &sim,
        "GET",
        &format!("/api/v3/account?{q}&signature={}", sign("s3cret", &q)),
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
