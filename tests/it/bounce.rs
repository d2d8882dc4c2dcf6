//! One account bounced through several daemon runs, for the fault suites (`faults`, `storm`):
//! its sim, database and Redis, the daemon processes started and stopped (SIGTERM, `kill -9`),
//! and the end checks — convergence, no seq reused, no fill missing, the volume guard.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket};
use fred::prelude::Client;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;

use crate::common::*;

/// The minimum number of events the sim must have delivered in every test.
pub const MIN_EVENTS: u64 = 10_000;
/// Trading pace (events/s) of the bursts.
pub const RATE: u32 = 3_000;
/// A run must exit within the drain timeout (10 s by default) and a little.
pub const EXIT: Duration = Duration::from_secs(15);

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How one daemon run ended, for the journal checks.
pub struct RunEnd {
    pub first_seq: i64,
    /// Graceful: the `cache actor stopped` seq. Killed: the highest seq Postgres held after it.
    pub last_seq: i64,
    pub graceful: bool,
}

/// One account bounced through several daemon runs: the sim, the database, Redis, the runs.
pub struct Bounce {
    pub sim: Sim,
    pub db_url: String,
    pub pool: PgPool,
    pub redis_url: String,
    pub redis: Client,
    pub prefix: String,
    pub account: String,
    pub client: reqwest::Client,
    pub runs: Vec<RunEnd>,
    /// Variables every daemon run gets on top of (and over) the usual ones.
    pub extra: Vec<(&'static str, String)>,
}

impl Bounce {
    /// A sim of `market`, a database (`db_url`, or a fresh one on the shared server) and Redis
    /// (`redis_url`, or the shared one).
    pub async fn new(
        market: SimMarket,
        db_url: Option<String>,
        redis_at: Option<String>,
    ) -> Bounce {
        Bounce::with_sim(SimConfig::new(market), db_url, redis_at).await
    }

    /// As `new`, with a sim of this configuration (its own keys, limits, …).
    pub async fn with_sim(
        cfg: SimConfig,
        db_url: Option<String>,
        redis_at: Option<String>,
    ) -> Bounce {
        let sim = Sim::start(cfg).await.expect("sim starts");
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
            extra: Vec::new(),
        }
    }

    /// The daemon's variables; `redis_url` may differ from the test's (a proxy).
    pub fn vars(&self, redis_url: &str) -> Vec<(&'static str, String)> {
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
            // ... and twenty resyncs, each with its backfill, spend up to ~4,800 of the sim's
            // 6,000 weight a minute: the default 80% share (4,800) would make the last resync
            // wait, rightly, for the next minute, past the convergence deadline. These tests
            // are about faults; the budget has its own (`fleet`).
            ("ACCTSTATE__BINANCE__REST_WEIGHT_SHARE_PCT", "100".into()),
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
        .into_iter()
        .filter(|(k, _)| !self.extra.iter().any(|(e, _)| e == k))
        .chain(self.extra.iter().cloned())
        .collect()
    }

    /// Starts a daemon process and waits until it is ready.
    pub async fn start(&mut self) -> DaemonProcess {
        let url = self.redis_url.clone();
        self.start_with_redis(&url).await
    }

    pub async fn start_with_redis(&mut self, redis_url: &str) -> DaemonProcess {
        let d = self.spawn_with_redis(redis_url).await;
        self.wait_ready(&d, WAIT).await;
        d
    }

    /// Starts a daemon process without waiting for readiness (Postgres or Redis may be down).
    pub async fn spawn_with_redis(&self, redis_url: &str) -> DaemonProcess {
        let vars = self.vars(redis_url);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        DaemonProcess::run(&vars).await
    }

    /// Waits until `d` answers `/readyz` with 200.
    pub async fn wait_ready(&self, d: &DaemonProcess, timeout: Duration) {
        let ready = d.url("/readyz");
        eventually(timeout, "the daemon is ready", || async {
            self.client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    pub fn observed<'a>(&'a self, d: &DaemonProcess, injected: &'a [String]) -> Observed<'a> {
        Observed {
            http: d.http.expect("the daemon's address"),
            client: &self.client,
            pool: &self.pool,
            redis: &self.redis,
            prefix: &self.prefix,
            account: &self.account,
            injected_orders: injected,
            query: "",
        }
    }

    /// Trades `events` events in the background at `RATE`.
    pub fn trade(&self, events: usize) -> JoinHandle<usize> {
        let sim = self.sim.clone();
        tokio::spawn(async move { sim.run(events, Some(RATE)).await })
    }

    /// Waits until the sim delivered `n` events in total.
    pub async fn delivered(&self, n: u64) {
        eventually(WAIT, &format!("the sim delivered {n} events"), || async {
            self.sim.events_sent() >= n
        })
        .await;
    }

    /// Waits until the sim made `n` more trades (delivered or not: nobody may be listening).
    pub async fn traded(&self, n: usize) {
        let target = self.sim.state().fills.len() + n;
        eventually(WAIT, &format!("{n} more trades on the sim"), || async {
            self.sim.state().fills.len() >= target
        })
        .await;
    }

    /// The `/v1/account` stream reconnect count.
    pub async fn reconnects(&self, d: &DaemonProcess) -> u64 {
        account_json(&self.client, d.http.unwrap())
            .await
            .map(|a| a.reconnects())
            .unwrap_or_default()
    }

    /// Waits until the daemon counted more than `before` reconnects and is ready again.
    pub async fn reconnected(&self, d: &DaemonProcess, before: u64) {
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

    pub fn first_seq(d: &DaemonProcess) -> i64 {
        d.log_line("cache started").expect("`cache started` logged")["first_seq"]
            .as_i64()
            .expect("its first_seq")
    }

    /// SIGTERM: exit 0 within the drain timeout; the run's last seq is the one logged.
    pub async fn stop(&mut self, mut d: DaemonProcess) {
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
    pub async fn kill9(&mut self, mut d: DaemonProcess) {
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
    pub async fn finish(mut self, d: DaemonProcess, min_fills: usize, injected: &[String]) {
        let sim = &self.sim;
        if let Err(last) =
            converged_within(|| sim.state(), sim.market(), &self.observed(&d, injected)).await
        {
            // The daemon's own account of the stream is what tells a stuck session from a slow
            // one: its last state transitions go with the failure.
            let transitions: Vec<String> = d
                .logs()
                .iter()
                .filter(|l| l.get("event").is_some())
                .map(|l| l.to_string())
                .collect();
            let tail = &transitions[transitions.len().saturating_sub(40)..];
            panic!(
                "not converged after {CONVERGE:?}: {last}\nthe sim's REST weight: highest minute {}, {} requests refused\nthe daemon's last state transitions:\n{}",
                sim.max_used_weight_seen(),
                sim.rate_limited_count(),
                tail.join("\n")
            );
        }
        self.stop(d).await;
        self.assert_journal().await;
        self.assert_no_fill_missing().await;
        assert_volume(&self.sim, MIN_EVENTS, min_fills);
        redis_cleanup_at(&self.redis_url, &self.prefix, &self.account).await;
    }

    /// No seq reused: every run's seqs lie above the previous run's, inside
    /// `[first_seq, last_seq]` of their run; a run that ended gracefully has no gap.
    pub async fn assert_journal(&self) {
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
    pub async fn assert_no_fill_missing(&self) {
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
pub async fn metric(d: &DaemonProcess, name: &str) -> f64 {
    scrape(d).await.sum(name)
}
