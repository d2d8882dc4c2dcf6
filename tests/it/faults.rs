//! The bounce suite, in the style of Kafka's `test_bounce`: the daemon runs as its own process
//! (the built binary) against the simulated exchange in this test process; at least 10,000
//! events go through the sim while the system is faulted (Postgres stopped, Redis killed, the
//! WebSocket dropped, the listenKey expired, the subscription terminated, SIGTERM, `kill -9`,
//! silent account changes); then `missing = expected − recorded` must be empty for fills, the
//! journal must have no seq reused (and no gap within a run that ended gracefully), and the
//! cache, the tables and the Redis hashes must equal the sim's final state.

use acctstate::sim::{Sim, SimMarket};

use crate::bounce::*;
use crate::common::*;

// ------------------------------------------------------------------------------------ faults

/// Postgres (a private server) stopped mid-burst while ≥ 3,000 events flow, then restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_stream_and_restarted() {
    let pg = PrivatePg::start().await;
    let mut b = Bounce::new(SimMarket::Spot, Some(pg.url()), None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(3_000).await;
    pg.stop().await;
    let at_stop = b.sim.events_sent();
    eventually(WAIT, "the daemon sees Postgres down", || async {
        metric(&d, "acctstate_postgres_up").await == 0.0
    })
    .await;
    b.delivered(at_stop + 3_000).await;
    let queued = metric(&d, "acctstate_pg_queue_depth").await;
    eprintln!("{queued} changes queued behind the outage");
    pg.start_again().await;
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    b.finish(d, 300, &[]).await;
}

/// Redis (a private server) killed mid-burst and restarted on the same port: the daemon
/// publishes a `resync` status and the hashes converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_and_restarted() {
    let mut redis = PrivateRedis::start().await;
    // The daemon reaches Redis through a proxy held cut until the test's subscriber is back,
    // so the subscriber cannot miss the resync.
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port)).await;
    let via = format!("redis://{}", proxy.addr());
    let mut b = Bounce::new(SimMarket::Usdm, None, Some(redis.url())).await;
    let d = b.start_with_redis(&via).await;
    let trader = b.trade(usize::MAX);
    b.delivered(3_000).await;
    proxy.cut();
    redis.kill();
    let at_kill = b.sim.events_sent();
    eventually(WAIT, "the daemon sees Redis down", || async {
        metric(&d, "acctstate_redis_up").await == 0.0
    })
    .await;
    b.delivered(at_kill + 3_000).await;
    redis.start_again().await;
    b.redis = redis_client_at(&redis.url()).await;
    let sub = Subscriber::start_at(&redis.url(), &b.prefix, &b.account).await;
    proxy.restore();
    eventually(WAIT, "a resync status on P:status", || async {
        sub.messages()
            .iter()
            .any(|(_, m)| m["kind"] == "status" && m["data"]["event"] == "resync")
    })
    .await;
    // The message is out when Redis runs the EXEC; the daemon counts the resync once it has
    // read the reply, which may be after this test has read the message.
    eventually(WAIT, "the resync counted", || async {
        metric(&d, "acctstate_redis_resyncs_total").await >= 2.0
    })
    .await;
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    sub.stop().await;
    b.finish(d, 300, &[]).await;
}

/// `fault` injected `times` times, each after a few hundred events on the connection.
/// `fault` injected `times` times, 300 events apart; each must leave a status row `event`
/// (`disconnected` or `resubscribed`) whose detail holds `detail`.
async fn repeated(market: SimMarket, times: usize, fault: fn(&Sim), event: &str, detail: &str) {
    let mut b = Bounce::new(market, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    let count = |rows: Vec<(String, Option<String>, i64)>| {
        rows.iter()
            .filter(|(e, x, _)| e == event && x.as_deref().is_some_and(|x| x.contains(detail)))
            .count()
    };
    for i in 0..times {
        b.delivered(b.sim.events_sent() + 300).await;
        fault(&b.sim);
        eventually(WAIT, &format!("{} `{event}` rows", i + 1), || async {
            count(status_rows(&b.pool, &b.account).await) > i
        })
        .await;
    }
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    let n = count(status_rows(&b.pool, &b.account).await);
    assert!(
        n >= times,
        "{n} `{event}` rows for `{detail}`, want {times}"
    );
    b.finish(d, 300, &[]).await;
}

/// Twenty drops, 300 events apart (about one every 0.1 s at the test's rate): resyncs keep
/// being cut short, and the last one must still recover every order and trade of the gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_dropped_twenty_times() {
    repeated(
        SimMarket::Spot,
        20,
        Sim::drop_connections,
        "disconnected",
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_listen_key_expired_repeatedly() {
    repeated(
        SimMarket::Usdm,
        5,
        Sim::expire_listen_key,
        "disconnected",
        "listenKey",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_subscription_terminated_repeatedly() {
    repeated(
        SimMarket::Spot,
        5,
        Sim::terminate_subscription,
        "resubscribed",
        "eventStreamTerminated",
    )
    .await;
}

/// SIGTERM (or `kill -9`) mid-burst, trading on with nobody listening, then a restart.
async fn bounce_process(market: SimMarket, kill: bool) {
    let mut b = Bounce::new(market, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(5_000).await;
    if kill {
        b.kill9(d).await;
    } else {
        b.stop(d).await;
    }
    b.traded(50).await;
    let d = b.start().await;
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    b.finish(d, 300, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_then_restart() {
    bounce_process(SimMarket::Spot, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart() {
    bounce_process(SimMarket::Usdm, true).await;
}

/// The daemon stopped; the account changes silently several times while trading goes on with
/// nobody subscribed; the restart's snapshot catches it all.
async fn silent_changes_while_stopped(market: SimMarket) {
    let mut b = Bounce::new(market, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(5_000).await;
    b.stop(d).await;
    for _ in 0..3 {
        b.traded(20).await;
        b.sim.silent_change();
    }
    let d = b.start().await;
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    b.finish(d, 300, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_silent_changes_while_stopped() {
    silent_changes_while_stopped(SimMarket::Usdm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_silent_changes_while_stopped() {
    silent_changes_while_stopped(SimMarket::Spot).await;
}

/// The account changes silently, then the connections drop: the reconnect's snapshot catches
/// it, while trading goes on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_changes_then_dropped_connections() {
    let mut b = Bounce::new(SimMarket::Usdm, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    for _ in 0..3 {
        b.delivered(b.sim.events_sent() + 2_000).await;
        let before = b.reconnects(&d).await;
        b.sim.silent_change();
        b.sim.drop_connections();
        b.reconnected(&d, before).await;
    }
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    b.finish(d, 300, &[]).await;
}

// --------------------------------------------------------------------------------- bad input

/// A 16 MiB text frame with the default `max_frame_bytes` (1 MiB): refused, counted, logged,
/// the connection recycled, and trading after it converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_frame_is_refused_and_the_connection_recycled() {
    let mut b = Bounce::new(SimMarket::Spot, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(3_000).await;
    let before = b.reconnects(&d).await;
    b.sim
        .send_raw_text(format!(r#"{{"pad":"{}"}}"#, "x".repeat(16 << 20)));
    b.reconnected(&d, before).await;
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    assert!(metric(&d, "acctstate_oversized_frames_total").await >= 1.0);
    assert!(
        d.logs().iter().any(|l| l["level"] == "WARN"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("read error"))),
        "no WARN line for the oversized frame"
    );
    b.finish(d, 300, &[]).await;
}

/// Hostile frames mid-burst (deep nesting, out-of-range numbers, absurd quantities, a non-UTF-8
/// binary frame, an unknown event type, an order for a symbol never seen): each survived,
/// counted, logged; the unknown symbol's order is recorded; later good events are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_hostile_frames_are_survived_counted_and_logged() {
    let mut b = Bounce::new(SimMarket::Spot, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(3_000).await;
    let now = now_ms();
    let wrap = |event: String| format!(r#"{{"subscriptionId":0,"event":{event}}}"#);
    let bad = [
        "[".repeat(100_000),
        wrap(format!(
            r#"{{"e":"outboundAccountPosition","E":1e400,"u":{now},"B":[{{"a":"USDT","f":"1","l":"0"}}]}}"#
        )),
        wrap(format!(
            r#"{{"e":"outboundAccountPosition","E":{now},"u":{now},"B":[{{"a":"BADNEG","f":"-1","l":"0"}}]}}"#
        )),
        wrap(format!(
            r#"{{"e":"executionReport","E":{now},"s":"BTCUSDT","c":"x","S":"BUY","o":"LIMIT","f":"GTC","q":"1","p":"1","P":"0","x":"NEW","X":"NEW","i":99999999999999999999,"l":"0","z":"0","L":"0","n":"0","N":null,"T":{now},"t":-1,"w":true,"m":false,"O":{now},"Z":"0","Y":"0"}}"#
        )),
        wrap(format!(
            r#"{{"e":"executionReport","E":{now},"s":"BTCUSDT","c":"x","S":"BUY","o":"LIMIT","f":"GTC","q":"1","p":"1","P":"0","x":"NEW","X":"NEW","i":77,"l":"0","z":"99999999999999999999999999999999","L":"0","n":"0","N":null,"T":{now},"t":-1,"w":true,"m":false,"O":{now},"Z":"0","Y":"0"}}"#
        )),
        wrap(format!(r#"{{"e":"somethingNew","E":{now}}}"#)),
    ];
    let parse_errors = metric(&d, "acctstate_parse_errors_total").await;
    let unknown = metric(&d, "acctstate_unknown_events_total").await;
    for frame in bad {
        b.sim.send_raw_text(frame);
    }
    b.sim
        .send_raw_binary(vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28]);
    // An executionReport for a symbol never seen: recorded, not a crash.
    let unknown_symbol = wrap(format!(
        r#"{{"e":"executionReport","E":{now},"s":"ZZZUSDT","c":"z1","S":"BUY","o":"LIMIT","f":"GTC","q":"1","p":"1","P":"0","x":"CANCELED","X":"CANCELED","i":4242,"l":"0","z":"0","L":"0","n":"0","N":null,"T":{now},"t":-1,"w":false,"m":false,"O":{now},"Z":"0","Y":"0"}}"#
    ));
    b.sim.send_raw_text(unknown_symbol);
    b.delivered(MIN_EVENTS + 1_000).await;
    trader.abort();
    eventually(WAIT, "the hostile frames counted", || async {
        metric(&d, "acctstate_parse_errors_total").await >= parse_errors + 5.0
            && metric(&d, "acctstate_unknown_events_total").await > unknown
    })
    .await;
    let warns = d
        .logs()
        .iter()
        .filter(|l| {
            l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("skipped"))
        })
        .count();
    assert!(warns >= 6, "{warns} WARN lines for 6 skipped frames");
    assert_eq!(b.reconnects(&d).await, 0, "bad frames are skipped in place");
    let injected = ["ZZZUSDT:4242".to_owned()];
    eventually(WAIT, "the unknown symbol's order recorded", || async {
        PgState::read(&b.pool, &b.account)
            .await
            .orders
            .contains_key(&injected[0])
    })
    .await;
    let a = account_json(&b.client, d.http.unwrap()).await.unwrap();
    assert!(
        !a.balances.contains_key("BADNEG"),
        "a negative balance was applied"
    );
    b.finish(d, 300, &injected).await;
}

/// Redis restarted empty, or its keys flushed, while the account is quiet (nothing is published,
/// so no write fails, and a flush is no reconnect): the state keys must come back complete —
/// every balance and open order the cache holds — without waiting for the entities to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_while_quiet_gets_every_state_key_back() {
    let mut redis = PrivateRedis::start().await;
    let mut b = Bounce::new(SimMarket::Spot, None, Some(redis.url())).await;
    let d = b.start().await;
    b.sim.run(2_000, Some(RATE)).await;
    assert_converged(&b.sim, &b.observed(&d, &[])).await;
    for round in 0..3 {
        redis.kill();
        redis.start_again().await;
        b.redis = redis_client_at(&redis.url()).await;
        let fresh = RedisState::read(&b.redis, &b.prefix, &b.account).await;
        assert!(
            fresh.balances.is_empty(),
            "round {round}: Redis came back empty"
        );
        eventually(WAIT, "the state keys are complete again", || async {
            check_converged(&b.sim, &b.observed(&d, &[])).await.is_ok()
        })
        .await;
    }
    // A flush (or eviction) of this account's keys: no reconnect tells the daemon.
    let _: i64 = fred::interfaces::KeysInterface::del(
        &b.redis,
        vec![
            format!("{}:{}:balances", b.prefix, b.account),
            format!("{}:{}:open_orders", b.prefix, b.account),
            format!("{}:{}:seq", b.prefix, b.account),
        ],
    )
    .await
    .expect("DEL");
    eventually(WAIT, "the flushed state keys are rewritten", || async {
        check_converged(&b.sim, &b.observed(&d, &[])).await.is_ok()
    })
    .await;
    b.sim.run(MIN_EVENTS as usize, Some(RATE)).await;
    b.finish(d, 300, &[]).await;
}
