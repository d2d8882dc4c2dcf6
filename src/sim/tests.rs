//! Tests of the sim over real loopback sockets: payload shapes against Binance's official
//! examples, signatures, end-to-end stream vs REST consistency, the model over long sessions,
//! and every fault. The HTTP client and the signer here are written independently of the sim.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::account::{MAX_OPEN_ALGOS, MAX_OPEN_ORDERS, Model};
use super::*;

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ helpers

pub(super) fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/binance/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same keys (except `optional` ones the sim may omit) and same JSON types, recursively.
/// `nullable` keys may be `null` in one and a string in the other.
pub(super) fn shape_errors(
    fix: &Value,
    got: &Value,
    optional: &[&str],
    nullable: &[&str],
) -> Vec<String> {
    fn walk(p: &str, f: &Value, g: &Value, opt: &[&str], nul: &[&str], errs: &mut Vec<String>) {
        let key = p.rsplit('.').next().unwrap_or("");
        match (f, g) {
            (Value::Object(fo), Value::Object(go)) => {
                for (k, fv) in fo {
                    match go.get(k) {
                        Some(gv) => walk(&format!("{p}.{k}"), fv, gv, opt, nul, errs),
                        None if opt.contains(&k.as_str()) => {}
                        None => errs.push(format!("{p}.{k}: missing")),
                    }
                }
                for k in go.keys().filter(|k| !fo.contains_key(*k)) {
                    errs.push(format!("{p}.{k}: not in the fixture"));
                }
            }
            (Value::Array(fa), Value::Array(ga)) => {
                if let Some(f0) = fa.first() {
                    for (i, gv) in ga.iter().enumerate() {
                        walk(&format!("{p}[{i}]"), f0, gv, opt, nul, errs);
                    }
                }
            }
            (Value::Null, Value::String(_)) | (Value::String(_), Value::Null)
                if nul.contains(&key) => {}
            _ if kind(f) == kind(g) => {}
            _ => errs.push(format!("{p}: fixture {} vs sim {}", kind(f), kind(g))),
        }
    }
    let mut errs = Vec::new();
    walk("$", fix, got, optional, nullable, &mut errs);
    errs
}

pub(super) fn assert_shape(name: &str, got: &Value, optional: &[&str], nullable: &[&str]) {
    let errs = shape_errors(&fixture(name), got, optional, nullable);
    assert!(errs.is_empty(), "{name}: {errs:#?}\nsim payload: {got}");
}

pub(super) fn test_cfg(market: SimMarket) -> SimConfig {
    let mut cfg = SimConfig::new(market);
    cfg.seed = 7;
    cfg
}

pub(super) fn sign(secret: &str, payload: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    m.update(payload.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: String,
}

impl Resp {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Minimal HTTP/1.1 client (Connection: close).
pub(super) async fn http(
    sim: &Sim,
    method: &str,
    target: &str,
    key: Option<&str>,
    body: &str,
) -> Resp {
    http_with(sim, method, target, key, body, &[]).await
}

/// [`http`] with extra request headers.
pub(super) async fn http_with(
    sim: &Sim,
    method: &str,
    target: &str,
    key: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut s = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("X-MBX-APIKEY: {k}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut raw))
        .await
        .expect("http timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Signed GET with the demo credentials.
pub(super) async fn signed_get(sim: &Sim, path: &str, params: &str) -> Resp {
    let mut q = params.to_string();
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str(&format!("timestamp={}", now()));
    let sig = sign(DEMO_API_SECRET, &q);
    http(
        sim,
        "GET",
        &format!("{path}?{q}&signature={sig}"),
        Some(DEMO_API_KEY),
        "",
    )
    .await
}

pub(super) async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("ws connect timeout")
        .expect("ws connect");
    ws
}

/// Next text frame as JSON (skipping pings); None on close/error/timeout.
pub(super) async fn next_json(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

pub(super) async fn spot_subscribe(sim: &Sim) -> Ws {
    let mut ws = ws_connect(&sim.ws_url()).await;
    let ts = now();
    let sig = sign(
        DEMO_API_SECRET,
        &format!("apiKey={DEMO_API_KEY}&timestamp={ts}"),
    );
    let req = json!({"id": "sub-1", "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": DEMO_API_KEY, "timestamp": ts, "signature": sig}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    let resp = next_json(&mut ws, T).await.expect("subscribe response");
    assert_eq!(resp["status"], 200, "{resp}");
    assert_eq!(resp["id"], "sub-1");
    assert!(resp["result"]["subscriptionId"].is_u64(), "{resp}");
    assert!(resp["rateLimits"].is_array());
    sim.wait_for_subscriber(T).await.expect("subscriber");
    ws
}

/// Every USD-M event type, as a client that handles all of them asks for them.
pub(super) const ALL_USDM_EVENTS: &str = "ACCOUNT_UPDATE/ORDER_TRADE_UPDATE/TRADE_LITE/ALGO_UPDATE/MARGIN_CALL/ACCOUNT_CONFIG_UPDATE/STRATEGY_UPDATE/GRID_UPDATE/CONDITIONAL_ORDER_TRIGGER_REJECT/listenKeyExpired";

pub(super) async fn new_listen_key(sim: &Sim) -> String {
    let r = http(sim, "POST", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["listenKey"]
        .as_str()
        .expect("listenKey")
        .to_string()
}

/// A listenKey and a stream on production's form, every event type asked for.
pub(super) async fn usdm_connect(sim: &Sim) -> (String, Ws) {
    let key = new_listen_key(sim).await;
    let ws = ws_connect(&format!(
        "{}/private/ws?listenKey={key}&events={ALL_USDM_EVENTS}",
        sim.ws_url()
    ))
    .await;
    sim.wait_for_subscriber(T).await.expect("subscriber");
    (key, ws)
}

/// Read until `n` messages were received (or the deadline passes).
pub(super) async fn collect(ws: &mut Ws, n: u64) -> Vec<Value> {
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        match next_json(ws, T).await {
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

pub(super) fn unwrap_event(v: &Value) -> &Value {
    v.get("event").unwrap_or(v)
}

pub(super) fn dec_of(v: &Value) -> Decimal {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

pub(super) fn first(evs: &[Value], pred: impl Fn(&Value) -> bool) -> &Value {
    evs.iter()
        .find(|v| pred(unwrap_event(v)))
        .expect("no such event in the session")
}

// ------------------------------------------------------------------ 1. payload shapes

#[tokio::test]
async fn spot_payload_shapes_match_fixtures() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    sim.run(300, None).await;
    let mut evs = collect(&mut ws, sim.events_sent()).await;
    sim.terminate_subscription();
    evs.extend(collect(&mut ws, 1).await);
    let e = |v: &Value, t: &str| v["e"] == t;
    assert_shape(
        "spot_outboundAccountPosition.json",
        first(&evs, |v| e(v, "outboundAccountPosition")),
        &[],
        &[],
    );
    assert_shape(
        "spot_outboundAccountPosition_wsapi_event_format.json",
        first(&evs, |v| e(v, "outboundAccountPosition")),
        &[],
        &[],
    );
    assert_shape(
        "spot_balanceUpdate.json",
        first(&evs, |v| e(v, "balanceUpdate")),
        &[],
        &[],
    );
    for x in ["NEW", "TRADE", "CANCELED", "EXPIRED"] {
        let ev = first(&evs, |v| {
            e(v, "executionReport") && v["x"] == x && v["o"] == "LIMIT"
        });
        // `v` is STP-only; `W` only when placed on the book; `N` is null without commission.
        assert_shape("spot_executionReport.json", ev, &["v"], &["N"]);
    }
    let market_trade = first(&evs, |v| {
        e(v, "executionReport") && v["o"] == "MARKET" && v["x"] == "TRADE"
    });
    assert_shape(
        "spot_executionReport.json",
        market_trade,
        &["v", "W"],
        &["N"],
    );
    assert_shape(
        "spot_eventStreamTerminated.json",
        first(&evs, |v| e(v, "eventStreamTerminated")),
        &[],
        &[],
    );
    let _ws2 = spot_subscribe(&sim).await;
    sim.server_shutdown();
    let shut = collect(&mut ws, 1).await;
    assert_shape("spot_serverShutdown.json", &shut[0], &[], &[]);

    let acct = signed_get(&sim, "/api/v3/account", "").await;
    assert_eq!(acct.status, 200, "{}", acct.body);
    assert_shape("spot_rest_GET_api_v3_account.json", &acct.json(), &[], &[]);
    let oo = signed_get(&sim, "/api/v3/openOrders", "").await;
    assert_eq!(oo.status, 200, "{}", oo.body);
    assert!(!oo.json().as_array().expect("array").is_empty());
    assert_shape("spot_rest_GET_api_v3_openOrders.json", &oo.json(), &[], &[]);
    // GET order has the same shape as one open order, also for finished orders.
    let st = sim.state();
    let filled = st
        .orders
        .values()
        .find(|o| o.status == "FILLED")
        .expect("a filled order");
    let one = signed_get(
        &sim,
        "/api/v3/order",
        &format!("symbol={}&orderId={}", filled.symbol, filled.order_id),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_shape(
        "spot_rest_GET_api_v3_openOrders.json",
        &json!([one.json()]),
        &[],
        &[],
    );
    assert_eq!(one.json()["status"], "FILLED");
    let trades = signed_get(
        &sim,
        "/api/v3/myTrades",
        &format!("symbol={}", filled.symbol),
    )
    .await;
    let t0 = &trades.json()[0];
    for k in [
        "symbol",
        "id",
        "orderId",
        "orderListId",
        "price",
        "qty",
        "quoteQty",
        "commission",
        "commissionAsset",
        "time",
        "isBuyer",
        "isMaker",
        "isBestMatch",
    ] {
        assert!(t0.get(k).is_some(), "myTrades lacks {k}: {t0}");
    }
    assert!(t0["id"].is_i64() && t0["price"].is_string() && t0["isBuyer"].is_boolean());
}

#[tokio::test]
async fn usdm_payload_shapes_match_fixtures() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let (_key, mut ws) = usdm_connect(&sim).await;
    sim.run(400, None).await;
    let mut evs = collect(&mut ws, sim.events_sent()).await;
    let e = |v: &Value, t: &str| v["e"] == t;
    assert_shape(
        "usdm_ACCOUNT_UPDATE.json",
        first(&evs, |v| e(v, "ACCOUNT_UPDATE") && v["a"]["m"] == "ORDER"),
        &[],
        &[],
    );
    let funding = first(&evs, |v| {
        e(v, "ACCOUNT_UPDATE") && v["a"]["m"] == "FUNDING_FEE"
    });
    assert!(
        funding["a"].get("P").is_none(),
        "funding fee carries no P: {funding}"
    );
    assert_shape("usdm_ACCOUNT_UPDATE.json", funding, &["P"], &[]);
    for x in ["NEW", "TRADE", "CANCELED"] {
        let ev = first(&evs, |v| e(v, "ORDER_TRADE_UPDATE") && v["o"]["x"] == x);
        // AP/cr: trailing stops only; N/n: "will not push if no commission".
        assert_shape(
            "usdm_ORDER_TRADE_UPDATE.json",
            ev,
            &["AP", "cr", "N", "n"],
            &[],
        );
    }
    assert_shape(
        "usdm_TRADE_LITE.json",
        first(&evs, |v| e(v, "TRADE_LITE")),
        &[],
        &[],
    );
    for x in ["NEW", "CANCELED", "TRIGGERED"] {
        let ev = first(&evs, |v| e(v, "ALGO_UPDATE") && v["o"]["X"] == x);
        assert_shape("usdm_ALGO_UPDATE.json", ev, &[], &[]);
    }
    // TRADE_LITE comes just before the ORDER_TRADE_UPDATE of the same trade.
    let i = evs.iter().position(|v| e(v, "TRADE_LITE")).expect("lite");
    assert_eq!(evs[i + 1]["e"], "ORDER_TRADE_UPDATE");
    assert_eq!(evs[i + 1]["o"]["t"], evs[i]["t"]);
    // A triggered algo names the new regular order, which then appears as NEW.
    let trig = first(&evs, |v| e(v, "ALGO_UPDATE") && v["o"]["X"] == "TRIGGERED");
    let oid: i64 = trig["o"]["ai"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("ai");
    assert!(
        evs.iter()
            .any(|v| e(v, "ORDER_TRADE_UPDATE") && v["o"]["i"] == oid)
    );

    let pr = signed_get(&sim, "/fapi/v3/positionRisk", "").await;
    assert_eq!(pr.status, 200, "{}", pr.body);
    assert_shape(
        "usdm_rest_GET_fapi_v3_positionRisk_oneway.json",
        &pr.json(),
        &[],
        &[],
    );
    let oo = signed_get(&sim, "/fapi/v1/openOrders", "").await;
    assert!(!oo.json().as_array().expect("array").is_empty());
    // activatePrice / priceRate are returned for TRAILING_STOP_MARKET orders only.
    assert_shape(
        "usdm_rest_GET_fapi_v1_openOrders.json",
        &oo.json(),
        &["activatePrice", "priceRate"],
        &[],
    );
    let acct = signed_get(&sim, "/fapi/v3/account", "").await.json();
    for k in ["totalWalletBalance", "assets", "positions"] {
        assert!(acct.get(k).is_some(), "account lacks {k}");
    }
    for k in [
        "asset",
        "walletBalance",
        "unrealizedProfit",
        "marginBalance",
        "maintMargin",
        "initialMargin",
        "positionInitialMargin",
        "openOrderInitialMargin",
        "crossWalletBalance",
        "crossUnPnl",
        "availableBalance",
        "maxWithdrawAmount",
    ] {
        assert!(acct["assets"][0][k].is_string(), "asset lacks {k}: {acct}");
    }
    assert!(acct["assets"][0]["updateTime"].is_i64());
    for k in [
        "symbol",
        "positionSide",
        "positionAmt",
        "unrealizedProfit",
        "isolatedMargin",
        "notional",
        "isolatedWallet",
        "initialMargin",
        "maintMargin",
    ] {
        assert!(
            acct["positions"][0][k].is_string(),
            "position lacks {k}: {acct}"
        );
    }
    let algos = signed_get(&sim, "/fapi/v1/openAlgoOrders", "").await.json();
    if let Some(a) = algos.as_array().and_then(|a| a.first()) {
        assert_eq!(a["algoType"], "CONDITIONAL");
        assert_eq!(a["algoStatus"], "NEW");
        assert!(a["algoId"].is_i64() && a["quantity"].is_string() && a["triggerPrice"].is_string());
    }
    let st = sim.state();
    let f = st.fills.values().next().expect("a fill");
    let trades = signed_get(&sim, "/fapi/v1/userTrades", &format!("symbol={}", f.symbol)).await;
    let t0 = &trades.json()[0];
    for k in [
        "buyer",
        "commission",
        "commissionAsset",
        "id",
        "maker",
        "orderId",
        "price",
        "qty",
        "quoteQty",
        "realizedPnl",
        "side",
        "positionSide",
        "symbol",
        "time",
    ] {
        assert!(t0.get(k).is_some(), "userTrades lacks {k}: {t0}");
    }

    sim.expire_listen_key();
    evs = collect(&mut ws, 1).await;
    assert_shape("usdm_listenKeyExpired.json", &evs[0], &[], &[]);
}

// ------------------------------------------------------------------ 2. signatures

#[tokio::test]
async fn signatures_and_timestamps_are_checked_like_binance() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let ok = signed_get(&sim, "/api/v3/account", "omitZeroBalances=true").await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let ts = now();
    let q = format!("timestamp={ts}");
    let bad = http(
        &sim,
        "GET",
        &format!("/api/v3/account?{q}&signature={}", sign("wrong", &q)),
        Some(DEMO_API_KEY),
        "",
    )
    .await;
    assert_eq!(
        (bad.status, bad.json()["code"].as_i64()),
        (400, Some(-1022))
    );
    assert_eq!(
        bad.json()["msg"],
        "Signature for this request is not valid."
    );

    // Upper-case hex is accepted.
    let up = http(
        &sim,
        "GET",
        &format!(
            "/api/v3/account?{q}&signature={}",
            sign(DEMO_API_SECRET, &q).to_uppercase()
        ),
        Some(DEMO_API_KEY),
        "",
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.body);

    for stale in [now() - 6_000, now() + 2_000] {
        let q = format!("timestamp={stale}");
        let r = http(
            &sim,
            "GET",
            &format!(
                "/api/v3/account?{q}&signature={}",
                sign(DEMO_API_SECRET, &q)
            ),
            Some(DEMO_API_KEY),
            "",
        )
        .await;
        assert_eq!(
            (r.status, r.json()["code"].as_i64()),
            (400, Some(-1021)),
            "{}",
            r.body
        );
    }
    // A larger recvWindow admits an older timestamp.
    let q = format!("recvWindow=20000&timestamp={}", now() - 6_000);
    let r = http(
        &sim,
        "GET",
        &format!(
            "/api/v3/account?{q}&signature={}",
            sign(DEMO_API_SECRET, &q)
        ),
        Some(DEMO_API_KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A plausible key that is not ours: -2015; none or a malformed one: -2014 (SPEC §5a).
    let q = format!("timestamp={}", now());
    let s = sign(DEMO_API_SECRET, &q);
    let other = "A".repeat(64);
    for (key, code) in [
        (Some(other.as_str()), -2015),
        (Some("someone-else"), -2014),
        (None, -2014),
    ] {
        let r = http(
            &sim,
            "GET",
            &format!("/api/v3/account?{q}&signature={s}"),
            key,
            "",
        )
        .await;
        assert_eq!((r.status, r.json()["code"].as_i64()), (401, Some(code)));
    }

    // The signature covers the percent-encoded query as sent.
    let q = format!("symbol=BTCUSDT&origClientOrderId=a%2Fb&timestamp={}", now());
    let r = http(
        &sim,
        "GET",
        &format!("/api/v3/order?{q}&signature={}", sign(DEMO_API_SECRET, &q)),
        Some(DEMO_API_KEY),
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_i64()),
        (400, Some(-2013)),
        "{}",
        r.body
    );
    let r = signed_get(&sim, "/api/v3/order", "symbol=BTCUSDT&orderId=42").await;
    assert_eq!(
        r.json(),
        json!({"code": -2013, "msg": "Order does not exist."})
    );

    // Server clock offset: a client that has not synced is rejected; serverTime moves.
    sim.set_clock_offset_ms(-10_000);
    let r = signed_get(&sim, "/api/v3/account", "").await;
    assert_eq!(r.json()["code"], -1021);
    let t = http(&sim, "GET", "/api/v3/time", None, "").await.json()["serverTime"]
        .as_i64()
        .expect("time");
    assert!((now() - 10_000 - t).abs() < 2_000);
    sim.set_clock_offset_ms(0);

    // WebSocket API: bad signature and unknown key.
    let mut ws = ws_connect(&sim.ws_url()).await;
    let ts = now();
    let req = json!({"id": 1, "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": DEMO_API_KEY, "timestamp": ts, "signature": sign("nope", "x")}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    assert_eq!(r["status"], 400);
    assert_eq!(
        r["error"],
        json!({"code": -1022, "msg": "Signature for this request is not valid."})
    );
    let req = json!({"id": 2, "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": "x", "timestamp": ts, "signature": sign(DEMO_API_SECRET, &format!("apiKey=x&timestamp={ts}"))}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    assert_eq!(
        (r["status"].clone(), r["error"]["code"].clone()),
        (json!(401), json!(-2014))
    );
    // With recvWindow, sorted alphabetically.
    let ts = now();
    let payload = format!("apiKey={DEMO_API_KEY}&recvWindow=10000&timestamp={ts}");
    let req = json!({"id": 3, "method": "userDataStream.subscribe.signature",
        "params": {"timestamp": ts, "apiKey": DEMO_API_KEY, "recvWindow": 10000, "signature": sign(DEMO_API_SECRET, &payload)}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    assert_eq!(r["status"], 200, "{r}");
    ws.send(Message::Text(
        json!({"id": 4, "method": "ping"}).to_string().into(),
    ))
    .await
    .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    assert_eq!(
        (r["id"].clone(), r["status"].clone(), r["result"].clone()),
        (json!(4), json!(200), json!({}))
    );
    // Malformed request: an error, not a dropped connection.
    ws.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws, T).await.expect("resp")["status"], 400);
}

// ------------------------------------------------------------------ 3. end to end

#[tokio::test]
async fn spot_stream_and_rest_agree_with_state() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    let produced = sim.run(200, None).await;
    assert!(produced >= 200);
    assert_eq!(sim.events_sent(), produced as u64);
    let evs = collect(&mut ws, sim.events_sent()).await;
    assert_eq!(evs.len() as u64, sim.events_sent());
    let mut last_e = 0;
    let mut stream_bal: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for v in &evs {
        assert_eq!(v["subscriptionId"], 0, "wrapped: {v}");
        let ev = &v["event"];
        let e = ev["E"].as_i64().expect("E");
        assert!(e > last_e, "E strictly increases");
        last_e = e;
        if ev["e"] == "outboundAccountPosition" {
            for b in ev["B"].as_array().expect("B") {
                let a = b["a"].as_str().expect("a").to_string();
                stream_bal.insert(a, (dec_of(&b["f"]), dec_of(&b["l"])));
            }
        }
    }
    let st = sim.state();
    for (a, (f, l)) in &stream_bal {
        assert_eq!(
            (st.balances[a].free, st.balances[a].locked),
            (*f, *l),
            "{a}"
        );
    }
    let acct = signed_get(&sim, "/api/v3/account", "").await.json();
    let rest_bal: BTreeMap<String, (Decimal, Decimal)> = acct["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .map(|b| {
            (
                b["asset"].as_str().expect("asset").to_string(),
                (dec_of(&b["free"]), dec_of(&b["locked"])),
            )
        })
        .collect();
    let state_bal: BTreeMap<String, (Decimal, Decimal)> = st
        .balances
        .iter()
        .map(|(a, b)| (a.clone(), (b.free, b.locked)))
        .collect();
    assert_eq!(rest_bal, state_bal);
    let oo = signed_get(&sim, "/api/v3/openOrders", "").await.json();
    let rest_orders: BTreeMap<String, (Decimal, Decimal, String)> = oo
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| {
            (
                format!("{}:{}", o["symbol"].as_str().unwrap_or(""), o["orderId"]),
                (
                    dec_of(&o["origQty"]),
                    dec_of(&o["executedQty"]),
                    o["status"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect();
    let state_orders: BTreeMap<String, (Decimal, Decimal, String)> = st
        .open_orders
        .iter()
        .map(|(k, o)| (k.clone(), (o.orig_qty, o.executed_qty, o.status.clone())))
        .collect();
    assert_eq!(rest_orders, state_orders);
    assert!(!state_orders.is_empty());
    // updateTime = time of the last balance change = the last outboundAccountPosition's u.
    let last_u = evs
        .iter()
        .rev()
        .find(|v| v["event"]["e"] == "outboundAccountPosition")
        .expect("pos")["event"]["u"]
        .clone();
    assert_eq!(acct["updateTime"], last_u);
}

#[tokio::test]
async fn usdm_stream_and_rest_agree_with_state() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let (_key, mut ws) = usdm_connect(&sim).await;
    sim.run(200, None).await;
    let evs = collect(&mut ws, sim.events_sent()).await;
    assert_eq!(evs.len() as u64, sim.events_sent());
    let mut last_e = 0;
    let mut wallets: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut positions: BTreeMap<String, (Decimal, Decimal, Decimal)> = BTreeMap::new();
    for ev in &evs {
        assert!(ev.get("subscriptionId").is_none(), "USD-M events are raw");
        let e = ev["E"].as_i64().expect("E");
        assert!(e > last_e);
        last_e = e;
        if ev["e"] == "ACCOUNT_UPDATE" {
            for b in ev["a"]["B"].as_array().expect("B") {
                wallets.insert(b["a"].as_str().expect("a").into(), dec_of(&b["wb"]));
            }
            for p in ev["a"]["P"].as_array().into_iter().flatten() {
                positions.insert(
                    p["s"].as_str().expect("s").into(),
                    (dec_of(&p["pa"]), dec_of(&p["ep"]), dec_of(&p["cr"])),
                );
            }
        }
    }
    let st = sim.state();
    for (a, wb) in &wallets {
        assert_eq!(st.balances[a].wallet_balance, *wb, "{a}");
    }
    for (s, (pa, ep, cr)) in &positions {
        let p = &st.positions[&format!("{s}:BOTH")];
        assert_eq!(
            (p.amount, p.entry_price, p.realized_pnl),
            (*pa, *ep, *cr),
            "{s}"
        );
    }
    let acct = signed_get(&sim, "/fapi/v3/account", "").await.json();
    for a in acct["assets"].as_array().expect("assets") {
        let b = &st.balances[a["asset"].as_str().expect("asset")];
        assert_eq!(dec_of(&a["walletBalance"]), b.wallet_balance);
        assert_eq!(dec_of(&a["crossWalletBalance"]), b.cross_wallet_balance);
        assert_eq!(dec_of(&a["availableBalance"]), b.available_balance);
    }
    assert_eq!(
        acct["assets"].as_array().map(Vec::len),
        Some(st.balances.len())
    );
    let pr = signed_get(&sim, "/fapi/v3/positionRisk", "").await.json();
    let rest_pos: BTreeMap<String, (Decimal, Decimal, Decimal)> = pr
        .as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                format!("{}:BOTH", p["symbol"].as_str().unwrap_or("")),
                (
                    dec_of(&p["positionAmt"]),
                    dec_of(&p["entryPrice"]),
                    dec_of(&p["unRealizedProfit"]),
                ),
            )
        })
        .collect();
    let state_pos: BTreeMap<String, (Decimal, Decimal, Decimal)> = st
        .positions
        .iter()
        .filter(|(_, p)| !p.amount.is_zero())
        .map(|(k, p)| (k.clone(), (p.amount, p.entry_price, p.unrealized_pnl)))
        .collect();
    assert_eq!(rest_pos, state_pos);
    let oo = signed_get(&sim, "/fapi/v1/openOrders", "").await.json();
    let rest_ids: Vec<String> = oo
        .as_array()
        .expect("a")
        .iter()
        .map(|o| format!("{}:{}", o["symbol"].as_str().unwrap_or(""), o["orderId"]))
        .collect();
    let mut rest_ids = rest_ids;
    rest_ids.sort();
    assert_eq!(rest_ids, st.open_orders.keys().cloned().collect::<Vec<_>>());
    let algos = signed_get(&sim, "/fapi/v1/openAlgoOrders", "").await.json();
    assert_eq!(
        algos.as_array().map(Vec::len),
        Some(st.open_algo_orders.len())
    );
}

// ------------------------------------------------------------------ 4. model consistency

fn check_model(market: SimMarket) {
    let mut m = Model::new(market, 99, 1_700_000_000_000);
    let initial: BTreeMap<String, Decimal> =
        m.st.positions
            .iter()
            .map(|(k, p)| (k.clone(), p.amount))
            .collect();
    let mut last_e = 0;
    let mut t = 1_700_000_000_000;
    for i in 0..10_000 {
        t += (i % 3) as i64; // the clock sometimes stands still
        let evs = m.step(t);
        assert!(!evs.is_empty());
        for ev in &evs {
            let e = ev["E"].as_i64().expect("E");
            assert!(e > last_e, "E strictly increases");
            last_e = e;
        }
        assert!(m.st.open_orders.len() <= MAX_OPEN_ORDERS);
        assert!(m.st.open_algo_orders.len() <= MAX_OPEN_ALGOS);
        for (a, b) in &m.st.balances {
            assert!(
                b.free >= Decimal::ZERO || market == SimMarket::Usdm,
                "{a} free {b:?}"
            );
            assert!(b.locked >= Decimal::ZERO, "{a} locked");
            assert!(b.wallet_balance >= Decimal::ZERO, "{a} wallet");
        }
    }
    let mut filled: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for f in m.st.fills.values() {
        let e = filled
            .entry(format!("{}:{}", f.symbol, f.order_id))
            .or_default();
        e.0 += f.qty;
        e.1 += f.quote_qty;
    }
    for (k, o) in &m.st.orders {
        let (q, quote) = filled.get(k).copied().unwrap_or_default();
        assert_eq!(q, o.executed_qty, "{k}");
        assert_eq!(quote, o.cum_quote_qty, "{k}");
        assert!(o.executed_qty <= o.orig_qty);
    }
    for (k, o) in &m.st.open_orders {
        assert_eq!(Some(o), m.st.orders.get(k));
        assert!(o.status == "NEW" || o.status == "PARTIALLY_FILLED");
    }
    match market {
        SimMarket::Spot => {
            // Locked = what the open orders hold.
            let mut locked: BTreeMap<String, Decimal> = BTreeMap::new();
            for o in m.st.open_orders.values() {
                let base = o.symbol.trim_end_matches("USDT").to_string();
                let rem = o.orig_qty - o.executed_qty;
                if o.side == "BUY" {
                    *locked.entry("USDT".into()).or_default() += rem * o.price;
                } else {
                    *locked.entry(base).or_default() += rem;
                }
            }
            for (a, b) in &m.st.balances {
                assert_eq!(b.locked, locked.get(a).copied().unwrap_or_default(), "{a}");
            }
        }
        SimMarket::Usdm => {
            let mut amounts = initial;
            for f in m.st.fills.values() {
                let d = if f.side == "BUY" { f.qty } else { -f.qty };
                *amounts.entry(format!("{}:BOTH", f.symbol)).or_default() += d;
            }
            for (k, p) in &m.st.positions {
                assert_eq!(p.amount, amounts.get(k).copied().unwrap_or_default(), "{k}");
                let rp: Decimal =
                    m.st.fills
                        .values()
                        .filter(|f| format!("{}:BOTH", f.symbol) == *k)
                        .map(|f| f.realized_pnl)
                        .sum();
                assert_eq!(p.realized_pnl, rp, "{k}");
            }
        }
    }
    assert!(m.st.fills.len() > 1000);
}

#[test]
fn spot_model_stays_consistent_over_10k_steps() {
    check_model(SimMarket::Spot);
}

#[test]
fn usdm_model_stays_consistent_over_10k_steps() {
    check_model(SimMarket::Usdm);
}

#[test]
fn sessions_are_deterministic_given_a_seed() {
    let mut a = Model::new(SimMarket::Spot, 5, 1_000);
    let mut b = Model::new(SimMarket::Spot, 5, 1_000);
    for i in 0..500 {
        assert_eq!(a.step(1_000 + i), b.step(1_000 + i));
    }
    assert_eq!(a.st, b.st);
}

#[tokio::test]
async fn seeded_orders_and_assets_show_in_rest() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    sim.seed_assets(1_000);
    sim.seed_open_orders(2_000);
    let st = sim.state();
    assert!(st.balances.len() >= 1_004 && st.open_orders.len() == 2_000);
    let oo = signed_get(&sim, "/api/v3/openOrders", "").await.json();
    assert_eq!(oo.as_array().map(Vec::len), Some(2_000));
    let acct = signed_get(&sim, "/api/v3/account", "").await.json();
    assert_eq!(
        acct["balances"].as_array().map(Vec::len),
        Some(st.balances.len())
    );
    // Trading carries on without adding orders beyond the seeded ones.
    sim.run(100, None).await;
    assert!(sim.state().open_orders.len() <= 2_000);
}

// ------------------------------------------------------------------ 5. faults

#[tokio::test]
async fn drop_connections_closes_without_a_close_frame() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    sim.drop_connections();
    let end = tokio::time::timeout(T, ws.next())
        .await
        .expect("closed in time");
    assert!(
        !matches!(end, Some(Ok(Message::Close(_)))),
        "expected an abrupt close, got {end:?}"
    );
    assert_eq!(sim.subscriber_count(), 0);
    sim.step().await;
    assert_eq!(
        sim.events_sent(),
        0,
        "events without a subscriber are dropped"
    );
}

#[tokio::test]
async fn usdm_listen_key_lifecycle_and_expiry() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let no_key = http(&sim, "POST", "/fapi/v1/listenKey", None, "").await;
    assert_eq!(
        (no_key.status, no_key.json()["code"].as_i64()),
        (401, Some(-2014))
    );
    let (key, mut ws) = usdm_connect(&sim).await;
    let again = http(&sim, "POST", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "")
        .await
        .json();
    assert_eq!(again["listenKey"], key.as_str(), "same key while active");
    let put = http(&sim, "PUT", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await;
    assert_eq!(put.status, 200);
    assert_eq!(sim.listen_key_keepalives(), 1);

    sim.expire_listen_key();
    let ev = next_json(&mut ws, T).await.expect("listenKeyExpired");
    assert_eq!(
        (ev["e"].as_str(), ev["listenKey"].as_str()),
        (Some("listenKeyExpired"), Some(key.as_str()))
    );
    // As production: the socket stays open, and the expired key's events stop.
    sim.run(20, None).await;
    assert!(
        next_json(&mut ws, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing after expiry"
    );
    let put = http(&sim, "PUT", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await;
    assert_eq!(put.status, 400);
    assert_eq!(
        put.json(),
        json!({"code": -1125, "msg": "This listenKey does not exist."})
    );
    assert_eq!(sim.listen_key_keepalives(), 2);

    // A new POST gives a new key; the old key's socket still hears nothing of it.
    let (key2, mut ws2) = usdm_connect(&sim).await;
    assert_ne!(key2, key);
    sim.run(20, None).await;
    assert!(
        next_json(&mut ws2, T).await.is_some(),
        "the new key's events"
    );
    assert!(
        next_json(&mut ws, Duration::from_millis(300))
            .await
            .is_none(),
        "an old key delivers nothing"
    );
    // 60 minutes without a keepalive: the key expires by itself at the next step.
    sim.set_clock_offset_ms(61 * 60 * 1000);
    sim.step().await;
    let mut expired = false;
    while let Some(ev) = next_json(&mut ws2, Duration::from_millis(500)).await {
        expired |= ev["e"] == "listenKeyExpired";
    }
    assert!(expired, "listenKeyExpired when due");
    let put = http(&sim, "PUT", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await;
    assert_eq!(put.json()["code"], -1125);
    sim.set_clock_offset_ms(0);
    let (_key3, mut ws2) = usdm_connect(&sim).await;
    let del = http(&sim, "DELETE", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await;
    assert_eq!(del.status, 200);
    assert!(next_json(&mut ws2, T).await.is_none());
    let put = http(&sim, "PUT", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await;
    assert_eq!(put.json()["code"], -1125);
}

#[tokio::test]
async fn terminate_subscription_stops_delivery() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    sim.terminate_subscription();
    let ev = next_json(&mut ws, T).await.expect("terminated");
    assert_eq!(ev["event"]["e"], "eventStreamTerminated");
    assert_eq!(ev["subscriptionId"], 0);
    assert_eq!(sim.subscriber_count(), 0);
    let sent = sim.events_sent();
    sim.run(20, None).await;
    assert_eq!(sim.events_sent(), sent);
    // Resubscribing on the same connection gets a new subscription id.
    let ts = now();
    let sig = sign(
        DEMO_API_SECRET,
        &format!("apiKey={DEMO_API_KEY}&timestamp={ts}"),
    );
    let req = json!({"id": 9, "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": DEMO_API_KEY, "timestamp": ts, "signature": sig}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    assert_eq!(r["result"]["subscriptionId"], 1);
    // Unsubscribe: response, then eventStreamTerminated.
    let req = json!({"id": 10, "method": "userDataStream.unsubscribe"});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws, T).await.expect("resp")["status"], 200);
    assert_eq!(
        next_json(&mut ws, T).await.expect("ev")["event"]["e"],
        "eventStreamTerminated"
    );
}

#[tokio::test]
async fn server_shutdown_then_close() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    let t0 = tokio::time::Instant::now();
    sim.server_shutdown();
    let ev = next_json(&mut ws, T).await.expect("serverShutdown");
    assert_eq!(ev["event"]["e"], "serverShutdown");
    assert!(ev.get("subscriptionId").is_none());
    let end = tokio::time::timeout(T, ws.next())
        .await
        .expect("closed in time");
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn duplicate_and_reorder_events() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let (_k, mut ws) = usdm_connect(&sim).await;
    sim.set_duplicate_events(true);
    let n = sim.run(20, None).await;
    let evs = collect(&mut ws, 2 * n as u64).await;
    assert_eq!(evs.len(), 2 * n);
    for pair in evs.chunks(2) {
        assert_eq!(pair[0], pair[1]);
    }
    sim.set_duplicate_events(false);
    sim.set_reorder_events(true);
    let n = sim.run(20, None).await;
    sim.set_reorder_events(false); // flushes a held event
    let evs = collect(&mut ws, n as u64).await;
    assert_eq!(evs.len(), n);
    let es: Vec<i64> = evs.iter().map(|v| v["E"].as_i64().expect("E")).collect();
    for pair in es.chunks(2).filter(|p| p.len() == 2) {
        assert!(pair[0] > pair[1], "swapped pairwise: {es:?}");
    }
}

#[tokio::test]
async fn fail_rest_answers_the_injected_status() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    sim.fail_rest(429, 2, Some(7));
    for _ in 0..2 {
        let r = signed_get(&sim, "/api/v3/account", "").await;
        assert_eq!(r.status, 429);
        assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("7"));
        assert_eq!(r.json()["code"], -1003);
    }
    assert_eq!(signed_get(&sim, "/api/v3/account", "").await.status, 200);
    sim.fail_rest(418, 1, Some(120));
    let r = http(&sim, "GET", "/api/v3/time", None, "").await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (418, Some(-1003)));
    assert_eq!(
        r.headers.get("retry-after").map(String::as_str),
        Some("120")
    );
    sim.fail_rest(503, 1, None);
    let r = http(&sim, "GET", "/api/v3/time", None, "").await;
    assert_eq!(r.status, 503);
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "plain body"
    );
    assert_eq!(
        http(&sim, "GET", "/api/v3/time", None, "").await.status,
        200
    );
    assert_eq!(sim.rest_calls(), 6);
}

#[tokio::test]
async fn silent_change_changes_rest_but_sends_nothing() {
    for market in [SimMarket::Spot, SimMarket::Usdm] {
        let sim = Sim::start(test_cfg(market)).await.expect("start");
        for _ in 0..30 {
            sim.step().await;
        }
        if sim.state().open_orders.is_empty() {
            sim.seed_open_orders(2);
        }
        let before = sim.state();
        assert!(!before.open_orders.is_empty());
        sim.silent_change();
        let after = sim.state();
        assert_eq!(sim.events_sent(), 0);
        assert_ne!(before.balances["USDT"], after.balances["USDT"]);
        assert_eq!(after.open_orders.len() + 1, before.open_orders.len());
        if market == SimMarket::Usdm {
            assert_ne!(
                before.positions["BTCUSDT:BOTH"].amount,
                after.positions["BTCUSDT:BOTH"].amount
            );
            let pr = signed_get(&sim, "/fapi/v3/positionRisk", "symbol=BTCUSDT")
                .await
                .json();
            assert_eq!(
                dec_of(&pr[0]["positionAmt"]),
                after.positions["BTCUSDT:BOTH"].amount
            );
        } else {
            let acct = signed_get(&sim, "/api/v3/account", "").await.json();
            let usdt = acct["balances"]
                .as_array()
                .expect("b")
                .iter()
                .find(|b| b["asset"] == "USDT")
                .expect("usdt")
                .clone();
            assert_eq!(dec_of(&usdt["free"]), after.balances["USDT"].free);
        }
    }
}

#[tokio::test]
async fn raw_frames_and_pings_reach_the_client() {
    let mut cfg = test_cfg(SimMarket::Spot);
    cfg.ping_interval = Duration::from_millis(50);
    let sim = Sim::start(cfg).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    sim.send_raw_text("{not json".to_string());
    sim.send_raw_binary(vec![1, 2, 3]);
    let (mut text, mut bin, mut ping) = (false, false, false);
    let deadline = tokio::time::Instant::now() + T;
    while !(text && bin && ping) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => text |= t.as_str() == "{not json",
            Ok(Some(Ok(Message::Binary(b)))) => bin |= b.as_ref() == [1, 2, 3],
            Ok(Some(Ok(Message::Ping(_)))) => ping = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_stops_the_server_and_paced_run() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let t0 = tokio::time::Instant::now();
    let n = sim.run(20, Some(200)).await;
    assert!(n >= 20);
    assert!(t0.elapsed() >= Duration::from_millis(80), "paced");
    let mut ws = spot_subscribe(&sim).await;
    sim.shutdown();
    assert!(next_json(&mut ws, T).await.is_none());
    let addr = sim.addr();
    let deadline = tokio::time::Instant::now() + T;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server still accepting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!("usdm".parse::<SimMarket>().ok(), Some(SimMarket::Usdm));
    assert!("coinm".parse::<SimMarket>().is_err());
}

/// Everything a socket receives until it has been quiet for 300 ms.
pub(super) async fn drain(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(v) = next_json(ws, Duration::from_millis(300)).await {
        out.push(v);
    }
    out
}

pub(super) fn types(evs: &[Value]) -> BTreeSet<String> {
    evs.iter()
        .map(|v| {
            v.get("data").unwrap_or(v)["e"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn usdm_url_forms_deliver_like_production() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let key = new_listen_key(&sim).await;
    let base = sim.ws_url();
    let mut path_form = ws_connect(&format!("{base}/private/ws/{key}")).await;
    let mut legacy = ws_connect(&format!("{base}/ws/{key}")).await;
    let mut bare = ws_connect(&format!("{base}/private/ws?listenKey={key}")).await;
    let mut orders_only = ws_connect(&format!(
        "{base}/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE"
    ))
    .await;
    let mut all = ws_connect(&format!(
        "{base}/private/ws?listenKey={key}&events={ALL_USDM_EVENTS}"
    ))
    .await;
    let mut stream_events = ws_connect(&format!(
        "{base}/private/stream?listenKey={key}&events=ACCOUNT_UPDATE"
    ))
    .await;
    let mut stream_streams = ws_connect(&format!("{base}/private/stream?streams={key}")).await;
    let mut bogus = ws_connect(&format!(
        "{base}/private/ws?listenKey=bogus&events={ALL_USDM_EVENTS}"
    ))
    .await;
    let mut subscribed = ws_connect(&format!("{base}/private/stream")).await;
    let req = json!({"method": "SUBSCRIBE", "params": [key], "id": 1});
    subscribed
        .send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    assert_eq!(
        next_json(&mut subscribed, T).await,
        Some(json!({"result": null, "id": 1}))
    );
    let req = json!({"method": "LIST_SUBSCRIPTIONS", "id": 2});
    subscribed
        .send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    assert_eq!(
        next_json(&mut subscribed, T).await,
        Some(json!({"result": [key], "id": 2}))
    );

    sim.run(300, None).await;
    let expected_types = types(&drain(&mut all).await);
    assert!(
        expected_types.contains("ORDER_TRADE_UPDATE") && expected_types.contains("ACCOUNT_UPDATE"),
        "{expected_types:?}"
    );
    for (name, ws) in [
        ("/private/ws/<key>", &mut path_form),
        ("/ws/<key>", &mut legacy),
        ("without events", &mut bare),
        ("an unknown key", &mut bogus),
    ] {
        assert_eq!(
            drain(ws).await,
            Vec::<Value>::new(),
            "{name} delivers nothing"
        );
    }
    assert_eq!(
        types(&drain(&mut orders_only).await),
        BTreeSet::from(["ORDER_TRADE_UPDATE".to_owned()])
    );
    let wrapped = drain(&mut stream_events).await;
    assert!(wrapped.iter().all(|v| v["stream"] == key.as_str()));
    assert_eq!(
        types(&wrapped),
        BTreeSet::from(["ACCOUNT_UPDATE".to_owned()])
    );
    for ws in [&mut stream_streams, &mut subscribed] {
        let evs = drain(ws).await;
        assert!(evs.iter().all(|v| v["stream"] == key.as_str()));
        assert_eq!(types(&evs), expected_types);
    }

    // Expiry reaches the sockets that asked for `listenKeyExpired` (a bare ws-mode key gets
    // nothing else), and no socket is closed by it.
    sim.expire_listen_key();
    for ws in [&mut all, &mut bare, &mut stream_streams] {
        assert_eq!(
            types(&drain(ws).await),
            BTreeSet::from(["listenKeyExpired".to_owned()])
        );
    }
    assert!(drain(&mut orders_only).await.is_empty());
    assert!(drain(&mut path_form).await.is_empty());
}

#[tokio::test]
async fn stalled_connections_answer_nothing() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let (_key, mut ws) = usdm_connect(&sim).await;
    sim.stall_connections();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("send ping");
    sim.run(20, None).await;
    let got = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(
        got.is_err(),
        "a half-open socket sends nothing, not even a pong: {got:?}"
    );
}
