//! Tests of USD-M conditional orders through the REST API (ALGO_UPDATE NEW → TRIGGERING →
//! TRIGGERED → FINISHED, the triggered order's events) and of Spot OCO order lists.

use rust_decimal::Decimal;
use serde_json::Value;

use super::tests::{Ws, assert_shape, drain, signed_get, test_cfg, unwrap_event, usdm_connect};
use super::tests_orders::{d, signed};
use super::*;

async fn events(ws: &mut Ws) -> Vec<Value> {
    drain(ws)
        .await
        .iter()
        .map(|v| unwrap_event(v).clone())
        .collect()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| match e["e"].as_str().unwrap_or("") {
            "ALGO_UPDATE" => format!("ALGO_UPDATE:{}", e["o"]["X"].as_str().unwrap_or("")),
            "ORDER_TRADE_UPDATE" => {
                format!("ORDER_TRADE_UPDATE:{}", e["o"]["x"].as_str().unwrap_or(""))
            }
            "executionReport" => format!(
                "executionReport:{}:{}",
                e["o"].as_str().unwrap_or(""),
                e["x"].as_str().unwrap_or("")
            ),
            "listStatus" => format!("listStatus:{}", e["l"].as_str().unwrap_or("")),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn usdm_algo_orders_trigger_through_every_state() {
    let sim = Sim::start(test_cfg(SimMarket::Usdm)).await.expect("start");
    let (_key, mut ws) = usdm_connect(&sim).await;
    let r = signed(&sim, "POST", "/fapi/v1/algoOrder",
        "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.01&triggerPrice=59000.0&clientAlgoId=stop-1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(
        (
            b["algoStatus"].as_str(),
            b["algoType"].as_str(),
            b["clientAlgoId"].as_str(),
            b["triggerPrice"].as_str()
        ),
        (
            Some("NEW"),
            Some("CONDITIONAL"),
            Some("stop-1"),
            Some("59000")
        )
    );
    let aid = b["algoId"].as_i64().expect("algoId");
    let evs = events(&mut ws).await;
    assert_eq!(kinds(&evs), ["ALGO_UPDATE:NEW"]);
    assert_shape("usdm_ALGO_UPDATE.json", &evs[0], &[], &[]);
    let algos = signed_get(&sim, "/fapi/v1/openAlgoOrders", "symbol=BTCUSDT")
        .await
        .json();
    assert!(
        algos
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["algoId"] == aid))
    );
    let oo = signed_get(&sim, "/fapi/v1/openOrders", "symbol=BTCUSDT")
        .await
        .json();
    assert_eq!(oo, serde_json::json!([]));

    // Already reached: refused.
    let r = signed(&sim, "POST", "/fapi/v1/algoOrder",
        "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.01&triggerPrice=61000.0").await;
    assert_eq!(
        (r.status, r.json()["code"].as_i64()),
        (400, Some(-2021)),
        "{}",
        r.body
    );

    // The path falls through the trigger.
    sim.set_price("BTCUSDT", d("58900.0"));
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        [
            "ALGO_UPDATE:TRIGGERING",
            "ALGO_UPDATE:TRIGGERED",
            "ORDER_TRADE_UPDATE:NEW",
            "TRADE_LITE",
            "ORDER_TRADE_UPDATE:TRADE",
            "ACCOUNT_UPDATE",
            "ALGO_UPDATE:FINISHED"
        ]
    );
    let es: Vec<i64> = evs.iter().filter_map(|e| e["E"].as_i64()).collect();
    assert!(es.windows(2).all(|w| w[0] < w[1]), "E increases: {es:?}");
    assert!(
        evs[0]["o"].get("ap").is_none() && evs[0]["o"].get("act").is_none(),
        "TRIGGERING as production sends it"
    );
    let ai = evs[1]["o"]["ai"].as_str().expect("ai").to_string();
    assert_eq!(evs[1]["o"]["act"], "MARKET");
    assert_shape("usdm_ALGO_UPDATE.json", &evs[1], &[], &[]);
    let order_id: i64 = ai.parse().expect("ai is the order id");
    for ev in [&evs[2], &evs[4]] {
        assert_eq!(ev["o"]["i"], order_id);
        assert_eq!(
            (
                ev["o"]["o"].as_str(),
                ev["o"]["ot"].as_str(),
                ev["o"]["sp"].as_str()
            ),
            (Some("MARKET"), Some("STOP_MARKET"), Some("59000"))
        );
        assert_eq!(ev["o"]["c"], "stop-1");
    }
    assert_eq!(evs[3]["i"], order_id);
    assert_eq!(
        (
            evs[6]["o"]["aq"].as_str(),
            evs[6]["o"]["ap"].as_str(),
            evs[6]["o"]["ai"].as_str()
        ),
        (Some("0.01"), Some("58900"), Some(ai.as_str()))
    );
    assert_shape("usdm_ALGO_UPDATE.json", &evs[6], &[], &[]);
    let st = sim.state();
    assert!(st.open_algo_orders.is_empty());
    assert_eq!(st.positions["BTCUSDT:BOTH"].amount, d("0.49"));
    assert_eq!(st.orders[&format!("BTCUSDT:{order_id}")].status, "FILLED");

    // Cancel by client id; an unknown algo: -2011.
    let b = signed(&sim, "POST", "/fapi/v1/algoOrder",
        "algoType=CONDITIONAL&symbol=ETHUSDT&side=BUY&type=TAKE_PROFIT_MARKET&quantity=1&triggerPrice=2900.00&clientAlgoId=tp-1").await.json();
    assert_eq!(b["orderType"], "TAKE_PROFIT_MARKET");
    events(&mut ws).await;
    let c = signed(&sim, "DELETE", "/fapi/v1/algoOrder", "clientAlgoId=tp-1")
        .await
        .json();
    assert_eq!(
        (
            c["code"].as_str(),
            c["msg"].as_str(),
            c["clientAlgoId"].as_str()
        ),
        (Some("200"), Some("success"), Some("tp-1"))
    );
    assert_eq!(kinds(&events(&mut ws).await), ["ALGO_UPDATE:CANCELED"]);
    let again = signed(&sim, "DELETE", "/fapi/v1/algoOrder", "clientAlgoId=tp-1").await;
    assert_eq!(
        (again.status, again.json()["code"].as_i64()),
        (400, Some(-2011))
    );

    // A far trigger survives the random session.
    let far = signed(&sim, "POST", "/fapi/v1/algoOrder",
        "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.01&triggerPrice=10000.0").await.json();
    sim.run(1_000, None).await;
    let st = sim.state();
    assert!(
        st.open_algo_orders
            .contains_key(&format!("BTCUSDT:{}", far["algoId"]))
    );
}

#[tokio::test]
async fn spot_oco_lists_fill_trigger_and_cancel() {
    let sim = Sim::start(test_cfg(SimMarket::Spot)).await.expect("start");
    let mut ws = super::tests::spot_subscribe(&sim).await;
    let locked = |sim: &Sim, a: &str| sim.state().balances[a].locked;

    // SELL: take profit above, stop-limit below.
    let r = signed(&sim, "POST", "/api/v3/orderList/oco",
        "symbol=BTCUSDT&side=SELL&quantity=0.01&aboveType=LIMIT_MAKER&abovePrice=61000.00&belowType=STOP_LOSS_LIMIT&belowStopPrice=59000.00&belowPrice=58900.00&belowTimeInForce=GTC&listClientOrderId=L1&aboveClientOrderId=tp").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(
        (
            b["contingencyType"].as_str(),
            b["listStatusType"].as_str(),
            b["listOrderStatus"].as_str(),
            b["listClientOrderId"].as_str()
        ),
        (
            Some("OCO"),
            Some("EXEC_STARTED"),
            Some("EXECUTING"),
            Some("L1")
        )
    );
    let list_id = b["orderListId"].as_i64().expect("orderListId");
    assert_eq!(b["orders"].as_array().map(Vec::len), Some(2));
    assert_eq!(b["orderReports"][0]["type"], "STOP_LOSS_LIMIT");
    assert_eq!(b["orderReports"][0]["stopPrice"], "59000.00000000");
    assert_eq!(b["orderReports"][1]["clientOrderId"], "tp");
    let raw = drain(&mut ws).await;
    let evs: Vec<Value> = raw.iter().map(|v| unwrap_event(v).clone()).collect();
    assert_eq!(
        kinds(&evs),
        [
            "executionReport:STOP_LOSS_LIMIT:NEW",
            "executionReport:LIMIT_MAKER:NEW",
            "listStatus:EXEC_STARTED",
            "outboundAccountPosition"
        ]
    );
    assert!(evs[..2].iter().all(|e| e["g"] == list_id));
    assert_eq!(evs[0]["P"], "59000.00000000");
    assert_shape("spot_listStatus.json", &raw[2], &[], &[]);
    assert_eq!(
        locked(&sim, "BTC"),
        d("0.01"),
        "the list locks its quantity once"
    );
    let oo = signed_get(&sim, "/api/v3/openOrders", "symbol=BTCUSDT")
        .await
        .json();
    let stop_leg = oo
        .as_array()
        .and_then(|a| a.iter().find(|o| o["type"] == "STOP_LOSS_LIMIT"))
        .expect("stop leg");
    assert_eq!(
        stop_leg["isWorking"], false,
        "an untriggered stop leg is not working"
    );
    assert_eq!(
        oo.as_array()
            .map(|a| a.iter().filter(|o| o["orderListId"] == list_id).count()),
        Some(2)
    );

    // The path reaches the take-profit: it fills, the stop expires, the list is done.
    sim.set_price("BTCUSDT", d("61000"));
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        [
            "executionReport:LIMIT_MAKER:TRADE",
            "outboundAccountPosition",
            "executionReport:STOP_LOSS_LIMIT:EXPIRED",
            "listStatus:ALL_DONE"
        ]
    );
    assert_eq!(
        (evs[3]["L"].as_str(), evs[3]["g"].as_i64()),
        (Some("ALL_DONE"), Some(list_id))
    );
    assert_eq!(locked(&sim, "BTC"), Decimal::ZERO);
    assert!(sim.state().open_orders.is_empty());

    // The path falls through the stop: the take-profit expires, the stop-limit trades.
    let r = signed(&sim, "POST", "/api/v3/orderList/oco",
        "symbol=BTCUSDT&side=SELL&quantity=0.01&aboveType=LIMIT_MAKER&abovePrice=62000.00&belowType=STOP_LOSS_LIMIT&belowStopPrice=60000.00&belowPrice=59900.00&belowTimeInForce=GTC").await;
    assert_eq!(r.status, 200, "{}", r.body);
    events(&mut ws).await;
    sim.set_price("BTCUSDT", d("59950"));
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        [
            "executionReport:LIMIT_MAKER:EXPIRED",
            "listStatus:ALL_DONE",
            "outboundAccountPosition",
            "executionReport:STOP_LOSS_LIMIT:TRADE",
            "outboundAccountPosition"
        ]
    );
    assert_eq!(
        (evs[3]["L"].as_str(), evs[3]["X"].as_str()),
        (Some("59950.00000000"), Some("FILLED"))
    );
    assert_eq!(locked(&sim, "BTC"), Decimal::ZERO);

    // BUY: stop above, take-profit below; cancelling one leg cancels the list.
    let b = signed(&sim, "POST", "/api/v3/orderList/oco",
        "symbol=BTCUSDT&side=BUY&quantity=0.01&aboveType=STOP_LOSS&aboveStopPrice=61000.00&belowType=LIMIT_MAKER&belowPrice=59000.00").await.json();
    let stop_id = b["orders"][0]["orderId"].as_i64().expect("orderId");
    events(&mut ws).await;
    assert_eq!(locked(&sim, "USDT"), d("590"));
    let c = signed(
        &sim,
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={stop_id}"),
    )
    .await;
    assert_eq!(
        (c.status, c.json()["status"].as_str()),
        (200, Some("CANCELED")),
        "{}",
        c.body
    );
    let evs = events(&mut ws).await;
    assert_eq!(
        kinds(&evs),
        [
            "executionReport:STOP_LOSS:CANCELED",
            "executionReport:LIMIT_MAKER:CANCELED",
            "listStatus:ALL_DONE",
            "outboundAccountPosition"
        ]
    );
    assert_eq!(locked(&sim, "USDT"), Decimal::ZERO);
    assert!(sim.state().open_orders.is_empty());

    // Prices on the wrong side of the market.
    let r = signed(&sim, "POST", "/api/v3/orderList/oco",
        "symbol=BTCUSDT&side=SELL&quantity=0.01&aboveType=LIMIT_MAKER&abovePrice=59000.00&belowType=STOP_LOSS&belowStopPrice=58000.00").await;
    assert_eq!(
        (r.status, r.json()["code"].as_i64()),
        (400, Some(-2010)),
        "{}",
        r.body
    );
    let r = signed(
        &sim,
        "POST",
        "/api/v3/orderList/oco",
        "symbol=BTCUSDT&side=SELL&quantity=0.01&belowType=STOP_LOSS",
    )
    .await;
    assert_eq!(r.json()["code"], -1102);
}
