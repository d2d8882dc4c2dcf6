//! Tests of order entry: Spot and USD-M orders placed, filled (at once or when the price path
//! crosses them) and cancelled over REST, with the events a subscriber receives, the REST state
//! afterwards, Binance's validation errors, and the random session running alongside.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;

use super::tests::{
    Resp, Ws, dec_of, drain, http, now, sign, signed_get, spot_subscribe, test_cfg, unwrap_event,
    usdm_connect,
};
use super::*;

/// A signed request with every param in the query string.
pub(super) async fn signed(sim: &Sim, method: &str, path: &str, params: &str) -> Resp {
    let q = format!("{params}&timestamp={}", now());
    let sig = sign(DEMO_API_SECRET, &q);
    http(
        sim,
        method,
        &format!("{path}?{q}&signature={sig}"),
        Some(DEMO_API_KEY),
        "",
    )
    .await
}

pub(super) fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

/// Events received, unwrapped, as (type, execution type) for a compact comparison.
fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(unwrap_event)
        .map(|e| match e["e"].as_str().unwrap_or("") {
            "executionReport" => format!("executionReport:{}", e["x"].as_str().unwrap_or("")),
            "ORDER_TRADE_UPDATE" => {
                format!("ORDER_TRADE_UPDATE:{}", e["o"]["x"].as_str().unwrap_or(""))
            }
            other => other.to_string(),
        })
        .collect()
}

async fn events(ws: &mut Ws) -> Vec<Value> {
    drain(ws)
        .await
        .iter()
        .map(|v| unwrap_event(v).clone())
        .collect()
}

fn err_of(r: &Resp) -> (u16, i64, String) {
    let v = r.json();
    (
        r.status,
        v["code"].as_i64().unwrap_or(0),
        v["msg"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn spot_orders_fill_rest_and_cancel_like_binance() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = spot_subscribe(&sim).await;
    assert_eq!(sim.price("BTCUSDT"), Some(d("60000.00")));

    // A resting LIMIT BUY: FULL by default, NEW, funds locked.
    let r = signed(&sim, "POST", "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=59000.00&newClientOrderId=my-1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(
        (
            b["status"].as_str(),
            b["clientOrderId"].as_str(),
            b["orderListId"].as_i64()
        ),
        (Some("NEW"), Some("my-1"), Some(-1))
    );
    assert_eq!(b["fills"], serde_json::json!([]));
    assert!(b["transactTime"].is_i64() && b["workingTime"].is_i64());
    let id = b["orderId"].as_i64().expect("orderId");
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        ["executionReport:NEW", "outboundAccountPosition"]
    );
    assert_eq!(
        (
            evs[0]["c"].as_str(),
            evs[0]["i"].as_i64(),
            evs[0]["w"].as_bool()
        ),
        (Some("my-1"), Some(id), Some(true))
    );
    assert_eq!(sim.state().balances["USDT"].locked, d("590"));
    let oo = signed_get(&sim, "/api/v3/openOrders", "symbol=BTCUSDT")
        .await
        .json();
    assert!(
        oo.as_array()
            .is_some_and(|a| a.iter().any(|o| o["orderId"] == id))
    );

    // The price path crosses it: it fills at its price, as maker.
    assert_eq!(sim.set_price("BTCUSDT", d("58900")), Some(2));
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        ["executionReport:TRADE", "outboundAccountPosition"]
    );
    assert_eq!(
        (
            evs[0]["X"].as_str(),
            evs[0]["L"].as_str(),
            evs[0]["m"].as_bool()
        ),
        (Some("FILLED"), Some("59000.00000000"), Some(true))
    );
    let o = signed_get(
        &sim,
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={id}"),
    )
    .await
    .json();
    assert_eq!(
        (o["status"].as_str(), o["executedQty"].as_str()),
        (Some("FILLED"), Some("0.01000000"))
    );
    let t = signed_get(
        &sim,
        "/api/v3/myTrades",
        &format!("symbol=BTCUSDT&orderId={id}"),
    )
    .await
    .json();
    assert_eq!(
        (
            t[0]["isMaker"].as_bool(),
            t[0]["isBuyer"].as_bool(),
            t[0]["qty"].as_str()
        ),
        (Some(true), Some(true), Some("0.01000000"))
    );
    let st = sim.state();
    assert_eq!(st.balances["USDT"].locked, Decimal::ZERO);
    assert_eq!(st.balances["USDT"].free, d("99410"));
    assert_eq!(st.balances["BTC"].free, d("1.5") + d("0.01") - d("0.00001"));

    // MARKET by quantity, in the body: fills at once at the price path.
    let q = format!(
        "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.5&timestamp={}",
        now()
    );
    let body = format!("{q}&signature={}", sign(DEMO_API_SECRET, &q));
    let r = http(&sim, "POST", "/api/v3/order", Some(DEMO_API_KEY), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(
        (
            b["status"].as_str(),
            b["type"].as_str(),
            b["price"].as_str()
        ),
        (Some("FILLED"), Some("MARKET"), Some("0.00000000"))
    );
    assert_eq!(b["fills"][0]["price"], "3000.00000000");
    assert_eq!(b["fills"][0]["commissionAsset"], "ETH");
    assert!(b["fills"][0]["tradeId"].is_i64());
    assert_eq!(b["cummulativeQuoteQty"], "1500.00000000");
    assert_eq!(
        kinds(&events(&mut ws).await),
        [
            "executionReport:NEW",
            "executionReport:TRADE",
            "outboundAccountPosition"
        ]
    );

    // MARKET by quote amount: the quantity the quote buys, rounded down to the step.
    let b = signed(
        &sim,
        "POST",
        "/api/v3/order",
        "symbol=BNBUSDT&side=SELL&type=MARKET&quoteOrderQty=61&newOrderRespType=RESULT",
    )
    .await
    .json();
    assert_eq!(
        (b["executedQty"].as_str(), b["origQuoteOrderQty"].as_str()),
        (Some("0.10100000"), Some("61.00000000")),
        "{b}"
    );
    assert!(b.get("fills").is_none(), "RESULT has no fills");
    let evs = events(&mut ws).await;
    assert_eq!(evs[0]["Q"], "61.00000000");

    // A crossing LIMIT takes at the price path; ACK is the short answer.
    let b = signed(&sim, "POST", "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000.00&newOrderRespType=ACK").await.json();
    let mut keys: Vec<&str> = b
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "clientOrderId",
            "orderId",
            "orderListId",
            "symbol",
            "transactTime"
        ]
    );
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        [
            "executionReport:NEW",
            "executionReport:TRADE",
            "outboundAccountPosition"
        ]
    );
    assert_eq!(
        (evs[1]["L"].as_str(), evs[1]["m"].as_bool()),
        (Some("58900.00000000"), Some(false))
    );

    // IOC that does not cross: NEW then EXPIRED.
    let b = signed(
        &sim,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.01&price=50000.00",
    )
    .await
    .json();
    assert_eq!(b["status"], "EXPIRED");
    assert_eq!(
        kinds(&events(&mut ws).await),
        ["executionReport:NEW", "executionReport:EXPIRED"]
    );

    // Validation errors as Binance answers them.
    let cases = [
        (
            "symbol=BTCUSDT&type=MARKET&quantity=0.01",
            -1102,
            "Mandatory parameter 'side' was not sent, was empty/null, or malformed.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01&price=59000",
            -1102,
            "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=MARKET",
            -1102,
            "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000001&price=59000",
            -1013,
            "Filter failure: LOT_SIZE",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=59000.001",
            -1013,
            "Filter failure: PRICE_FILTER",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00001&price=59000",
            -1013,
            "Filter failure: NOTIONAL",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=100&price=59000",
            -2010,
            "Account has insufficient balance for requested action.",
        ),
        (
            "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=10",
            -2010,
            "Account has insufficient balance for requested action.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT_MAKER&quantity=0.01&price=59000",
            -2010,
            "Order would immediately match and take.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=STOP&quantity=0.01",
            -1116,
            "Invalid orderType.",
        ),
        (
            "symbol=BTCUSDT&side=UP&type=MARKET&quantity=0.01",
            -1117,
            "Invalid side.",
        ),
        (
            "symbol=NOPE&side=BUY&type=MARKET&quantity=0.01",
            -1121,
            "Invalid symbol.",
        ),
    ];
    for (q, code, msg) in cases {
        let r = signed(&sim, "POST", "/api/v3/order", q).await;
        assert_eq!(err_of(&r), (400, code, msg.to_string()), "{q}");
    }
    assert!(
        events(&mut ws).await.is_empty(),
        "a refused order sends nothing"
    );

    // Cancels: by client id, unknown, and every open order of a symbol.
    for (p, cid) in [("2900.00", "e-1"), ("2800.00", "e-2"), ("2700.00", "e-3")] {
        let r = signed(&sim, "POST", "/api/v3/order", &format!(
            "symbol=ETHUSDT&side=BUY&type=LIMIT_MAKER&quantity=0.1&price={p}&newClientOrderId={cid}&newOrderRespType=RESULT")).await;
        assert_eq!(r.json()["status"], "NEW", "{}", r.body);
    }
    let dup = signed(
        &sim,
        "POST",
        "/api/v3/order",
        "symbol=ETHUSDT&side=BUY&type=LIMIT_MAKER&quantity=0.1&price=2600&newClientOrderId=e-1",
    )
    .await;
    assert_eq!(err_of(&dup).1, -2010);
    events(&mut ws).await;
    let c = signed(
        &sim,
        "DELETE",
        "/api/v3/order",
        "symbol=ETHUSDT&origClientOrderId=e-1&newClientOrderId=cancel-1",
    )
    .await
    .json();
    assert_eq!(
        (
            c["status"].as_str(),
            c["origClientOrderId"].as_str(),
            c["clientOrderId"].as_str()
        ),
        (Some("CANCELED"), Some("e-1"), Some("cancel-1"))
    );
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        ["executionReport:CANCELED", "outboundAccountPosition"]
    );
    assert_eq!(
        (evs[0]["c"].as_str(), evs[0]["C"].as_str()),
        (Some("cancel-1"), Some("e-1"))
    );
    let again = signed(
        &sim,
        "DELETE",
        "/api/v3/order",
        "symbol=ETHUSDT&origClientOrderId=e-1",
    )
    .await;
    assert_eq!(err_of(&again), (400, -2011, "Unknown order sent.".into()));
    let none = signed(&sim, "DELETE", "/api/v3/order", "symbol=ETHUSDT").await;
    assert_eq!(err_of(&none).1, -1102);
    let all = signed(&sim, "DELETE", "/api/v3/openOrders", "symbol=ETHUSDT")
        .await
        .json();
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    assert!(
        all.as_array()
            .is_some_and(|a| a.iter().all(|o| o["status"] == "CANCELED"))
    );
    let again = signed(&sim, "DELETE", "/api/v3/openOrders", "symbol=ETHUSDT").await;
    assert_eq!(err_of(&again).1, -2011);
    let all_orders = signed_get(&sim, "/api/v3/allOrders", "symbol=ETHUSDT")
        .await
        .json();
    assert_eq!(all_orders.as_array().map(Vec::len), Some(4));
    assert_eq!(sim.state().balances["USDT"].locked, Decimal::ZERO);
}

#[tokio::test]
async fn api_orders_coexist_with_the_random_session() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let far = signed(
        &sim,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1000.00",
    )
    .await
    .json();
    let near = signed(
        &sim,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=60060.00",
    )
    .await
    .json();
    sim.run(2_000, None).await;
    let st = sim.state();
    let far_o = &st.orders[&format!("BTCUSDT:{}", far["orderId"])];
    assert_eq!(
        far_o.status, "NEW",
        "the session never touches an API order"
    );
    // The near one fills when (and only if) the path rose through its price.
    let near_o = &st.orders[&format!("BTCUSDT:{}", near["orderId"])];
    assert!(near_o.status == "FILLED" || near_o.status == "NEW");
    assert!(st.fills.len() > 100, "the session trades on");
    assert!(st.open_orders.len() > 1);
}

#[tokio::test]
async fn usdm_orders_fill_rest_and_cancel_like_binance() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let (_key, mut ws) = usdm_connect(&sim).await;

    // MARKET: ACK answers the order as placed; the stream tells the fill.
    let r = signed(
        &sim,
        "POST",
        "/fapi/v1/order",
        "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=1&newClientOrderId=f-1",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(
        (
            b["status"].as_str(),
            b["executedQty"].as_str(),
            b["clientOrderId"].as_str()
        ),
        (Some("NEW"), Some("0"), Some("f-1"))
    );
    for k in [
        "orderId",
        "cumQty",
        "cumQuote",
        "avgPrice",
        "origQty",
        "price",
        "reduceOnly",
        "positionSide",
        "stopPrice",
        "closePosition",
        "timeInForce",
        "type",
        "origType",
        "updateTime",
        "workingType",
        "priceProtect",
        "priceMatch",
        "selfTradePreventionMode",
        "goodTillDate",
    ] {
        assert!(b.get(k).is_some(), "no {k}: {b}");
    }
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        [
            "ORDER_TRADE_UPDATE:NEW",
            "TRADE_LITE",
            "ORDER_TRADE_UPDATE:TRADE",
            "ACCOUNT_UPDATE"
        ]
    );
    assert_eq!(evs[2]["o"]["X"], "FILLED");
    assert_eq!(evs[3]["a"]["m"], "ORDER");
    assert_eq!(evs[3]["a"]["P"][0]["pa"], "-2");
    assert_eq!(sim.state().positions["ETHUSDT:BOTH"].amount, d("-2"));
    // RESULT: after the fill.
    let b = signed(
        &sim,
        "POST",
        "/fapi/v1/order",
        "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.5&newOrderRespType=RESULT",
    )
    .await
    .json();
    assert_eq!(
        (
            b["status"].as_str(),
            b["avgPrice"].as_str(),
            b["cumQuote"].as_str()
        ),
        (Some("FILLED"), Some("3000"), Some("1500"))
    );
    events(&mut ws).await;

    // A resting LIMIT fills when the path reaches it (maker).
    let b = signed(
        &sim,
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=61000.0",
    )
    .await
    .json();
    let id = b["orderId"].as_i64().expect("orderId");
    assert_eq!(kinds(&events(&mut ws).await), ["ORDER_TRADE_UPDATE:NEW"]);
    let oo = signed_get(&sim, "/fapi/v1/openOrders", "symbol=BTCUSDT")
        .await
        .json();
    assert!(
        oo.as_array()
            .is_some_and(|a| a.iter().any(|o| o["orderId"] == id))
    );
    sim.set_price("BTCUSDT", d("61000.0"));
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        ["TRADE_LITE", "ORDER_TRADE_UPDATE:TRADE", "ACCOUNT_UPDATE"]
    );
    assert_eq!(
        (evs[1]["o"]["m"].as_bool(), evs[1]["o"]["L"].as_str()),
        (Some(true), Some("61000"))
    );
    let t = signed_get(&sim, "/fapi/v1/userTrades", "symbol=BTCUSDT")
        .await
        .json();
    let mine = t
        .as_array()
        .and_then(|a| a.iter().find(|x| x["orderId"] == id))
        .expect("trade");
    assert_eq!(
        (mine["maker"].as_bool(), mine["side"].as_str()),
        (Some(true), Some("SELL"))
    );
    assert_eq!(
        dec_of(&mine["realizedPnl"]),
        d("0.01") * (d("61000") - d("59900"))
    );
    let pr = signed_get(&sim, "/fapi/v3/positionRisk", "symbol=BTCUSDT")
        .await
        .json();
    assert_eq!(pr[0]["positionAmt"], "0.49");

    // Reduce-only closes, never opens.
    let r = signed(
        &sim,
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01&reduceOnly=true",
    )
    .await;
    assert_eq!(
        err_of(&r),
        (400, -2022, "ReduceOnly Order is rejected.".into())
    );
    let r = signed(&sim, "POST", "/fapi/v1/order", "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.09&reduceOnly=true&newOrderRespType=RESULT").await;
    assert_eq!(
        (
            r.json()["status"].as_str(),
            r.json()["reduceOnly"].as_bool()
        ),
        (Some("FILLED"), Some(true)),
        "{}",
        r.body
    );
    let evs = events(&mut ws).await;
    assert_eq!(evs[0]["o"]["R"], true);
    assert_eq!(sim.state().positions["BTCUSDT:BOTH"].amount, d("0.4"));

    let cases = [
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000.05",
            -4014,
            "Price not increased by tick size.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.0015&price=50000",
            -1111,
            "Precision is over the maximum defined for this asset.",
        ),
        (
            "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.001",
            -4164,
            "Order's notional must be no smaller than 5 (unless you choose reduce only).",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=100",
            -2019,
            "Margin is insufficient.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTX&quantity=0.01&price=62000",
            -5022,
            "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history",
        ),
        (
            "symbol=BTCUSDT&side=BUY&positionSide=LONG&type=MARKET&quantity=0.01",
            -4061,
            "Order's position side does not match user's setting.",
        ),
        (
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01&price=50000",
            -1102,
            "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
        ),
    ];
    for (q, code, msg) in cases {
        let r = signed(&sim, "POST", "/fapi/v1/order", q).await;
        assert_eq!(err_of(&r), (400, code, msg.to_string()), "{q}");
    }

    // Cancel.
    let b = signed(
        &sim,
        "POST",
        "/fapi/v1/order",
        "symbol=BNBUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=500.00",
    )
    .await
    .json();
    let id = b["orderId"].as_i64().expect("orderId");
    events(&mut ws).await;
    let c = signed(
        &sim,
        "DELETE",
        "/fapi/v1/order",
        &format!("symbol=BNBUSDT&orderId={id}"),
    )
    .await
    .json();
    assert_eq!(c["status"], "CANCELED");
    assert_eq!(
        kinds(&events(&mut ws).await),
        ["ORDER_TRADE_UPDATE:CANCELED"]
    );
    let again = signed(
        &sim,
        "DELETE",
        "/fapi/v1/order",
        &format!("symbol=BNBUSDT&orderId={id}"),
    )
    .await;
    assert_eq!(err_of(&again), (400, -2011, "Unknown order sent.".into()));
}
