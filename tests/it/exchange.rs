//! The whole daemon (`app::run_daemon`) through the real network path — signed REST, the spot
//! WebSocket API subscription, the USD-M listenKey stream — against the simulated exchange, with
//! real Postgres and Redis. Every test trades on the sim, possibly injects a fault, stops trading
//! and then waits until the daemon's cache (`/v1/account`), Postgres and Redis all equal the sim's
//! account (`assert_converged`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use acctstate::account::{AccountView, Balance, Market, Order, Position};
use acctstate::sim::{DEMO_API_KEY, DEMO_API_SECRET, Sim, SimConfig, SimMarket, SimState};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// How long a daemon may take to become ready.
const READY: Duration = Duration::from_secs(30);
/// How long the daemon may take to converge once trading stopped.
const CONVERGE: Duration = Duration::from_secs(60);
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

/// `/v1/account` as the daemon serves it.
#[derive(Debug, Deserialize)]
struct AccountJson {
    account_id: String,
    market: Market,
    seq: i64,
    balances: BTreeMap<String, Balance>,
    positions: BTreeMap<String, Position>,
    open_orders: BTreeMap<String, Order>,
    stream: Value,
}

impl AccountJson {
    fn view(&self) -> AccountView {
        AccountView {
            account_id: self.account_id.clone(),
            market: self.market,
            seq: self.seq,
            balances: self.balances.clone(),
            positions: self.positions.clone(),
            open_orders: self.open_orders.clone(),
        }
    }

    fn reconnects(&self) -> u64 {
        self.stream["reconnects"].as_u64().unwrap_or_default()
    }
}

/// Starts `run_daemon` against `sim` without waiting for readiness; `extra` variables override
/// the defaults (e.g. `BINANCE_API_SECRET`).
async fn spawn_daemon(sim: &Sim, extra: &[(&str, &str)]) -> Daemon {
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
        let r = self
            .client
            .get(self.url("/v1/account"))
            .send()
            .await
            .map_err(|e| format!("GET /v1/account: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("GET /v1/account: HTTP {}", r.status()));
        }
        r.json::<AccountJson>()
            .await
            .map_err(|e| format!("GET /v1/account body: {e}"))
    }

    async fn reconnects(&self) -> u64 {
        self.account().await.expect("/v1/account").reconnects()
    }

    /// The journal's status rows: (event, detail, event_time), in seq order.
    async fn status_rows(&self) -> Vec<(String, Option<String>, i64)> {
        sqlx::query(
            "SELECT data->>'event' AS event, data->>'detail' AS detail, event_time
             FROM account_changes WHERE account_id = $1 AND kind = 'status' ORDER BY seq",
        )
        .bind(&self.account)
        .fetch_all(&self.pool)
        .await
        .expect("read status rows")
        .into_iter()
        .map(|r| {
            let t: chrono::DateTime<chrono::Utc> = r.get("event_time");
            (r.get("event"), r.get("detail"), t.timestamp_millis())
        })
        .collect()
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
    Sim::start(SimConfig::new(market)).await.expect("sim starts")
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
    eventually(WAIT, &format!("more than {before} reconnects, ready again"), || async {
        d.account().await.is_ok_and(|a| a.reconnects() > before) && d.ready().await
    })
    .await;
}

/// The minimum-volume guard: no test may pass on an idle account.
fn assert_volume(sim: &Sim, events: u64, fills: usize) {
    let sent = sim.events_sent();
    assert!(
        sent >= events,
        "the sim delivered only {sent} events (< {events})"
    );
    let n = sim.state().fills.len();
    assert!(n >= fills, "the sim holds only {n} fills (< {fills})");
}

/// Polls until the daemon's cache, Postgres and Redis all equal the sim's account.
async fn assert_converged(sim: &Sim, d: &Daemon) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let last = match check_converged(sim, d).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("not converged after {CONVERGE:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Windows (exchange ms) in which the daemon had no stream: from each `disconnected` status row
/// (less 1 s: the frames in flight when the connection broke) to the next `connected` one.
async fn gap_windows(d: &Daemon) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = None;
    for (event, _, t) in d.status_rows().await {
        match event.as_str() {
            "disconnected" if start.is_none() => start = Some(t - 1000),
            "connected" => {
                if let Some(s) = start.take() {
                    out.push((s, t + 5));
                }
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, i64::MAX));
    }
    out
}

fn diff<V: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    let mut lines = Vec::new();
    for k in keys {
        let (g, w) = (got.get(k), want.get(k));
        if g != w {
            lines.push(format!("{k}: daemon {g:?}, sim {w:?}"));
        }
    }
    let n = lines.len();
    lines.truncate(5);
    Err(format!("{what}: {n} differences, e.g. {}", lines.join("; ")))
}

async fn check_converged(sim: &Sim, d: &Daemon) -> Result<(), String> {
    let st: SimState = sim.state();
    let account = d.account().await?;
    let view = account.view();

    // Balances (an asset missing on one side counts as zero).
    let pick = |b: &Balance| match sim.market() {
        SimMarket::Spot => (b.free, b.locked),
        SimMarket::Usdm => (
            b.wallet_balance.unwrap_or_default(),
            b.cross_wallet_balance.unwrap_or_default(),
        ),
    };
    let zero = (Decimal::ZERO, Decimal::ZERO);
    let want: BTreeMap<String, (Decimal, Decimal)> = st
        .balances
        .iter()
        .map(|(k, b)| {
            let v = match sim.market() {
                SimMarket::Spot => (b.free, b.locked),
                SimMarket::Usdm => (b.wallet_balance, b.cross_wallet_balance),
            };
            (k.clone(), v)
        })
        .filter(|(_, v)| *v != zero)
        .collect();
    let got: BTreeMap<String, (Decimal, Decimal)> = view
        .balances
        .iter()
        .map(|(k, b)| (k.clone(), pick(b)))
        .filter(|(_, v)| *v != zero)
        .collect();
    diff("balances", &got, &want)?;

    // Positions: amount and entry price of the non-zero ones (missing = flat).
    let want: BTreeMap<String, (Decimal, Decimal)> = st
        .positions
        .iter()
        .filter(|(_, p)| !p.amount.is_zero())
        .map(|(k, p)| (k.clone(), (p.amount, p.entry_price)))
        .collect();
    let got: BTreeMap<String, (Decimal, Decimal)> = view
        .positions
        .iter()
        .filter(|(_, p)| !p.amount.is_zero())
        .map(|(k, p)| (k.clone(), (p.amount, p.entry_price)))
        .collect();
    diff("positions", &got, &want)?;

    // Open orders: key set, status and filled quantity; algo orders as SYMBOL:-ALGOID.
    let mut want: BTreeMap<String, (String, Decimal)> = st
        .open_orders
        .iter()
        .map(|(k, o)| (k.clone(), (o.status.clone(), o.executed_qty)))
        .collect();
    for a in st.open_algo_orders.values() {
        want.insert(
            format!("{}:-{}", a.symbol, a.algo_id),
            (a.status.clone(), Decimal::ZERO),
        );
    }
    let got: BTreeMap<String, (String, Decimal)> = view
        .open_orders
        .iter()
        .map(|(k, o)| (k.clone(), (o.status.as_str().to_owned(), o.executed_qty)))
        .collect();
    diff("open orders", &got, &want)?;

    // Postgres fills: exactly the sim's trades, each once (table and journal).
    let rows = sqlx::query("SELECT symbol, trade_id FROM fills WHERE account_id = $1")
        .bind(&d.account)
        .fetch_all(&d.pool)
        .await
        .map_err(|e| format!("read fills: {e}"))?;
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let s: String = r.get("symbol");
            let t: i64 = r.get("trade_id");
            format!("{s}:{t}")
        })
        .collect();
    if got.len() != rows.len() {
        return Err(format!(
            "fills: {} rows but {} distinct (symbol, trade_id)",
            rows.len(),
            got.len()
        ));
    }
    let want: BTreeSet<String> = st.fills.keys().cloned().collect();
    if got != want {
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        return Err(format!(
            "fills table: {} rows, sim {} trades; missing e.g. {missing:?}, extra e.g. {extra:?}",
            got.len(),
            want.len()
        ));
    }
    let (journal_fills, journal_keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT key) FROM account_changes
         WHERE account_id = $1 AND kind = 'fill'",
    )
    .bind(&d.account)
    .fetch_one(&d.pool)
    .await
    .map_err(|e| format!("count journal fills: {e}"))?;
    if journal_fills != journal_keys || journal_keys as usize != want.len() {
        return Err(format!(
            "journal: {journal_fills} fill rows, {journal_keys} distinct, sim {} trades",
            want.len()
        ));
    }

    // Postgres orders: the sim's final status of every order. The only order the daemon cannot
    // know is one that lived and ended without a trade entirely inside a stream gap (Binance
    // replays nothing and the snapshot lists open orders only); such orders are tolerated.
    let rows = sqlx::query("SELECT symbol, order_id, status FROM orders WHERE account_id = $1")
        .bind(&d.account)
        .fetch_all(&d.pool)
        .await
        .map_err(|e| format!("read orders: {e}"))?;
    let pg: BTreeMap<String, String> = rows
        .iter()
        .filter(|r| r.get::<i64, _>("order_id") > 0)
        .map(|r| {
            let s: String = r.get("symbol");
            let id: i64 = r.get("order_id");
            (format!("{s}:{id}"), r.get("status"))
        })
        .collect();
    let gaps = gap_windows(d).await;
    let traded: BTreeSet<String> = st
        .fills
        .values()
        .map(|f| format!("{}:{}", f.symbol, f.order_id))
        .collect();
    let mut unseen = 0;
    for (k, o) in &st.orders {
        match pg.get(k) {
            Some(s) if *s == o.status => {}
            Some(s) => return Err(format!("orders table: {k} is {s}, sim {}", o.status)),
            None => {
                let in_gap = gaps
                    .iter()
                    .any(|(a, b)| o.created_at >= *a && o.updated_at <= *b);
                let finished = !st.open_orders.contains_key(k);
                if finished && in_gap && !traded.contains(k) {
                    unseen += 1;
                } else {
                    return Err(format!(
                        "orders table: {k} missing (sim {}, created {}, updated {}, gaps {gaps:?})",
                        o.status, o.created_at, o.updated_at
                    ));
                }
            }
        }
    }
    if let Some(k) = pg.keys().find(|k| !st.orders.contains_key(*k)) {
        return Err(format!("orders table: {k} is not a sim order"));
    }

    // Redis: the state hashes and seq equal the cache's view.
    let redis = RedisState::read(&d.redis, &d.prefix, &d.account).await;
    let expected = RedisState::of_view(&view);
    if redis != expected {
        return Err(format!(
            "redis differs from the cache (redis seq {:?}, cache seq {:?}; balances equal {}, positions equal {}, open orders equal {})",
            redis.seq,
            expected.seq,
            redis.balances == expected.balances,
            redis.positions == expected.positions,
            redis.open_orders == expected.open_orders
        ));
    }
    if unseen > 0 {
        eprintln!(
            "converged; {unseen} orders lived and ended without a trade inside a stream gap and are unknown to the daemon"
        );
    }
    Ok(())
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
    assert_converged(&sim, &d).await;
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
