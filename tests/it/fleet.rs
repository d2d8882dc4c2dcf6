//! Many accounts in one process (`app::run_fleet` with an `accounts_file`) against sims that
//! serve many accounts, with real Postgres and Redis: isolation (one account's burst and bad
//! frames never reach another's rows, keys or readiness), Spot subscriptions sharing one
//! WebSocket API connection, a dropped shared connection resyncing exactly its accounts, the
//! REST budget held against the sim's enforcement, SIGHUP add / remove / keep, and the accounts
//! file's validation (exit 2 naming the entry and key).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use acctstate::sim::{Sim, SimAccount, SimConfig, SimMarket, fleet_toml};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::procs::run_to_end;

const WAIT: Duration = Duration::from_secs(60);

/// A fleet daemon running in-process.
struct Fleet {
    http: SocketAddr,
    client: reqwest::Client,
    pool: PgPool,
    redis: fred::prelude::Client,
    prefix: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
    reload: mpsc::UnboundedSender<()>,
    cancel: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Fleet {
    /// Starts a fleet over `accounts` (TOML), with `extra` settings.
    async fn start(accounts: &str, extra: &[(&str, &str)]) -> Fleet {
        test_logs();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts.toml");
        std::fs::write(&file, accounts).unwrap();
        let (db_url, pool) = fresh_db().await;
        let prefix = unique_prefix();
        let redis = redis_url();
        let file_s = file.display().to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("ACCTSTATE__ACCOUNTS_FILE", &file_s),
            ("DATABASE_URL", &db_url),
            ("ACCTSTATE__POSTGRES__MAX_CONNECTIONS", "4"),
            ("ACCTSTATE__POSTGRES__MIN_CONNECTIONS", "1"),
            ("REDIS_URL", &redis),
            ("ACCTSTATE__REDIS__PREFIX", &prefix),
            ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0"),
        ];
        vars.extend_from_slice(extra);
        let settings = settings(&vars);
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (reload, reload_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(acctstate::app::run_fleet(
            settings,
            cancel.clone(),
            Some(tx),
            Some(reload_rx),
        ));
        let http = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!("fleet did not serve HTTP: {:?}", task.await),
        };
        Fleet {
            http,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            pool,
            redis: redis_client().await,
            prefix,
            file,
            _dir: dir,
            reload,
            cancel,
            task: Some(task),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ready(&self) -> bool {
        self.get("/readyz").await.0 == 200
    }

    async fn accounts(&self) -> Vec<Value> {
        match self.get("/v1/accounts").await {
            (200, Value::Array(list)) => list,
            other => panic!("/v1/accounts: {other:?}"),
        }
    }

    /// `/v1/accounts`' entry of `id`.
    async fn entry(&self, id: &str) -> Option<Value> {
        self.accounts()
            .await
            .into_iter()
            .find(|a| a["account_id"] == id)
    }

    fn observed<'a>(&'a self, id: &'a str, query: &'a str) -> Observed<'a> {
        Observed {
            http: self.http,
            client: &self.client,
            pool: &self.pool,
            redis: &self.redis,
            prefix: &self.prefix,
            account: id,
            injected_orders: &[],
            query,
        }
    }

    /// Waits until account `id`'s cache, rows and keys equal `acct` of a `market` sim.
    async fn converged(&self, acct: &SimAccount, market: SimMarket, id: &str) {
        let query = format!("?account={id}");
        eprintln!("fleet test: waiting for {id} to converge");
        assert_converged_to(|| acct.state(), market, &self.observed(id, &query)).await;
    }

    async fn rewrite(&self, accounts: &str) {
        std::fs::write(&self.file, accounts).unwrap();
        self.reload.send(()).unwrap();
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        let task = self.task.take().unwrap();
        match tokio::time::timeout(WAIT, task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("fleet did not stop cleanly: {other:?}"),
        }
    }
}

async fn sim(market: SimMarket, accounts: usize, max_subs: usize) -> Sim {
    let mut cfg = SimConfig::new(market).with_accounts(accounts);
    cfg.max_subscriptions_per_connection = max_subs;
    Sim::start(cfg).await.expect("sim starts")
}

fn account(sim: &Sim, i: usize) -> SimAccount {
    sim.account(i).expect("sim account")
}

/// Trades `events` on account `i` in the background.
fn trade(sim: &Sim, i: usize, events: usize, per_sec: Option<u32>) -> JoinHandle<usize> {
    let a = account(sim, i);
    tokio::spawn(async move { a.run(events, per_sec).await })
}

async fn rows_of(pool: &PgPool, table: &str) -> Vec<(String, i64)> {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT account_id, count(*) AS n FROM {table} GROUP BY account_id ORDER BY account_id"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get("account_id"), r.get("n")))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_and_usdm_accounts_share_connections_and_stay_isolated() {
    let spot = sim(SimMarket::Spot, 3, 1000).await;
    let usdm = sim(SimMarket::Usdm, 2, 1000).await;
    let file = format!("{}\n{}", fleet_toml(&spot, "s"), fleet_toml(&usdm, "u"));
    let f = Fleet::start(&file, &[]).await;
    eventually(WAIT, "every account ready", || f.ready()).await;
    assert_eq!(f.accounts().await.len(), 5);
    assert_eq!(
        spot.subscriptions_on_connections(),
        vec![3],
        "three spot accounts on one WebSocket API connection"
    );

    // A burst on s-0000; bad frames on the shared spot connection (they name no account:
    // skipped and counted, nobody's) and on u-0001's own connection (u-0001's parse errors).
    let busy = trade(&spot, 0, 3_000, None);
    let quiet = trade(&spot, 1, 300, Some(300));
    account(&spot, 1).send_raw_text("{not json".into());
    account(&spot, 1)
        .send_raw_text(r#"{"subscriptionId":99,"event":{"e":"executionReport"}}"#.into());
    account(&usdm, 1).send_raw_text("{not json".into());
    let third = trade(&spot, 2, 300, Some(300));
    let u0 = trade(&usdm, 0, 800, None);
    let u1 = trade(&usdm, 1, 300, Some(300));
    for t in [busy, quiet, third, u0, u1] {
        t.await.unwrap();
    }
    for i in 0..3 {
        f.converged(&account(&spot, i), SimMarket::Spot, &format!("s-{i:04}"))
            .await;
    }
    for i in 0..2 {
        f.converged(&account(&usdm, i), SimMarket::Usdm, &format!("u-{i:04}"))
            .await;
    }
    // Every row is of one of the five accounts, and each has its own.
    let fills = rows_of(&f.pool, "fills").await;
    let ids: Vec<&str> = fills.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(ids, ["s-0000", "s-0001", "s-0002", "u-0000", "u-0001"]);
    let busy_fills = fills[0].1;
    assert_eq!(busy_fills as usize, account(&spot, 0).state().fills.len());
    // Readiness and the API over several accounts.
    assert!(f.ready().await);
    assert_eq!(
        f.get("/v1/account").await.0,
        400,
        "several accounts need ?account="
    );
    assert_eq!(f.get("/v1/account?account=nope").await.0, 404);
    let (status, one) = f.get("/v1/account?account=u-0001").await;
    assert_eq!((status, one["market"].as_str()), (200, Some("usdm")));
    for e in f.accounts().await {
        assert_eq!(e["ready"], true, "{e}");
        assert!(e["seq"].as_i64().is_some(), "{e}");
        assert!(e.get("owner").is_some_and(Value::is_null), "{e}");
    }
    // Account-scoped metrics carry the account.
    let text = f.get_text("/metrics").await;
    let m = parse_prometheus(&text).expect("metrics parse");
    for id in ["s-0000", "s-0001", "s-0002", "u-0000", "u-0001"] {
        assert!(
            m.value_with("acctstate_changes_total", "account", id)
                .is_some(),
            "no acctstate_changes_total for {id}"
        );
    }
    let parse_errors = |id: &str| m.value_with("acctstate_parse_errors_total", "account", id);
    assert!(parse_errors("u-0001").unwrap_or(0.0) >= 1.0);
    for id in ["s-0000", "s-0001", "s-0002", "u-0000"] {
        assert_eq!(parse_errors(id), Some(0.0), "{id}");
    }
    assert!(m.sum("acctstate_unroutable_frames_total") >= 2.0);
    f.stop().await;
}

impl Fleet {
    async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body")
    }
}

/// Four Spot accounts, two per connection: dropping one connection resyncs exactly the two
/// accounts it carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_shared_connection_resyncs_exactly_its_accounts() {
    let spot = sim(SimMarket::Spot, 4, 1000).await;
    let f = Fleet::start(
        &fleet_toml(&spot, "s"),
        &[("ACCTSTATE__BINANCE__MAX_SUBSCRIPTIONS_PER_CONNECTION", "2")],
    )
    .await;
    eventually(WAIT, "every account ready", || f.ready()).await;
    let mut loads = spot.subscriptions_on_connections();
    loads.sort();
    assert_eq!(loads, vec![2, 2]);
    let traders: Vec<_> = (0..4).map(|i| trade(&spot, i, 800, Some(400))).collect();
    // Mid-session (as in the single-account drop tests: a symbol the daemon has never heard of
    // is recovered by the next reconciliation, not by this resync).
    eventually(WAIT, "every account traded a while", || async {
        (0..4).all(|i| account(&spot, i).events_sent() >= 200)
    })
    .await;
    assert!(spot.drop_connection_of(0));
    for t in traders {
        t.await.unwrap();
    }
    eventually(WAIT, "ready again", || f.ready()).await;
    let reconnects: Vec<u64> = {
        let list = f.accounts().await;
        list.iter()
            .map(|e| e["stream"]["reconnects"].as_u64().unwrap_or(99))
            .collect()
    };
    assert_eq!(
        reconnects.iter().filter(|r| **r == 1).count(),
        2,
        "exactly the two accounts of the dropped connection reconnected: {reconnects:?}"
    );
    assert_eq!(
        reconnects.iter().filter(|r| **r == 0).count(),
        2,
        "{reconnects:?}"
    );
    assert_eq!(f.entry("s-0000").await.unwrap()["stream"]["reconnects"], 1);
    for i in 0..4 {
        f.converged(&account(&spot, i), SimMarket::Spot, &format!("s-{i:04}"))
            .await;
    }
    f.stop().await;
}

/// A budget too small for every account's first snapshot in one minute: the snapshots queue
/// into the next minute, the sim (which enforces its limit with 429 and 418) never refuses a
/// call, and every account becomes ready and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_queue_inside_the_weight_budget() {
    let n = 5;
    let spot = sim(SimMarket::Spot, n, 1000).await;
    // A fresh account's first snapshot costs ~103 weight here (account 20, open orders 80, time,
    // subscription): five do not fit 330 in one minute. The daemon learns 330 from exchangeInfo
    // `rateLimits` (it would plan with 6,000 otherwise, and the sim would answer 429).
    spot.set_weight_limit(330);
    let f = Fleet::start(
        &fleet_toml(&spot, "s"),
        &[
            ("ACCTSTATE__BINANCE__REST_WEIGHT_SHARE_PCT", "100"),
            ("ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS", "0"),
        ],
    )
    .await;
    eventually(Duration::from_secs(150), "every account ready", || {
        f.ready()
    })
    .await;
    for i in 0..n {
        trade(&spot, i, 200, None).await.unwrap();
    }
    for i in 0..n {
        f.converged(&account(&spot, i), SimMarket::Spot, &format!("s-{i:04}"))
            .await;
    }
    assert_eq!(spot.rate_limited_count(), 0, "the sim refused calls");
    assert!(
        spot.max_used_weight_seen() <= 330,
        "weight {} passed the limit",
        spot.max_used_weight_seen()
    );
    let m = parse_prometheus(&f.get_text("/metrics").await).expect("metrics");
    assert!(
        m.value_with("acctstate_rest_budget_waits_total", "market", "spot")
            .unwrap_or(0.0)
            >= 1.0,
        "the snapshots did not have to queue: the test proves nothing"
    );
    f.stop().await;
}

/// SIGHUP: a removed account stops (its rows stay), an added one starts, an unchanged one is
/// not touched; a file that does not load changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_keeps_accounts() {
    let spot = sim(SimMarket::Spot, 3, 1000).await;
    let all = fleet_toml(&spot, "s");
    let entries: Vec<&str> = all.split("\n[[accounts]]\n").skip(1).collect();
    assert_eq!(entries.len(), 3);
    let file_of = |idx: &[usize]| {
        idx.iter()
            .map(|i| format!("[[accounts]]\n{}\n", entries[*i]))
            .collect::<String>()
    };
    let f = Fleet::start(&file_of(&[0, 1]), &[]).await;
    eventually(WAIT, "ready", || f.ready()).await;
    trade(&spot, 1, 300, None).await.unwrap();
    f.converged(&account(&spot, 1), SimMarket::Spot, "s-0001")
        .await;
    let kept_before = status_rows(&f.pool, "s-0001").await;

    f.rewrite(&file_of(&[1, 2])).await;
    eventually(WAIT, "s-0002 added and ready, s-0000 removed", || async {
        let ids: Vec<String> = f
            .accounts()
            .await
            .iter()
            .map(|e| e["account_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids == ["s-0001", "s-0002"] && f.ready().await
    })
    .await;
    trade(&spot, 2, 300, None).await.unwrap();
    f.converged(&account(&spot, 2), SimMarket::Spot, "s-0002")
        .await;
    // The kept account saw nothing: no new status (no reconnect, no resnapshot).
    let connected = |rows: &[(String, Option<String>, i64)], e: &str| {
        rows.iter().filter(|(x, _, _)| x == e).count()
    };
    let kept_after = status_rows(&f.pool, "s-0001").await;
    assert_eq!(
        connected(&kept_after, "connected"),
        connected(&kept_before, "connected")
    );
    assert_eq!(
        connected(&kept_after, "resynced"),
        connected(&kept_before, "resynced")
    );
    // The removed account's rows stay.
    assert!(!status_rows(&f.pool, "s-0000").await.is_empty());
    assert_eq!(
        account(&spot, 0).subscriber_count(),
        0,
        "s-0000 unsubscribed"
    );

    // A broken file changes nothing.
    f.rewrite("[[accounts]]\nid = \"bad id\"\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.accounts().await.len(), 2);
    assert!(f.ready().await);
    f.stop().await;
}

/// A bad accounts file: exit 2 before anything connects, naming the entry and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_accounts_files_exit_2_naming_the_entry_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[accounts]]\nid = \"a\"\napi_key = \"k\"\napi_secret = \"s\"\n[[accounts]]\nid = \"a\"\napi_key = \"k\"\napi_secret = \"s\"\n",
            "#2 (id `a`).id",
        ),
        (
            "[[accounts]]\nid = \"a\"\napi_key = \"k\"\n",
            "#1 (id `a`).api_secret",
        ),
        (
            "[[accounts]]\nid = \"a b\"\napi_key = \"k\"\napi_secret = \"s\"\n",
            "#1 (id `a b`).id",
        ),
    ];
    for (text, words) in cases {
        let file = dir.path().join("accounts.toml");
        std::fs::write(&file, text).unwrap();
        let file_s = file.display().to_string();
        let out = run_to_end(
            &["run"],
            &[
                ("ACCTSTATE__ACCOUNTS_FILE", &file_s),
                ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0"),
            ],
            WAIT,
        )
        .await;
        assert_eq!(out.code, Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(words), "{words} not in {}", out.stderr);
        assert!(out.stderr.contains("accounts_file"), "{}", out.stderr);
    }
}

/// The real process: `systemctl reload` sends SIGHUP; the accounts file is read again and the
/// fleet follows it, in JSON logs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_accounts_file_of_the_process() {
    let spot = sim(SimMarket::Spot, 3, 1000).await;
    let all = fleet_toml(&spot, "s");
    let entries: Vec<&str> = all.split("\n[[accounts]]\n").skip(1).collect();
    let file_of = |idx: &[usize]| {
        idx.iter()
            .map(|i| format!("[[accounts]]\n{}\n", entries[*i]))
            .collect::<String>()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts.toml");
    std::fs::write(&file, file_of(&[0])).unwrap();
    let file_s = file.display().to_string();
    let (db_url, _pool) = fresh_db().await;
    let d = DaemonProcess::run(&[
        ("ACCTSTATE__ACCOUNTS_FILE", &file_s),
        ("DATABASE_URL", &db_url),
        ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let client = reqwest::Client::new();
    let ids = || async {
        let list: Vec<Value> = client
            .get(d.url("/v1/accounts"))
            .send()
            .await
            .expect("GET /v1/accounts")
            .json()
            .await
            .expect("JSON");
        list.iter()
            .filter(|e| e["ready"] == true)
            .map(|e| e["account_id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "s-0000 ready", || async { ids().await == ["s-0000"] }).await;
    std::fs::write(&file, file_of(&[0, 1, 2])).unwrap();
    d.signal("HUP");
    eventually(WAIT, "three accounts ready after SIGHUP", || async {
        ids().await == ["s-0000", "s-0001", "s-0002"]
    })
    .await;
    eventually(WAIT, "the reload logged", || async {
        d.logs()
            .iter()
            .any(|l| l["event"] == "accounts_reloaded" && l["added"] == 2)
    })
    .await;
    let mut d = d;
    d.sigterm();
    let exit = d.wait_with_deadline(WAIT).await;
    assert!(exit.success(), "{exit:?}");
}
