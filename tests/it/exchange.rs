//! The whole daemon (`app::run_daemon`) through the real network path — signed REST, the spot
//! WebSocket API subscription, the USD-M listenKey stream — against the simulated exchange, with
//! real Postgres and Redis. Every test trades on the sim, possibly injects a fault, stops trading
//! and then waits until the daemon's cache (`/v1/account`), Postgres and Redis all equal the sim's
//! account (`assert_converged`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use acctstate::account::Balance;
use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// How long a daemon may take to become ready.
const READY: Duration = Duration::from_secs(30);
/// Bound of the other waits (reconnects, keepalives, ...).
const WAIT: Duration = Duration::from_secs(30);

/// A daemon running in-process against a sim, with its own database, Redis prefix and account.
struct Daemon {
    http: SocketAddr,
    client: reqwest::Client,
    pool: PgPool,
    redis: fred::prelude::Client,
    prefix: String,
    account: String,
    cancel: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test must not leave its daemon running in the shared test process.
        self.cancel.cancel();
    }
}

/// Starts `run_daemon` against `sim` without waiting for readiness; `extra` variables override
/// the defaults (e.g. `BINANCE_API_SECRET`).
async fn spawn_daemon(sim: &Sim, extra: &[(&str, &str)]) -> Daemon {
    test_logs();
    let (db_url, pool) = fresh_db().await;
    let prefix = unique_prefix();
    let account = unique_account();
    let market = match sim.market() {
        SimMarket::Spot => "spot",
        SimMarket::Usdm => "usdm",
    };
    let rest_url = sim.rest_url();
    let ws_url = sim.ws_url();
    let redis = redis_url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("ACCTSTATE__BINANCE__MARKET", market),
        ("ACCTSTATE__BINANCE__REST_URL", &rest_url),
        ("ACCTSTATE__BINANCE__WS_URL", &ws_url),
        ("BINANCE_API_KEY", DEMO_API_KEY),
        ("BINANCE_API_SECRET", DEMO_API_SECRET),
        ("DATABASE_URL", &db_url),
        ("ACCTSTATE__POSTGRES__MAX_CONNECTIONS", "4"),
        ("ACCTSTATE__POSTGRES__MIN_CONNECTIONS", "1"),
        ("REDIS_URL", &redis),
        ("ACCTSTATE__REDIS__PREFIX", &prefix),
        ("ACCTSTATE__ACCOUNT_ID", &account),
        ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0"),
    ];
    vars.extend_from_slice(extra);
    let settings = settings(&vars);
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(acctstate::app::run_daemon(
        settings,
        cancel.clone(),
        Some(tx),
    ));
    let http = match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(addr)) => addr,
        Ok(Err(_)) => panic!("daemon stopped before serving HTTP: {:?}", task.await),
        Err(_) => panic!("daemon did not bind its HTTP address within {WAIT:?}"),
    };
    Daemon {
        http,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        pool,
        redis: redis_client().await,
        prefix,
        account,
        cancel,
        task: Some(task),
    }
}

/// A daemon against `sim` that answered `/readyz` with 200.
async fn start_daemon(sim: &Sim, extra: &[(&str, &str)]) -> Daemon {
    let d = spawn_daemon(sim, extra).await;
    eventually(READY, "daemon ready (/readyz 200)", || d.ready()).await;
    d
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn ready(&self) -> bool {
        match self.client.get(self.url("/readyz")).send().await {
            Ok(r) => r.status() == reqwest::StatusCode::OK,
            Err(_) => false,
        }
    }

    /// `/v1/account`, parsed.
    async fn account(&self) -> Result<AccountJson, String> {
        account_json(&self.client, self.http).await
    }

    /// Where convergence is checked.
    fn observed(&self) -> Observed<'_> {
        Observed {
            http: self.http,
            client: &self.client,
            pool: &self.pool,
            redis: &self.redis,
            prefix: &self.prefix,
            account: &self.account,
            injected_orders: &[],
            query: "",
        }
    }

    async fn status_rows(&self) -> Vec<(String, Option<String>, i64)> {
        status_rows(&self.pool, &self.account).await
    }

    async fn reconnects(&self) -> u64 {
        self.account().await.expect("/v1/account").reconnects()
    }

    async fn count_status(&self, event: &str) -> usize {
        self.status_rows()
            .await
            .iter()
            .filter(|(e, _, _)| e == event)
            .count()
    }

    /// Cancels the daemon and waits for its drain; it must end without error.
    async fn stop(mut self) {
        self.cancel.cancel();
        let task = self.task.take().expect("daemon task");
        match tokio::time::timeout(WAIT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("run_daemon returned an error: {e:#}"),
            Ok(Err(e)) => panic!("daemon task panicked: {e}"),
            Err(_) => panic!("daemon did not stop within {WAIT:?}"),
        }
        redis_cleanup(&self.prefix, &self.account).await;
    }
}

async fn start_sim(market: SimMarket) -> Sim {
    Sim::start(SimConfig::new(market))
        .await
        .expect("sim starts")
}

/// Trades `events` events on the sim in the background (`per_sec` paced, `None` = flat out).
fn trade(sim: &Sim, events: usize, per_sec: Option<u32>) -> JoinHandle<usize> {
    let sim = sim.clone();
    tokio::spawn(async move { sim.run(events, per_sec).await })
}

/// Waits until the sim delivered at least `n` events in total.
async fn wait_delivered(sim: &Sim, n: u64) {
    eventually(WAIT, &format!("the sim delivered {n} events"), || async {
        sim.events_sent() >= n
    })
    .await;
}

/// Waits until the daemon counted more than `before` reconnects and is ready again.
async fn wait_reconnected(d: &Daemon, before: u64) {
    eventually(
        WAIT,
        &format!("more than {before} reconnects, ready again"),
        || async { d.account().await.is_ok_and(|a| a.reconnects() > before) && d.ready().await },
    )
    .await;
}

/// The `fills` table cannot hold a trade twice: its primary key is (account_id, symbol, trade_id).
async fn assert_fills_unique_by_schema(pool: &PgPool) {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index
         WHERE indrelid = 'fills'::regclass AND indisunique",
    )
    .fetch_all(pool)
    .await
    .expect("read the indexes of fills");
    assert!(
        defs.iter()
            .any(|d| d.contains("(account_id, symbol, trade_id)")),
        "fills has no unique (account_id, symbol, trade_id) index: {defs:?}"
    );
}

// ------------------------------------------------------------------------------------ sessions

async fn session_converges(market: SimMarket) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, &[]).await;
    let produced = trade(&sim, 2_000, None).await.unwrap();
    assert!(produced >= 2_000);
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    assert_fills_unique_by_schema(&d.pool).await;
    assert_eq!(d.reconnects().await, 0, "a clean session never reconnects");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_session_converges() {
    session_converges(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_session_converges() {
    session_converges(SimMarket::Usdm).await;
}

// -------------------------------------------------------------------------------------- faults

/// Connections dropped abruptly four times while trading goes on: every reconnect resyncs.
async fn drop_connections_mid_burst(market: SimMarket) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, &[]).await;
    // Trades until stopped; each drop comes after 500 events delivered on the connection
    // (the reconnect backoff grows with every drop, so the gaps grow too).
    let trader = trade(&sim, usize::MAX, Some(1_500));
    for _ in 0..4 {
        wait_delivered(&sim, sim.events_sent() + 500).await;
        let before = d.reconnects().await;
        sim.drop_connections();
        wait_reconnected(&d, before).await;
    }
    wait_delivered(&sim, sim.events_sent() + 500).await;
    trader.abort();
    let _ = trader.await;
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    assert!(d.reconnects().await >= 4);
    assert!(d.count_status("disconnected").await >= 4);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_drop_connections_mid_burst_converges() {
    drop_connections_mid_burst(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_drop_connections_mid_burst_converges() {
    drop_connections_mid_burst(SimMarket::Usdm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_listen_key_expired_converges() {
    let sim = start_sim(SimMarket::Usdm).await;
    let d = start_daemon(&sim, &[]).await;
    let trader = trade(&sim, 2_000, Some(1_500));
    wait_delivered(&sim, 800).await;
    sim.expire_listen_key();
    wait_reconnected(&d, 0).await;
    trader.await.unwrap();
    // Events traded while the stream was away were never delivered: trade on afterwards.
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 1_500, 50);
    let rows = d.status_rows().await;
    assert!(
        rows.iter().any(|(e, detail, _)| e == "disconnected"
            && detail.as_deref().is_some_and(|x| x.contains("listenKey"))),
        "no disconnect for the expired listenKey: {rows:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_terminate_subscription_converges() {
    let sim = start_sim(SimMarket::Spot).await;
    let d = start_daemon(&sim, &[]).await;
    let trader = trade(&sim, 2_000, Some(1_500));
    wait_delivered(&sim, 800).await;
    sim.terminate_subscription();
    // The daemon subscribes again on the same connection (no reconnect) and resyncs.
    eventually(WAIT, "resubscribed on the same connection", || async {
        d.status_rows()
            .await
            .iter()
            .any(|(e, _, _)| e == "resubscribed")
    })
    .await;
    trader.await.unwrap();
    // Events traded while the subscription was away were never delivered: trade on afterwards.
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 1_500, 50);
    let account = d.account().await.unwrap();
    assert_eq!(account.reconnects(), 0, "resubscribing needs no reconnect");
    assert_eq!(sim.connections_opened(), 1, "one connection all along");
    d.stop().await;
}

/// `serverShutdown`: the daemon opens and subscribes a new connection before leaving the old
/// one, so it never counts a disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_server_shutdown_hands_over() {
    let sim = start_sim(SimMarket::Spot).await;
    let d = start_daemon(&sim, &[]).await;
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    let subscribed_before = sim.subscriber_count();
    assert_eq!(subscribed_before, 1);
    sim.server_shutdown();
    eventually(
        WAIT,
        "a second `connected` status (the new connection)",
        || async { d.count_status("connected").await >= 2 },
    )
    .await;
    eventually(WAIT, "exactly one subscriber again, ready", || async {
        sim.subscriber_count() == 1 && d.ready().await
    })
    .await;
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    assert_eq!(d.reconnects().await, 0, "a handover is not a reconnect");
    assert_eq!(d.count_status("disconnected").await, 0);
    d.stop().await;
}

/// The sim changes the account without any event; `reveal` makes the daemon take a snapshot.
async fn silent_change(market: SimMarket, extra: &[(&str, &str)], reconnect: bool) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, extra).await;
    trade(&sim, 1_500, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    let usdt = |b: Option<&Balance>| {
        b.map(|b| match market {
            SimMarket::Spot => b.free,
            SimMarket::Usdm => b.wallet_balance.unwrap_or_default(),
        })
    };
    let before = usdt(d.account().await.unwrap().balances.get("USDT")).expect("USDT cached");
    sim.silent_change();
    let st = sim.state();
    let after = match market {
        SimMarket::Spot => st.balances["USDT"].free,
        SimMarket::Usdm => st.balances["USDT"].wallet_balance,
    };
    assert_ne!(before, after, "the silent change changed USDT");
    if reconnect {
        sim.drop_connections();
    }
    eventually(WAIT, "the cache took the silent USDT change", || async {
        d.account()
            .await
            .is_ok_and(|a| usdt(a.balances.get("USDT")) == Some(after))
    })
    .await;
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 1_500, 50);
    let reconnects = d.reconnects().await;
    if reconnect {
        assert_eq!(reconnects, 1, "converged within one reconnect");
    } else {
        assert_eq!(reconnects, 0, "converged by reconciliation, no reconnect");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_silent_change_converges_after_one_reconnect() {
    silent_change(SimMarket::Usdm, &[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_silent_change_converges_after_one_reconnect() {
    silent_change(SimMarket::Spot, &[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_silent_change_converges_by_reconciliation() {
    let every_second = [("ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS", "1")];
    silent_change(SimMarket::Usdm, &every_second, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_silent_change_converges_by_reconciliation() {
    let every_second = [("ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS", "1")];
    silent_change(SimMarket::Spot, &every_second, false).await;
}

/// Broken JSON, a known event with a bad decimal, a non-UTF-8 binary frame: each is skipped on
/// the same connection and the good events after them are applied.
async fn malformed_frames(market: SimMarket) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, &[]).await;
    trade(&sim, 500, None).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis() + 60_000;
    let (broken, bad_decimal) = match market {
        SimMarket::Spot => (
            r#"{"subscriptionId":0,"event":{"e":"executionReport","E":17"#.to_owned(),
            format!(
                r#"{{"subscriptionId":0,"event":{{"e":"outboundAccountPosition","E":{now},"u":{now},"B":[{{"a":"BADC","f":"12.3.4","l":"0.00000000"}}]}}}}"#
            ),
        ),
        SimMarket::Usdm => (
            r#"{"e":"ORDER_TRADE_UPDATE","E":17"#.to_owned(),
            format!(
                r#"{{"e":"ACCOUNT_UPDATE","E":{now},"T":{now},"a":{{"m":"DEPOSIT","B":[{{"a":"BADC","wb":"1x0","cw":"100","bc":"0"}}],"P":[]}}}}"#
            ),
        ),
    };
    sim.send_raw_text(broken);
    sim.send_raw_text(bad_decimal);
    sim.send_raw_binary(vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28]);
    trade(&sim, 1_500, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    let a = d.account().await.unwrap();
    assert!(
        !a.balances.contains_key("BADC"),
        "the bad frame was applied"
    );
    assert_eq!(a.reconnects(), 0, "malformed frames are skipped in place");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_malformed_frames_are_skipped() {
    malformed_frames(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_malformed_frames_are_skipped() {
    malformed_frames(SimMarket::Usdm).await;
}

/// A 200 KB frame over `max_frame_bytes` = 64 KiB: the connection is recycled and resynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_recycles_the_connection() {
    let sim = start_sim(SimMarket::Spot).await;
    let d = start_daemon(&sim, &[("ACCTSTATE__BINANCE__MAX_FRAME_BYTES", "65536")]).await;
    let trader = trade(&sim, 2_000, Some(1_500));
    wait_delivered(&sim, 800).await;
    sim.send_raw_text(format!(r#"{{"pad":"{}"}}"#, "x".repeat(200_000)));
    wait_reconnected(&d, 0).await;
    trader.await.unwrap();
    // Events traded while the stream was away were never delivered: trade on afterwards.
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 1_500, 50);
    let rows = d.status_rows().await;
    assert!(
        rows.iter().any(|(e, detail, _)| e == "disconnected"
            && detail.as_deref().is_some_and(|x| x.contains("read error"))),
        "no disconnect for the oversized frame: {rows:?}"
    );
    d.stop().await;
}

async fn duplicated_or_reordered(market: SimMarket, duplicate: bool) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, &[]).await;
    if duplicate {
        sim.set_duplicate_events(true);
    } else {
        sim.set_reorder_events(true);
    }
    trade(&sim, 2_000, None).await.unwrap();
    sim.set_duplicate_events(false);
    sim.set_reorder_events(false);
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    assert_eq!(d.reconnects().await, 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_duplicate_events_converge() {
    duplicated_or_reordered(SimMarket::Spot, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_duplicate_events_converge() {
    duplicated_or_reordered(SimMarket::Usdm, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_reordered_events_converge() {
    duplicated_or_reordered(SimMarket::Spot, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_reordered_events_converge() {
    duplicated_or_reordered(SimMarket::Usdm, false).await;
}

/// The next REST calls fail (`status`, `count` times) right before a reconnect: the resync
/// retries and succeeds.
async fn rest_failures_before_reconnect(market: SimMarket, status: u16, retry_after: Option<u64>) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, &[]).await;
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    let calls = sim.rest_calls();
    let resynced = d.count_status("resynced").await;
    sim.fail_rest(status, 2, retry_after);
    sim.drop_connections();
    eventually(WAIT, "a second resync after the failures", || async {
        d.count_status("resynced").await > resynced && d.ready().await
    })
    .await;
    assert!(
        sim.rest_calls() >= calls + 3,
        "the failing calls were made and retried"
    );
    trade(&sim, 1_000, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_rest_429_before_reconnect_resyncs() {
    rest_failures_before_reconnect(SimMarket::Usdm, 429, Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_rest_429_before_reconnect_resyncs() {
    rest_failures_before_reconnect(SimMarket::Spot, 429, Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_rest_503_before_reconnect_resyncs() {
    rest_failures_before_reconnect(SimMarket::Usdm, 503, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_rest_503_before_reconnect_resyncs() {
    rest_failures_before_reconnect(SimMarket::Spot, 503, None).await;
}

// ------------------------------------------------------------------------------------- signing

/// A wrong secret: the sim rejects the signature, the daemon never becomes ready and
/// `run_daemon` ends with an error naming the credentials.
async fn wrong_secret(market: SimMarket) {
    let sim = start_sim(market).await;
    let wrong = DEMO_API_SECRET.replace('0', "9");
    let mut d = spawn_daemon(&sim, &[("BINANCE_API_SECRET", &wrong)]).await;
    let task = d.task.take().unwrap();
    let deadline = Instant::now() + WAIT;
    while !task.is_finished() {
        assert!(!d.ready().await, "ready with a wrong secret");
        assert!(
            Instant::now() < deadline,
            "run_daemon did not give up on a wrong secret within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = task
        .await
        .unwrap()
        .expect_err("run_daemon must fail on a wrong secret");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("api_secret") && msg.contains("signature"),
        "the error names the credentials: {msg}"
    );
    assert_eq!(sim.subscriber_count(), 0);

    let ok = start_daemon(&sim, &[]).await;
    ok.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_wrong_secret_is_refused() {
    wrong_secret(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_wrong_secret_is_refused() {
    wrong_secret(SimMarket::Usdm).await;
}

/// The sim's clock runs 3 s ahead; with a 1 s recvWindow an unmeasured offset would be refused
/// (-1021), so becoming ready proves the daemon measured it.
async fn clock_offset(market: SimMarket) {
    let sim = start_sim(market).await;
    sim.set_clock_offset_ms(3_000);
    let d = start_daemon(&sim, &[("ACCTSTATE__BINANCE__RECV_WINDOW_MS", "1000")]).await;
    trade(&sim, 500, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 500, 10);
    assert_eq!(d.reconnects().await, 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_clock_offset_is_measured() {
    clock_offset(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_clock_offset_is_measured() {
    clock_offset(SimMarket::Usdm).await;
}

// ------------------------------------------------------------------ listenKey keepalive, rotation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_listen_key_is_kept_alive() {
    let sim = start_sim(SimMarket::Usdm).await;
    let d = start_daemon(&sim, &[("ACCTSTATE__BINANCE__KEEPALIVE_SECS", "1")]).await;
    eventually(WAIT, "two listenKey keepalives", || async {
        sim.listen_key_keepalives() >= 2
    })
    .await;
    trade(&sim, 500, None).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 500, 10);
    assert_eq!(d.reconnects().await, 0, "keepalives succeed; no reconnect");
    d.stop().await;
}

async fn rotation(market: SimMarket) {
    let sim = start_sim(market).await;
    let d = start_daemon(&sim, &[("ACCTSTATE__BINANCE__ROTATE_AFTER_SECS", "2")]).await;
    trade(&sim, 800, Some(1_000)).await.unwrap();
    eventually(WAIT, "a rotation of the connection", || async {
        d.status_rows().await.iter().any(|(e, detail, _)| {
            e == "disconnected" && detail.as_deref().is_some_and(|x| x.contains("rotating"))
        })
    })
    .await;
    wait_reconnected(&d, 0).await;
    trade(&sim, 1_500, Some(1_000)).await.unwrap();
    assert_converged(&sim, &d.observed()).await;
    assert_volume(&sim, 2_000, 100);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_connection_rotates_and_converges() {
    rotation(SimMarket::Usdm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_connection_rotates_and_converges() {
    rotation(SimMarket::Spot).await;
}
