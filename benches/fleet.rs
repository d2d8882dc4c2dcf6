//! The scale bench of many accounts in one process: the release `acctstate` binary with an
//! `accounts_file` of `FLEET_SPOT` Spot accounts (default 1,000) and `FLEET_USDM` USD-M accounts
//! (default 100), against two sims in this process, the real local Postgres and Redis.
//!
//! `cargo bench --bench fleet` prints: start to all ready (inside the REST budget), idle RSS
//! and per extra account (against a fleet of one measured first), the idle fleet's CPU, daemon
//! CPU per event at each of `FLEET_RATES` (default 200,2000 events/s over the Spot accounts), the p50/p99 send→Redis
//! latency of a quiet account while a busy one runs `FLEET_BUSY_RATE` events/s, and a dropped
//! shared Spot connection: how many accounts it carried and how long until all were ready again.
//!
//! The sims enforce REQUEST_WEIGHT like Binance; `FLEET_WEIGHT_X` (default 10) multiplies
//! Binance's limits (6,000 / 2,400 per minute) in the sims and in the daemon's budget so the
//! bench ends in minutes (`FLEET_WEIGHT_X=1`: Binance's own limits; the start then takes
//! ×10 as long, the budget being the bottleneck).

#[path = "../tests/it/common.rs"]
mod common;
// Shared with the e2e bench, which uses the rest.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use acctstate::sim::{Sim, SimConfig, SimMarket, fleet_toml};

use common::{fresh_db, redis_url, unique_prefix};
use support::*;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(fleet());
}

async fn sim(market: SimMarket, accounts: usize, weight: u32) -> Sim {
    let mut cfg = SimConfig::new(market).with_accounts(accounts);
    cfg.weight_limit = weight;
    Sim::start(cfg).await.expect("sim starts")
}

fn vars(file: &str, db_url: &str, prefix: &str, weight: u32) -> Vec<(&'static str, String)> {
    vec![
        // The daemon plans with Binance's limit unless told: told the sims' (the USD-M budget
        // then adopts its lower `rateLimits`).
        ("ACCTSTATE__BINANCE__REST_WEIGHT_LIMIT", weight.to_string()),
        ("ACCTSTATE__ACCOUNTS_FILE", file.to_owned()),
        ("DATABASE_URL", db_url.to_owned()),
        ("REDIS_URL", redis_url()),
        ("ACCTSTATE__REDIS__PREFIX", prefix.to_owned()),
        ("ACCTSTATE__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
    ]
}

async fn wait_ready(d: &Daemon, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while !d.ready().await {
        assert!(
            t0.elapsed() < limit,
            "not every account ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t0.elapsed()
}

async fn fleet() {
    let n_spot = env_usize("FLEET_SPOT", 1_000);
    let n_usdm = env_usize("FLEET_USDM", 100);
    let x = env_usize("FLEET_WEIGHT_X", 10) as u32;
    let busy_rate = env_usize("FLEET_BUSY_RATE", 5_000) as u32;
    settle().await;
    let dir = tempfile::tempdir().unwrap();

    // A fleet of one, for the per-account cost.
    let one = sim(SimMarket::Spot, 1, 6_000 * x).await;
    let file1 = dir.path().join("one.toml");
    std::fs::write(&file1, fleet_toml(&one, "one")).unwrap();
    let (db1, _pool1) = fresh_db().await;
    let d1 = Daemon::start(&vars(
        &file1.display().to_string(),
        &db1,
        &unique_prefix(),
        6_000 * x,
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_one = rss_mib(d1.pid());
    d1.stop();
    one.shutdown();

    let spot = sim(SimMarket::Spot, n_spot, 6_000 * x).await;
    let usdm = sim(SimMarket::Usdm, n_usdm, 2_400 * x).await;
    let file = dir.path().join("fleet.toml");
    std::fs::write(
        &file,
        format!("{}\n{}", fleet_toml(&spot, "s"), fleet_toml(&usdm, "u")),
    )
    .unwrap();
    let (db, _pool) = fresh_db().await;
    let prefix = unique_prefix();
    let v = vars(&file.display().to_string(), &db, &prefix, 6_000 * x);
    let t0 = Instant::now();
    let d = Daemon::spawn(&v).await;
    wait_ready(&d, Duration::from_secs(1_800)).await;
    let ready_after = t0.elapsed();
    let start_weight = (spot.max_used_weight_seen(), usdm.max_used_weight_seen());
    header(&format!(
        "fleet: {n_spot} spot + {n_usdm} usdm accounts, one process (weight limits ×{x})"
    ));
    row(
        "start → every account ready, s",
        format!("{:.1}", ready_after.as_secs_f64()),
    );
    row(
        "highest weight/min seen, spot / usdm",
        format!("{} / {}", start_weight.0, start_weight.1),
    );
    row(
        "429/418 answers, spot / usdm",
        format!(
            "{} / {}",
            spot.rate_limited_count(),
            usdm.rate_limited_count()
        ),
    );
    let loads = spot.subscriptions_on_connections();
    row(
        "spot WebSocket connections (subscriptions each)",
        format!("{} ({:?}…)", loads.len(), &loads[..loads.len().min(3)]),
    );
    row(
        "usdm WebSocket connections",
        usdm.connections_open().to_string(),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_idle = rss_mib(d.pid());
    let accounts = (n_spot + n_usdm) as f64;
    row("RSS, fleet of one, MiB", format!("{rss_one:.1}"));
    row("RSS idle, whole fleet, MiB", format!("{rss_idle:.1}"));
    row(
        "RSS per extra account, KiB",
        format!("{:.0}", (rss_idle - rss_one) * 1024.0 / (accounts - 1.0)),
    );

    // Fixed cost: every account connected and subscribed, nothing happening.
    let pid = d.pid().to_string();
    let cpu0 = cpu_secs(&pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    row(
        "idle fleet: daemon CPU, ms per second",
        format!("{:.1}", (cpu_secs(&pid) - cpu0) * 100.0),
    );

    // The cost curve: each rate of FLEET_RATES (total events/s) for 20 s; below one event per
    // account and second, that many accounts at 1 ev/s, else every account at rate / n.
    let rates: Vec<usize> = std::env::var("FLEET_RATES")
        .unwrap_or_else(|_| "200,2000".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs = 20usize;
    for r in rates {
        let (accounts, per_account) = if r < n_spot {
            (r.max(1), 1)
        } else {
            (n_spot, r / n_spot)
        };
        let cpu0 = cpu_secs(&pid);
        let sent0 = spot.events_sent();
        let runs: Vec<_> = (0..accounts)
            .filter_map(|i| spot.account(i))
            .map(|a| {
                tokio::spawn(
                    async move { a.run(per_account * secs, Some(per_account as u32)).await },
                )
            })
            .collect();
        let mut produced = 0usize;
        for run in runs {
            produced += run.await.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu = cpu_secs(&pid) - cpu0;
        let delivered = spot.events_sent() - sent0;
        row(
            &format!("{r} ev/s ({per_account} ev/s × {accounts} accounts): events"),
            format!("{produced} produced / {delivered} delivered"),
        );
        row(
            &format!("{r} ev/s: daemon CPU per event (idle cost included), µs"),
            format!("{:.1}", cpu * 1e6 / delivered.max(1) as f64),
        );
    }
    row(
        "RSS after the load, MiB",
        format!("{:.1}", rss_mib(d.pid())),
    );

    // Isolation: a quiet account's latency while a busy one bursts.
    let (sub, got) = latency_subscriber(&prefix, "s-0001").await;
    spot.record_send_times_of(1);
    let busy = {
        let a = spot.account(0).expect("account 0");
        tokio::spawn(async move { a.run(busy_rate as usize * 15, Some(busy_rate)).await })
    };
    let quiet = spot.account(1).expect("account 1");
    let quiet_events = quiet.run(300, Some(20)).await;
    let busy_events = busy.await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = spot.take_send_times();
    spot.record_send_times(false);
    let _ = sub.send(());
    let received = std::mem::take(&mut *got.lock().unwrap());
    let lat = latencies(&sent, received);
    row(
        &format!("busy s-0000: events at {busy_rate}/s"),
        busy_events.to_string(),
    );
    row(
        "quiet s-0001: events sent / matched in Redis",
        format!("{quiet_events} / {}", lat.len()),
    );
    if !lat.is_empty() {
        row(
            "quiet s-0001 send→Redis p50 / p99",
            format!("{} / {}", us(pct(&lat, 0.5)), us(pct(&lat, 0.99))),
        );
    }

    // A dropped shared connection: its accounts resync inside the budget.
    let carried = spot
        .subscriptions_on_connections()
        .first()
        .copied()
        .unwrap_or(0);
    assert!(spot.drop_connection_of(0));
    let t = Instant::now();
    // The drop is seen at once (the socket closes): wait for /readyz to say so, then for
    // every carried account to resync.
    while d.ready().await && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_ready(&d, Duration::from_secs(1_800)).await;
    row(
        &format!("dropped connection: {carried} accounts resynced, s"),
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    row(
        "429/418 answers after the drop, spot",
        spot.rate_limited_count().to_string(),
    );
    row("RSS at the end, MiB", format!("{:.1}", rss_mib(d.pid())));
    row("load1 at the end", format!("{:.2}", load1()));
    d.stop();
    spot.shutdown();
    usdm.shutdown();
}
