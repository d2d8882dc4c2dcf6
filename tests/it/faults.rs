//! The bounce suite, in the style of Kafka's `test_bounce`: the daemon runs as its own process
//! (the built binary) against the simulated exchange in this test process; at least 10,000
//! events go through the sim while the system is faulted (Postgres stopped, Redis killed, the
//! WebSocket dropped, the listenKey expired, the subscription terminated, SIGTERM, `kill -9`,
//! silent account changes); then `missing = expected − recorded` must be empty for fills, the
//! journal must have no seq reused (and no gap within a run that ended gracefully), and the
//! cache, the tables and the Redis hashes must equal the sim's final state.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket};
use fred::prelude::Client;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;

use crate::common::*;

/// The minimum number of events the sim must have delivered in every test.
const MIN_EVENTS: u64 = 10_000;
/// Trading pace (events/s) of the bursts.
const RATE: u32 = 3_000;
/// A run must exit within the drain timeout (10 s by default) and a little.
const EXIT: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How one daemon run ended, for the journal checks.
struct RunEnd {
    first_seq: i64,
    /// Graceful: the `cache actor stopped` seq. Killed: the highest seq Postgres held after it.
    last_seq: i64,
    graceful: bool,
}

/// One account bounced through several daemon runs: the sim, the database, Redis, the runs.
struct Bounce {
    sim: Sim,
    db_url: String,
    pool: PgPool,
    redis_url: String,
    redis: Client,
    prefix: String,
    account: String,
    client: reqwest::Client,
    runs: Vec<RunEnd>,
}

impl Bounce {
    /// A sim of `market`, a database (`db_url`, or a fresh one on the shared server) and Redis
    /// (`redis_url`, or the shared one).
    async fn new(market: SimMarket, db_url: Option<String>, redis_at: Option<String>) -> Bounce {
        let sim = Sim::start(SimConfig::new(market))
            .await
            .expect("sim starts");
        let (db_url, pool) = match db_url {
            Some(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(3)
                    .connect(&url)
                    .await
                    .expect("connect to the private Postgres");
                (url, pool)
            }
            None => fresh_db().await,
        };
        let redis_url = redis_at.unwrap_or_else(redis_url);
        Bounce {
            sim,
            db_url,
            pool,
            redis: redis_client_at(&redis_url).await,
            redis_url,
            prefix: unique_prefix(),
            account: unique_account(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            runs: Vec::new(),
        }
    }

    /// The daemon's variables; `redis_url` may differ from the test's (a proxy).
    fn vars(&self, redis_url: &str) -> Vec<(&'static str, String)> {
        let market = match self.sim.market() {
            SimMarket::Spot => "spot",
            SimMarket::Usdm => "usdm",
        };
        vec![
            ("ACCTSTATE__BINANCE__MARKET", market.to_owned()),
            ("ACCTSTATE__BINANCE__REST_URL", self.sim.rest_url()),
            ("ACCTSTATE__BINANCE__WS_URL", self.sim.ws_url()),
            // Twenty drops in a test: back off at most half a second.
            ("ACCTSTATE__BINANCE__RECONNECT_MAX_BACKOFF_MS", "500".into()),
            ("BINANCE_API_KEY", DEMO_API_KEY.to_owned()),
            ("BINANCE_API_SECRET", DEMO_API_SECRET.to_owned()),
            ("DATABASE_URL", self.db_url.clone()),
            ("ACCTSTATE__POSTGRES__MAX_CONNECTIONS", "4".into()),
            ("ACCTSTATE__POSTGRES__MIN_CONNECTIONS", "1".into()),
            ("REDIS_URL", redis_url.to_owned()),
            ("ACCTSTATE__REDIS__PREFIX", self.prefix.clone()),
            ("ACCTSTATE__ACCOUNT_ID", self.account.clone()),
            ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0".into()),
            ("ACCTSTATE__LOG__FORMAT", "json".into()),
        ]
    }

    /// Starts a daemon process and waits until it is ready.
    async fn start(&mut self) -> DaemonProcess {
        let url = self.redis_url.clone();
        self.start_with_redis(&url).await
    }

    async fn start_with_redis(&mut self, redis_url: &str) -> DaemonProcess {
        let vars = self.vars(redis_url);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let d = DaemonProcess::run(&vars).await;
        let ready = d.url("/readyz");
        let client = self.client.clone();
        eventually(WAIT, "the daemon is ready", || async {
            client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        d
    }

    fn observed<'a>(&'a self, d: &DaemonProcess, injected: &'a [String]) -> Observed<'a> {
        Observed {
            http: d.http.expect("the daemon's address"),
            client: &self.client,
            pool: &self.pool,
            redis: &self.redis,
            prefix: &self.prefix,
            account: &self.account,
            injected_orders: injected,
        }
    }

    /// Trades `events` events in the background at `RATE`.
    fn trade(&self, events: usize) -> JoinHandle<usize> {
        let sim = self.sim.clone();
        tokio::spawn(async move { sim.run(events, Some(RATE)).await })
    }

    /// Waits until the sim delivered `n` events in total.
    async fn delivered(&self, n: u64) {
        eventually(WAIT, &format!("the sim delivered {n} events"), || async {
            self.sim.events_sent() >= n
        })
        .await;
    }

    /// Waits until the sim made `n` more trades (delivered or not: nobody may be listening).
    async fn traded(&self, n: usize) {
        let target = self.sim.state().fills.len() + n;
        eventually(WAIT, &format!("{n} more trades on the sim"), || async {
            self.sim.state().fills.len() >= target
        })
        .await;
    }

    /// The `/v1/account` stream reconnect count.
    async fn reconnects(&self, d: &DaemonProcess) -> u64 {
        account_json(&self.client, d.http.unwrap())
            .await
            .map(|a| a.reconnects())
            .unwrap_or_default()
    }

    /// Waits until the daemon counted more than `before` reconnects and is ready again.
    async fn reconnected(&self, d: &DaemonProcess, before: u64) {
        let ready = d.url("/readyz");
        eventually(WAIT, &format!("more than {before} reconnects"), || async {
            self.reconnects(d).await > before
                && self
                    .client
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    fn first_seq(d: &DaemonProcess) -> i64 {
        d.log_line("cache started").expect("`cache started` logged")["first_seq"]
            .as_i64()
            .expect("its first_seq")
    }

    /// SIGTERM: exit 0 within the drain timeout; the run's last seq is the one logged.
    async fn stop(&mut self, mut d: DaemonProcess) {
        let first_seq = Self::first_seq(&d);
        let signalled = Instant::now();
        d.sigterm();
        let exit = d.wait_with_deadline(EXIT).await;
        let took = signalled.elapsed();
        assert!(
            exit.success(),
            "exit {exit}; last lines: {:#?}",
            d.stdout().iter().rev().take(10).collect::<Vec<_>>()
        );
        assert!(took < Duration::from_secs(11), "the drain took {took:?}");
        let last_seq = d.log_line("cache actor stopped").expect("logged")["seq"]
            .as_i64()
            .expect("its seq");
        self.runs.push(RunEnd {
            first_seq,
            last_seq,
            graceful: true,
        });
    }

    /// `kill -9`: the run's last seq is whatever Postgres holds.
    async fn kill9(&mut self, mut d: DaemonProcess) {
        let first_seq = Self::first_seq(&d);
        d.signal("KILL");
        let exit = d.wait_with_deadline(EXIT).await;
        assert!(!exit.success(), "killed: {exit}");
        let max: Option<i64> =
            sqlx::query_scalar("SELECT max(seq) FROM account_changes WHERE account_id = $1")
                .bind(&self.account)
                .fetch_one(&self.pool)
                .await
                .unwrap();
        self.runs.push(RunEnd {
            first_seq,
            last_seq: max.unwrap_or(first_seq - 1),
            graceful: false,
        });
    }

    /// Converges, stops the daemon, and checks the journal, the fills and the volume.
    async fn finish(mut self, d: DaemonProcess, min_fills: usize, injected: &[String]) {
        assert_converged(&self.sim, &self.observed(&d, injected)).await;
        self.stop(d).await;
        self.assert_journal().await;
        self.assert_no_fill_missing().await;
        assert_volume(&self.sim, MIN_EVENTS, min_fills);
        redis_cleanup_at(&self.redis_url, &self.prefix, &self.account).await;
    }

    /// No seq reused: every run's seqs lie above the previous run's, inside
    /// `[first_seq, last_seq]` of their run; a run that ended gracefully has no gap.
    async fn assert_journal(&self) {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM account_changes WHERE account_id = $1 ORDER BY seq",
        )
        .bind(&self.account)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let distinct: BTreeSet<i64> = seqs.iter().copied().collect();
        assert_eq!(distinct.len(), seqs.len(), "a seq appears twice");
        let mut accounted = 0;
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(prev) = i.checked_sub(1).map(|p| &self.runs[p]) {
                assert!(
                    prev.last_seq < run.first_seq,
                    "run {i} starts at {} but run {} reached {}",
                    run.first_seq,
                    i - 1,
                    prev.last_seq
                );
            }
            let n = seqs
                .iter()
                .filter(|s| (run.first_seq..=run.last_seq).contains(*s))
                .count();
            if run.graceful {
                assert_eq!(
                    n as i64,
                    run.last_seq - run.first_seq + 1,
                    "run {i}: a gap in [{}, {}]",
                    run.first_seq,
                    run.last_seq
                );
            }
            accounted += n;
        }
        assert_eq!(
            accounted,
            seqs.len(),
            "journal rows outside every run's range"
        );
        eprintln!("journal: {} rows over {} runs", seqs.len(), self.runs.len());
    }

    /// `missing = expected − recorded` is empty for fills (and nothing extra is recorded).
    async fn assert_no_fill_missing(&self) {
        let recorded: BTreeSet<String> =
            sqlx::query_scalar("SELECT symbol || ':' || trade_id FROM fills WHERE account_id = $1")
                .bind(&self.account)
                .fetch_all(&self.pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let expected: BTreeSet<String> = self.sim.state().fills.keys().cloned().collect();
        let missing: Vec<&String> = expected.difference(&recorded).collect();
        let extra: Vec<&String> = recorded.difference(&expected).collect();
        assert!(missing.is_empty(), "fills missing: {missing:?}");
        assert!(extra.is_empty(), "fills not traded: {extra:?}");
        eprintln!(
            "fills: {} traded, all recorded; {} events delivered",
            expected.len(),
            self.sim.events_sent()
        );
    }
}

/// A metric of the daemon process, summed over its labels.
async fn metric(d: &DaemonProcess, name: &str) -> f64 {
    scrape(d).await.sum(name)
}

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
    assert!(metric(&d, "acctstate_redis_resyncs_total").await >= 2.0);
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
