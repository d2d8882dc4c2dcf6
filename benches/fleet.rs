//! The scale bench of many accounts in one process: the release `acctstate` binary with an
//! `accounts_file` of `FLEET_SPOT` Spot accounts (default 1,000) and `FLEET_USDM` USD-M accounts
//! (default 100), against two sims in this process, the real local Postgres and Redis.
//!
//! `cargo bench --bench fleet` prints: start to all ready (inside the REST budget), idle RSS
//! and per extra account (against a fleet of one measured first), the idle fleet's CPU, daemon
//! CPU per event (user + kernel), Postgres and Redis CPU and one account's send→Redis latency at
//! each of `FLEET_RATES` (default 20,200,2000,0 events/s over the Spot accounts; 0 = saturation), the p50/p99 send→Redis
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
    let (db, pool) = fresh_db().await;
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

    // The cost curve: each rate of FLEET_RATES (total events/s; 0 = saturation, every Spot
    // account FLEET_SATURATION_EVENTS at full speed) for 20 s. Below one event per account and
    // second, that many accounts at 1 ev/s, else every account at rate / n. Latency: account
    // s-0000's events (it is always among the loaded ones).
    let rates: Vec<usize> = std::env::var("FLEET_RATES")
        .unwrap_or_else(|_| "20,200,2000,0".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs = 20usize;
    let db_name = db.rsplit('/').next().unwrap_or_default().to_owned();
    let journal_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM account_changes")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
    };
    let redis_pid = redis_server_pid();
    for r in rates {
        let (accounts, per_account, per_sec) = match r {
            0 => (n_spot, env_usize("FLEET_SATURATION_EVENTS", 100), None),
            r if r < n_spot => (r.max(1), secs, Some(1)),
            r => (n_spot, secs * (r / n_spot), Some((r / n_spot) as u32)),
        };
        let label = if r == 0 {
            "saturation".to_owned()
        } else {
            format!("{r} ev/s")
        };
        let (sub, got) = latency_subscriber(&prefix, "s-0000").await;
        spot.record_send_times_of(0);
        spot.record_send_times(true);
        let (cpu0, pg0, rd0, rows0) = (
            cpu_user_kernel_secs(&pid),
            pg_backends_cpu(&db_name),
            redis_pid.as_deref().map_or(f64::NAN, cpu_secs),
            journal_rows().await,
        );
        let sent0 = spot.events_sent();
        let t0 = Instant::now();
        // Each account starts at its own phase of the period: accounts trade independently,
        // and a fleet whose accounts all fired in the same millisecond would measure a queue
        // of 1,000 events every half second, not the rate (before session 6 it did).
        let period = per_sec.map_or(Duration::ZERO, |p| Duration::from_secs(1) / p);
        let runs: Vec<_> = (0..accounts)
            .filter_map(|i| spot.account(i))
            .enumerate()
            .map(|(k, a)| {
                let phase = period.mul_f64(k as f64 / accounts as f64);
                tokio::spawn(async move {
                    tokio::time::sleep(phase).await;
                    a.run(per_account, per_sec).await
                })
            })
            .collect();
        let mut produced = 0usize;
        for run in runs {
            produced += run.await.unwrap_or_default();
        }
        // Every event into the journal (an event makes at least one row), then (rates) the
        // rest of the window: idle costs count.
        let want = rows0 + produced as i64;
        let caught_up = Instant::now() + Duration::from_secs(120);
        while journal_rows().await < want && Instant::now() < caught_up {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_done = t0.elapsed();
        if r > 0 {
            tokio::time::sleep(Duration::from_secs(secs as u64 + 2).saturating_sub(all_done)).await;
        }
        let (user, kernel) = cpu_user_kernel_secs(&pid);
        let (user, kernel) = (user - cpu0.0, kernel - cpu0.1);
        let pg = pg_backends_cpu(&db_name) - pg0;
        let rd = redis_pid.as_deref().map_or(f64::NAN, cpu_secs) - rd0;
        let rows = (journal_rows().await - rows0).max(1) as f64;
        let delivered = (spot.events_sent() - sent0).max(1) as f64;
        let lat = matched_latencies(&spot, &got);
        let _ = sub.send(());
        row(
            &format!(
                "{label} ({accounts} accounts × {per_account} events): produced / delivered / rows"
            ),
            format!("{produced} / {delivered:.0} / {rows:.0}"),
        );
        if r == 0 {
            row(
                &format!("{label}: events/s into the journal"),
                format!("{:.0}", delivered / all_done.as_secs_f64()),
            );
        }
        cpu_per_event_row(
            &format!("{label}: daemon CPU per event (user + kernel), idle included, µs"),
            user,
            kernel,
            delivered,
        );
        row(
            &format!("{label}: Postgres backends CPU per row / redis-server per event, µs"),
            format!("{:.1} / {:.1}", pg * 1e6 / rows, rd * 1e6 / delivered),
        );
        if !lat.is_empty() {
            row(
                &format!(
                    "{label}: s-0000 send→Redis p50 / p99 / p99.9 ({} events)",
                    lat.len()
                ),
                format!(
                    "{} / {} / {}",
                    us(pct(&lat, 0.50)),
                    us(pct(&lat, 0.99)),
                    us(pct(&lat, 0.999))
                ),
            );
        }
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
    let lat = matched_latencies(&spot, &got);
    let _ = sub.send(());
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
