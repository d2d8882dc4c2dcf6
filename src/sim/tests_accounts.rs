//! Tests of a sim with many accounts, over real loopback sockets: REST answers keyed by API
//! key, several subscriptions on one Spot connection (ids, isolation, limits, unsubscribe),
//! USD-M listenKeys per account, the shared weight meter with 429 then 418, dropping one
//! connection, the fleet file and the deterministic keys.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::tests::{T, Ws, http, next_json, now, sign, test_cfg, unwrap_event, ws_connect};
use super::*;

fn cfg(market: SimMarket, accounts: usize) -> SimConfig {
    test_cfg(market).with_accounts(accounts)
}

fn acct(sim: &Sim, i: usize) -> SimAccount {
    sim.account(i).expect("account")
}

/// A signed GET as account `a`.
async fn get_as(sim: &Sim, a: &SimAccount, path: &str) -> tests::Resp {
    let q = format!("timestamp={}", now());
    let sig = sign(&a.api_secret(), &q);
    http(
        sim,
        "GET",
        &format!("{path}?{q}&signature={sig}"),
        Some(&a.api_key()),
        "",
    )
    .await
}

/// Send `userDataStream.subscribe.signature` for `key` signed with `secret`; the response.
async fn subscribe_with(ws: &mut Ws, key: &str, secret: &str) -> Value {
    let ts = now();
    let sig = sign(secret, &format!("apiKey={key}&timestamp={ts}"));
    let req = json!({"id": key, "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": key, "timestamp": ts, "signature": sig}});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    next_json(ws, T).await.expect("subscribe response")
}

async fn subscribe(ws: &mut Ws, a: &SimAccount) -> Value {
    subscribe_with(ws, &a.api_key(), &a.api_secret()).await
}

async fn send(ws: &mut Ws, req: Value) -> Value {
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    next_json(ws, T).await.expect("response")
}

/// Every frame that arrives within `wait`.
async fn frames(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(v) = next_json(ws, wait).await {
        out.push(v);
    }
    out
}

#[test]
fn account_keys_are_deterministic_and_distinct() {
    assert_eq!(sim_account_key(0), DEMO_API_KEY);
    assert_eq!(sim_account_secret(0), DEMO_API_SECRET);
    assert_eq!(sim_account_key(7), sim_account_key(7));
    let keys: std::collections::BTreeSet<String> = (0..50).map(sim_account_key).collect();
    assert_eq!(keys.len(), 50);
    for i in [1, 2, 999, 123_456] {
        for k in [sim_account_key(i), sim_account_secret(i)] {
            assert_eq!(k.len(), 64, "{k}");
            assert!(keys::plausible_api_key(&k), "{k}");
        }
        assert_ne!(sim_account_key(i), sim_account_secret(i));
    }
}

#[tokio::test]
async fn rest_answers_from_the_account_the_key_names() {
    let sim = Sim::start(cfg(SimMarket::Spot, 3)).await.expect("start");
    assert_eq!(sim.account_count(), 3);
    assert!(sim.account(3).is_none());
    assert_eq!(acct(&sim, 0).api_key(), DEMO_API_KEY);
    sim.run_all(30, None).await;
    let (a0, a1) = (acct(&sim, 0), acct(&sim, 1));
    assert!(a0.state().fills.len() + a1.state().fills.len() > 0);
    assert_ne!(
        a0.state(),
        a1.state(),
        "each account trades its own session"
    );
    for a in [&a0, &a1] {
        let r = get_as(&sim, a, "/api/v3/openOrders").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut got: Vec<i64> = r
            .json()
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|o| o["orderId"].as_i64())
            .collect();
        let mut want: Vec<i64> = a.state().open_orders.values().map(|o| o.order_id).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "account {}", a.index());
    }
    // Account 1's key signed with account 0's secret: bad signature.
    let q = format!("timestamp={}", now());
    let sig = sign(DEMO_API_SECRET, &q);
    let r = http(
        &sim,
        "GET",
        &format!("/api/v3/account?{q}&signature={sig}"),
        Some(&a1.api_key()),
        "",
    )
    .await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (400, Some(-1022)));
    // A key of no account: -2015.
    let r = http(
        &sim,
        "GET",
        &format!("/api/v3/account?{q}&signature={sig}"),
        Some(&sim_account_key(3)),
        "",
    )
    .await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (401, Some(-2015)));
}

#[tokio::test]
async fn one_connection_carries_several_accounts_each_only_its_own_events() {
    let sim = Sim::start(cfg(SimMarket::Spot, 3)).await.expect("start");
    let (a0, a1, a2) = (acct(&sim, 0), acct(&sim, 1), acct(&sim, 2));
    let mut ws = ws_connect(&sim.ws_url()).await;
    let r = subscribe(&mut ws, &a0).await;
    assert_eq!(r["result"]["subscriptionId"], 0, "{r}");
    let r = subscribe(&mut ws, &a1).await;
    assert_eq!(r["result"]["subscriptionId"], 1, "{r}");
    // One subscription per account per connection.
    let r = subscribe(&mut ws, &a1).await;
    assert_eq!(
        (r["status"].as_u64(), r["error"]["code"].as_i64()),
        (Some(400), Some(-2035)),
        "{r}"
    );
    // A signature made with another account's secret.
    let r = subscribe_with(&mut ws, &a2.api_key(), &a0.api_secret()).await;
    assert_eq!(r["error"]["code"], -1022, "{r}");
    assert_eq!(sim.connections_open(), 1);
    assert_eq!(sim.subscriptions_on_connections(), vec![2]);
    assert_eq!((a0.subscriber_count(), a2.subscriber_count()), (1, 0));

    a1.run(20, None).await;
    a2.run(20, None).await;
    a0.run(20, None).await;
    let got = frames(&mut ws, Duration::from_millis(300)).await;
    let of = |sid: u64| got.iter().filter(|f| f["subscriptionId"] == sid).count() as u64;
    assert_eq!(of(1), a1.events_sent(), "account 1's events, on its id");
    assert_eq!(of(0), a0.events_sent());
    assert!(of(0) > 0 && of(1) > 0);
    assert_eq!(a2.events_sent(), 0, "nobody subscribed for account 2");
    assert_eq!(of(0) + of(1), got.len() as u64, "nothing else arrived");
    // Account 1's order events carry account 1's order ids.
    let orders1 = a1.state().orders;
    for f in got.iter().filter(|f| f["subscriptionId"] == 1) {
        let ev = unwrap_event(f);
        if ev["e"] == "executionReport" {
            let k = format!("{}:{}", ev["s"].as_str().unwrap_or(""), ev["i"]);
            assert!(orders1.contains_key(&k), "{k} is not account 1's");
        }
    }

    let r = send(
        &mut ws,
        json!({"id": "l", "method": "session.subscriptions"}),
    )
    .await;
    assert_eq!(
        r["result"],
        json!([{"subscriptionId": 0}, {"subscriptionId": 1}])
    );
    // Unsubscribing one id ends only that one, then its eventStreamTerminated.
    let r = send(
        &mut ws,
        json!({"id": "u", "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 1}}),
    )
    .await;
    assert_eq!(
        (r["status"].as_u64(), &r["result"]),
        (Some(200), &json!({}))
    );
    let ev = next_json(&mut ws, T).await.expect("terminated");
    assert_eq!(
        (&ev["subscriptionId"], &ev["event"]["e"]),
        (&json!(1), &json!("eventStreamTerminated"))
    );
    let r = send(
        &mut ws,
        json!({"id": "u2", "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 1}}),
    )
    .await;
    assert_eq!(r["error"]["code"], -2036, "{r}");
    let sent1 = a1.events_sent();
    a1.run(10, None).await;
    assert_eq!(a1.events_sent(), sent1);
    assert_eq!(sim.subscriptions_on_connections(), vec![1]);
    // A new subscription gets the next id of the session.
    let r = subscribe(&mut ws, &a2).await;
    assert_eq!(r["result"]["subscriptionId"], 2, "{r}");
    // The account-scoped fault ends only that account's subscription.
    a2.terminate_subscription();
    let ev = next_json(&mut ws, T).await.expect("terminated");
    assert_eq!(ev["subscriptionId"], 2, "{ev}");
    assert_eq!((a0.subscriber_count(), a2.subscriber_count()), (1, 0));
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let mut c = cfg(SimMarket::Spot, 3);
    c.max_subscriptions_per_connection = 2;
    let sim = Sim::start(c).await.expect("start");
    let mut ws = ws_connect(&sim.ws_url()).await;
    for i in 0..2 {
        let r = subscribe(&mut ws, &acct(&sim, i)).await;
        assert_eq!(r["status"], 200, "{r}");
    }
    let r = subscribe(&mut ws, &acct(&sim, 2)).await;
    assert_eq!(
        (r["status"].as_u64(), r["error"]["code"].as_i64()),
        (Some(400), Some(-2042)),
        "{r}"
    );
    // Another connection takes it.
    let mut ws2 = ws_connect(&sim.ws_url()).await;
    let r = subscribe(&mut ws2, &acct(&sim, 2)).await;
    assert_eq!(r["result"]["subscriptionId"], 0, "{r}");
    assert_eq!(sim.subscriptions_on_connections(), vec![2, 1]);
}

/// Wait until at least `margin` ms are left in the server's current minute.
async fn away_from_minute_end(margin: i64) {
    let left = 60_000 - now().rem_euclid(60_000);
    if left < margin {
        tokio::time::sleep(Duration::from_millis(left as u64 + 50)).await;
    }
}

#[tokio::test]
async fn weight_is_shared_by_accounts_429_then_418() {
    let sim = Sim::start(cfg(SimMarket::Spot, 2)).await.expect("start");
    let (a0, a1) = (acct(&sim, 0), acct(&sim, 1));
    away_from_minute_end(10_000).await;
    let mut ws = ws_connect(&sim.ws_url()).await;
    sim.set_weight_limit(sim.used_weight() + 30);
    let r = get_as(&sim, &a0, "/api/v3/account").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Account 1 pays from the same budget.
    let r = get_as(&sim, &a1, "/api/v3/account").await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (429, Some(-1003)));
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(sim.rate_limited_count(), 1);
    // Not backing off: 418, and everything is refused while banned.
    let r = get_as(&sim, &a1, "/api/v3/account").await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (418, Some(-1003)));
    let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.starts_with("Way too many requests; IP(127.0.0.1) banned until "),
        "{msg}"
    );
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=66).contains(&retry), "{retry}");
    let r = http(&sim, "GET", "/api/v3/ping", None, "").await;
    assert_eq!(r.status, 418);
    // A new WS API connection is refused at the handshake; an open one answers 418.
    assert!(
        tokio_tungstenite::connect_async(sim.ws_url())
            .await
            .is_err()
    );
    let r = send(&mut ws, json!({"id": 1, "method": "ping"})).await;
    assert_eq!(
        (r["status"].as_u64(), r["error"]["code"].as_i64()),
        (Some(418), Some(-1003))
    );
    assert!(r["error"]["data"]["retryAfter"].is_i64(), "{r}");
    assert_eq!(sim.rate_limited_count(), 5);
    assert!(sim.max_used_weight_seen() >= sim.used_weight());
    assert!(sim.max_used_weight_seen() >= 20);
}

#[tokio::test]
async fn drop_connection_of_closes_only_that_connection() {
    let sim = Sim::start(cfg(SimMarket::Spot, 3)).await.expect("start");
    let mut shared = ws_connect(&sim.ws_url()).await;
    for i in 0..2 {
        assert_eq!(subscribe(&mut shared, &acct(&sim, i)).await["status"], 200);
    }
    let mut alone = ws_connect(&sim.ws_url()).await;
    assert_eq!(subscribe(&mut alone, &acct(&sim, 2)).await["status"], 200);
    assert_eq!(sim.connections_open(), 2);
    assert!(sim.drop_connection_of(1));
    assert!(next_json(&mut shared, T).await.is_none(), "closed");
    assert_eq!(sim.connections_open(), 1);
    assert_eq!(
        acct(&sim, 0).subscriber_count(),
        0,
        "account 0 was on it too"
    );
    assert!(!sim.drop_connection_of(0));
    acct(&sim, 2).run(5, None).await;
    let ev = next_json(&mut alone, T).await.expect("still delivering");
    assert_eq!(ev["subscriptionId"], 0);
}

#[tokio::test]
async fn usdm_accounts_have_their_own_listen_keys_and_streams() {
    let sim = Sim::start(cfg(SimMarket::Usdm, 2)).await.expect("start");
    let (a0, a1) = (acct(&sim, 0), acct(&sim, 1));
    let key_of = |a: &SimAccount| {
        let (sim, key) = (sim.clone(), a.api_key());
        async move {
            let r = http(&sim, "POST", "/fapi/v1/listenKey", Some(&key), "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["listenKey"].as_str().expect("key").to_string()
        }
    };
    let (k0, k1) = (key_of(&a0).await, key_of(&a1).await);
    assert_ne!(k0, k1);
    assert_eq!(key_of(&a1).await, k1, "the live key is returned again");
    assert_eq!(a1.listen_key().as_deref(), Some(k1.as_str()));
    let ev = tests::ALL_USDM_EVENTS;
    let mut only0 = ws_connect(&format!(
        "{}/private/ws?listenKey={k0}&events={ev}",
        sim.ws_url()
    ))
    .await;
    let mut both = ws_connect(&format!(
        "{}/private/stream?listenKey={k0}&events={ev}&listenKey={k1}&events={ev}",
        sim.ws_url()
    ))
    .await;
    a1.wait_for_subscriber(T).await.expect("subscriber");
    a0.wait_for_subscriber(T).await.expect("subscriber");
    assert_eq!(sim.subscriptions_on_connections(), vec![1, 2]);
    a1.run(10, None).await;
    let got = frames(&mut both, Duration::from_millis(300)).await;
    assert!(!got.is_empty());
    assert!(got.iter().all(|f| f["stream"] == k1.as_str()), "{got:?}");
    assert!(
        frames(&mut only0, Duration::from_millis(200))
            .await
            .is_empty(),
        "account 1's events reached account 0's stream"
    );
    // Expiring account 1's key leaves account 0's alone.
    a1.expire_listen_key();
    assert_eq!(a1.subscriber_count(), 0);
    assert_eq!(a0.subscriber_count(), 2);
    assert!(sim.drop_connection_of(0));
    assert_eq!(sim.connections_open(), 1);
}

#[tokio::test]
async fn run_all_steps_every_account_and_fleet_file_lists_them() {
    let sim = Sim::start(cfg(SimMarket::Spot, 4)).await.expect("start");
    let n = sim.run_all(10, None).await;
    assert!(n >= 40);
    for i in 0..4 {
        assert!(
            !acct(&sim, i).state().orders.is_empty(),
            "account {i} traded"
        );
    }
    let toml = fleet_toml(&sim, "sim");
    assert!(
        toml.starts_with("# written by `acctstate sim --accounts 4`\n"),
        "{toml}"
    );
    assert_eq!(toml.matches("[[accounts]]").count(), 4);
    assert!(toml.contains("id = \"sim-0003\"\n"), "{toml}");
    assert!(toml.contains("market = \"spot\"\n"));
    assert!(toml.contains(&format!("api_key = \"{}\"\n", sim_account_key(2))));
    assert!(toml.contains(&format!("api_secret = \"{}\"\n", sim_account_secret(2))));
    assert!(toml.contains(&format!("rest_url = \"{}\"\n", sim.rest_url())));
    assert!(toml.contains(&format!(
        "ws_url = \"{}/ws-api/v3\"\n",
        sim.rest_url().replace("http", "ws")
    )));
}
