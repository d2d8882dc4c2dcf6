//! Tests of ping, exchangeInfo and request weight: the used-weight header on every response,
//! Binance's weights, the 429 past the budget and the WS API's `rateLimits`.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::tests::{T, http, next_json, signed_get, test_cfg, ws_connect};
use super::*;

fn used(r: &super::tests::Resp) -> u32 {
    r.headers
        .get("x-mbx-used-weight-1m")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no X-MBX-USED-WEIGHT-1M: {:?}", r.headers))
}

fn filter<'a>(sym: &'a Value, t: &str) -> &'a Value {
    sym["filters"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["filterType"] == t))
        .unwrap_or_else(|| panic!("no {t} filter: {sym}"))
}

#[tokio::test]
async fn ping_and_exchange_info() {
    for (market, ping, info) in [
        (SimMarket::Spot, "/api/v3/ping", "/api/v3/exchangeInfo"),
        (SimMarket::Usdm, "/fapi/v1/ping", "/fapi/v1/exchangeInfo"),
    ] {
        let sim = Sim::start(test_cfg(market)).await.expect("start");
        let r = http(&sim, "GET", ping, None, "").await;
        assert_eq!((r.status, r.json()), (200, json!({})));
        let r = http(&sim, "GET", info, None, "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["timezone"], "UTC");
        assert!(v["serverTime"].is_i64());
        let rl = &v["rateLimits"][0];
        assert_eq!(rl["rateLimitType"], "REQUEST_WEIGHT");
        assert_eq!(rl["interval"], "MINUTE");
        let limit = match market {
            SimMarket::Spot => 6000,
            SimMarket::Usdm => 2400,
        };
        assert_eq!(rl["limit"], limit);
        assert!(
            v["rateLimits"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["rateLimitType"] == "ORDERS"))
        );
        let syms = v["symbols"].as_array().expect("symbols");
        assert_eq!(syms.len(), 3);
        let btc = syms
            .iter()
            .find(|s| s["symbol"] == "BTCUSDT")
            .expect("BTCUSDT");
        assert_eq!(
            (
                btc["status"].clone(),
                btc["baseAsset"].clone(),
                btc["quoteAsset"].clone()
            ),
            (json!("TRADING"), json!("BTC"), json!("USDT"))
        );
        assert!(
            btc["orderTypes"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("LIMIT")))
        );
        match market {
            SimMarket::Spot => {
                assert_eq!(filter(btc, "PRICE_FILTER")["tickSize"], "0.01000000");
                assert_eq!(filter(btc, "LOT_SIZE")["stepSize"], "0.00001000");
                assert_eq!(filter(btc, "LOT_SIZE")["minQty"], "0.00001000");
                assert_eq!(filter(btc, "NOTIONAL")["minNotional"], "5.00000000");
                assert_eq!(btc["baseAssetPrecision"], 8);
                assert_eq!(btc["quoteAssetPrecision"], 8);
                // One symbol, or a list.
                let one = http(&sim, "GET", &format!("{info}?symbol=ETHUSDT"), None, "")
                    .await
                    .json();
                assert_eq!(one["symbols"].as_array().map(Vec::len), Some(1));
                let two = http(
                    &sim,
                    "GET",
                    &format!("{info}?symbols=%5B%22ETHUSDT%22,%22BNBUSDT%22%5D"),
                    None,
                    "",
                )
                .await;
                assert_eq!(
                    two.json()["symbols"].as_array().map(Vec::len),
                    Some(2),
                    "{}",
                    two.body
                );
                let bad = http(&sim, "GET", &format!("{info}?symbol=NOPE"), None, "").await;
                assert_eq!(
                    (bad.status, bad.json()["code"].as_i64()),
                    (400, Some(-1121))
                );
            }
            SimMarket::Usdm => {
                assert_eq!(filter(btc, "PRICE_FILTER")["tickSize"], "0.1");
                assert_eq!(filter(btc, "LOT_SIZE")["stepSize"], "0.001");
                assert_eq!(filter(btc, "MIN_NOTIONAL")["notional"], "5");
                assert_eq!(
                    (
                        btc["pricePrecision"].clone(),
                        btc["quantityPrecision"].clone()
                    ),
                    (json!(1), json!(3))
                );
                assert_eq!(btc["contractType"], "PERPETUAL");
                assert_eq!(btc["marginAsset"], "USDT");
                assert!(
                    btc["timeInForce"]
                        .as_array()
                        .is_some_and(|t| t.contains(&json!("GTX")))
                );
                assert!(
                    v["assets"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x["asset"] == "USDT"))
                );
            }
        }
    }
}

#[tokio::test]
async fn every_response_reports_the_weight_used_and_429_past_the_budget() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let w0 = used(&http(&sim, "GET", "/api/v3/time", None, "").await);
    let steps = [
        ("/api/v3/account", "", 20),
        ("/api/v3/openOrders", "", 80),
        ("/api/v3/openOrders", "symbol=BTCUSDT", 6),
        ("/api/v3/allOrders", "symbol=BTCUSDT", 20),
        ("/api/v3/myTrades", "symbol=BTCUSDT", 20),
        ("/api/v3/myTrades", "symbol=BTCUSDT&orderId=1", 5),
        ("/api/v3/order", "symbol=BTCUSDT&orderId=1", 4),
    ];
    let mut last = w0;
    for (path, q, w) in steps {
        let r = signed_get(&sim, path, q).await;
        // Within one minute the count grows by the weight (a minute boundary resets it).
        let now = used(&r);
        assert!(
            now == last + w || now == w,
            "{path}?{q}: {last} + {w} != {now}"
        );
        last = now;
    }
    // Errors carry the header too.
    let r = http(&sim, "GET", "/api/v3/account", None, "").await;
    assert_eq!(r.status, 401);
    used(&r);
    // Past the budget: 429 -1003 with Retry-After; nothing is added.
    sim.set_weight_limit(sim.used_weight() + 10);
    let r = signed_get(&sim, "/api/v3/account", "").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["code"], -1003);
    let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.starts_with(
            "Too many requests; current limit of IP(127.0.0.1) request weight per minute is "
        ),
        "{msg}"
    );
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // A cheap call still fits.
    let r = http(&sim, "GET", "/api/v3/ping", None, "").await;
    assert!(r.status == 200 || r.status == 429);
    sim.set_weight_limit(6000);

    // USD-M weights.
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let mut last = used(&http(&sim, "GET", "/fapi/v1/ping", None, "").await);
    for (path, q, w) in [
        ("/fapi/v3/account", "", 5),
        ("/fapi/v3/positionRisk", "", 5),
        ("/fapi/v1/openOrders", "", 40),
        ("/fapi/v1/openOrders", "symbol=BTCUSDT", 1),
        ("/fapi/v1/openAlgoOrders", "", 40),
        ("/fapi/v1/allOrders", "symbol=BTCUSDT", 5),
        ("/fapi/v1/userTrades", "symbol=BTCUSDT", 5),
        ("/fapi/v1/order", "symbol=BTCUSDT&orderId=1", 1),
    ] {
        let now = used(&signed_get(&sim, path, q).await);
        assert!(
            now == last + w || now == w,
            "{path}?{q}: {last} + {w} != {now}"
        );
        last = now;
    }
    let now = used(&http(&sim, "POST", "/fapi/v1/listenKey", Some(DEMO_API_KEY), "").await);
    assert!(now == last + 1 || now == 1);
}

#[tokio::test]
async fn ws_api_rate_limits_count_the_shared_budget() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = ws_connect(&sim.ws_url()).await;
    ws.send(Message::Text(
        json!({"id": 1, "method": "ping"}).to_string().into(),
    ))
    .await
    .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    let count = r["rateLimits"][0]["count"].as_u64().expect("count");
    assert_eq!(r["rateLimits"][0]["limit"], 6000);
    assert_eq!(count, u64::from(sim.used_weight()));
    // A REST call adds to the same count.
    signed_get(&sim, "/api/v3/account", "").await;
    ws.send(Message::Text(
        json!({"id": 2, "method": "time"}).to_string().into(),
    ))
    .await
    .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    let after = r["rateLimits"][0]["count"].as_u64().expect("count");
    assert!(after == count + 21 || after < count, "{count} -> {after}");
    sim.set_weight_limit(sim.used_weight());
    ws.send(Message::Text(
        json!({"id": 3, "method": "ping"}).to_string().into(),
    ))
    .await
    .expect("send");
    let r = next_json(&mut ws, T).await.expect("resp");
    if r["status"] == 429 {
        assert_eq!(r["error"]["code"], -1003);
        assert!(r["error"]["data"]["retryAfter"].is_i64(), "{r}");
    }
}

#[tokio::test]
async fn position_risk_lists_symbols_with_orders_but_no_position() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let pr = signed_get(&sim, "/fapi/v3/positionRisk", "").await.json();
    assert!(
        pr.as_array()
            .is_some_and(|a| a.iter().all(|r| r["symbol"] != "BNBUSDT")),
        "{pr}"
    );
    let q = format!(
        "symbol=BNBUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=500.00&timestamp={}",
        super::tests::now()
    );
    let target = format!(
        "/fapi/v1/order?{q}&signature={}",
        super::tests::sign(DEMO_API_SECRET, &q)
    );
    let placed = http(&sim, "POST", &target, Some(DEMO_API_KEY), "").await;
    assert_eq!(placed.status, 200, "{}", placed.body);
    let pr = signed_get(&sim, "/fapi/v3/positionRisk", "symbol=BNBUSDT")
        .await
        .json();
    let row = &pr[0];
    assert_eq!(
        (row["symbol"].as_str(), row["positionAmt"].as_str()),
        (Some("BNBUSDT"), Some("0")),
        "{pr}"
    );
    assert_eq!(
        (row["entryPrice"].as_str(), row["notional"].as_str()),
        (Some("0"), Some("0.00000000"))
    );
    assert_eq!(row["openOrderInitialMargin"], "25.00000000");
    assert_eq!(row["bidNotional"], "500");
    let acct = signed_get(&sim, "/fapi/v3/account", "").await.json();
    assert!(acct["positions"].as_array().is_some_and(|a| {
        a.iter()
            .any(|p| p["symbol"] == "BNBUSDT" && p["positionAmt"] == "0")
    }));
    // The model itself holds no BNBUSDT position.
    assert!(!sim.state().positions.contains_key("BNBUSDT:BOTH"));
}

#[tokio::test]
async fn spot_time_unit_microsecond() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let us = [("X-MBX-TIME-UNIT", "MICROSECOND")];
    let t = super::tests::http_with(&sim, "GET", "/api/v3/time", None, "", &us)
        .await
        .json()["serverTime"]
        .as_i64()
        .expect("serverTime");
    assert!((t / 1000 - super::tests::now()).abs() < 5_000, "{t}");
    let ms = http(&sim, "GET", "/api/v3/time", None, "").await.json()["serverTime"]
        .as_i64()
        .expect("ms");
    assert!(ms < 10_000_000_000_000, "default stays in ms");
    let q = format!("timestamp={}", super::tests::now());
    let target = format!(
        "/api/v3/account?{q}&signature={}",
        super::tests::sign(DEMO_API_SECRET, &q)
    );
    let lower = [("X-MBX-TIME-UNIT", "microsecond")];
    let acct = super::tests::http_with(&sim, "GET", &target, Some(DEMO_API_KEY), "", &lower)
        .await
        .json();
    assert!(
        acct["updateTime"]
            .as_i64()
            .is_some_and(|u| u > 1_000_000_000_000_000),
        "{acct}"
    );
    let q = format!(
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=59000&timestamp={}",
        super::tests::now()
    );
    let target = format!(
        "/api/v3/order?{q}&signature={}",
        super::tests::sign(DEMO_API_SECRET, &q)
    );
    let b = super::tests::http_with(&sim, "POST", &target, Some(DEMO_API_KEY), "", &us)
        .await
        .json();
    for k in ["transactTime", "workingTime"] {
        assert!(
            b[k].as_i64().is_some_and(|u| u > 1_000_000_000_000_000),
            "{k}: {b}"
        );
    }
    let oo = super::tests::http_with(
        &sim,
        "GET",
        &{
            let q = format!("symbol=BTCUSDT&timestamp={}", super::tests::now());
            format!(
                "/api/v3/openOrders?{q}&signature={}",
                super::tests::sign(DEMO_API_SECRET, &q)
            )
        },
        Some(DEMO_API_KEY),
        "",
        &us,
    )
    .await
    .json();
    assert!(
        oo[0]["time"]
            .as_i64()
            .is_some_and(|u| u > 1_000_000_000_000_000),
        "{oo}"
    );
    assert_eq!(oo[0]["orderListId"], -1, "other numbers stay as they are");
}
