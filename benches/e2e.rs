//! End-to-end load tool: the release `acctstate` binary, run as its own process, against the
//! simulated exchange (in this process) over the real loopback WebSocket, writing to the real
//! local Postgres (a fresh database per run) and Redis (a fresh prefix per run).
//!
//! Run one scenario: `cargo bench --bench e2e -- <throughput|latency|memory|outage|all>`.
//! It prints a result table (with the 1-minute load average before and after) and exits.
//! `E2E_EVENTS=N` overrides the event count of `throughput` (default 200,000) and `latency`
//! (default 30,000); `E2E_OUTAGE_SECS` the cut of `outage` (default 60); `E2E_SETTLE_SECS`
//! how long to wait, at most, for the 1-minute load to drop below 1.0 first (default 60).
//!
//! Scenarios:
//! - `throughput`: the sim steps as fast as it can; events/s from its first event until the
//!   journal (`account_changes`) holds the cache's seq and Redis `P:seq` equals it. Also the sim
//!   alone (no subscriber) and the CPU seconds the daemon and this process (the sim) used.
//! - `latency`: 2,000 events/s; from the sim queueing an event to its WebSocket writer (the
//!   `Sim::record_send_times` hook) to a Redis subscriber receiving the message carrying that
//!   event's `E` as `event_time`.
//! - `memory`: the daemon's `VmRSS` idle; its peak (`VmHWM`) loading 1,000 assets + 10,000 open
//!   orders by the snapshot, then `VmRSS` loaded and settled; every 100k events up to
//!   `E2E_MEMORY_EVENTS` (default 1,000,000; caught up before each sample).
//! - `outage`: Postgres behind a TCP proxy, 1,000 events/s, cut for 60 s: RSS and
//!   `acctstate_pg_queue_depth` during the cut, catch-up time after the restore.

#[path = "../tests/it/common.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use acctstate::sim::{Sim, SimConfig, SimMarket};

use common::TcpProxy;

use support::*;

fn main() {
    let scenario = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        match scenario.as_str() {
            "throughput" => throughput().await,
            "latency" => latency().await,
            "memory" => memory().await,
            "outage" => outage().await,
            "all" => {
                throughput().await;
                latency().await;
                memory().await;
                outage().await;
            }
            other => {
                eprintln!(
                    "unknown scenario {other:?}: throughput | latency | memory | outage | all"
                );
                std::process::exit(2);
            }
        }
    });
}

async fn throughput() {
    let n = env_usize("E2E_EVENTS", 200_000);
    settle().await;
    // The sim alone: stepping with nobody subscribed (model + payload JSON, no delivery).
    let alone = Sim::start(SimConfig::new(SimMarket::Spot)).await.unwrap();
    let t = Instant::now();
    let produced_alone = alone.run(n, None).await;
    let sim_alone = t.elapsed();
    alone.shutdown();

    let env = Env::new().await;
    let d = env.daemon().await;
    env.wait_complete(&d, WAIT).await;
    let load_before = load1();
    // The daemon's Postgres backends (this database, application_name acctstate) and the Redis
    // server (shared with anyone else using it while this runs).
    let backends: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'acctstate'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap_or_default();
    let redis_pid = redis_server_pid();
    let others = |b: &[i32], r: &Option<String>| -> (f64, f64) {
        (
            b.iter().map(|p| cpu_secs(&p.to_string())).sum(),
            r.as_deref().map_or(0.0, cpu_secs),
        )
    };
    let (cpu_pg0, cpu_r0) = others(&backends, &redis_pid);
    let cpu_d0 = cpu_secs(&d.pid().to_string());
    let cpu_s0 = cpu_secs("self");
    let rows0 = env.journal_rows().await;
    let t0 = Instant::now();
    let produced = env.sim.run(n, None).await;
    let sim_done = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while d.metric("acctstate_events_total").await < env.sim.events_sent() as f64 {
        assert!(
            Instant::now() < deadline,
            "the daemon did not receive every event"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cache_at = t0.elapsed();
    let (seq, pg_at, redis_at) = env.wait_sinks(&d, Duration::from_secs(600)).await;
    let total = t0.elapsed();
    let cpu_d = cpu_secs(&d.pid().to_string()) - cpu_d0;
    let cpu_s = cpu_secs("self") - cpu_s0;
    let (cpu_pg1, cpu_r1) = others(&backends, &redis_pid);
    let (cpu_pg, cpu_r) = (cpu_pg1 - cpu_pg0, cpu_r1 - cpu_r0);
    let rows = env.journal_rows().await - rows0;
    let sent = env.sim.events_sent();
    let rss = rss_mib(d.pid());
    d.stop();
    env.cleanup().await;

    header("throughput (max rate, spot)");
    row(
        "load1 before / after",
        format!("{load_before:.2} / {:.2}", load1()),
    );
    row("sim alone: events", produced_alone);
    row(
        "sim alone: events/s (no subscriber)",
        format!("{:.0}", produced_alone as f64 / sim_alone.as_secs_f64()),
    );
    row("events sent over WS", sent);
    row("changes journaled", rows);
    row("final seq (journal = Redis P:seq = cache)", seq);
    row(
        "sim send duration s",
        format!("{:.2}", sim_done.as_secs_f64()),
    );
    row(
        "sim send rate events/s (with daemon)",
        format!("{:.0}", produced as f64 / sim_done.as_secs_f64()),
    );
    row(
        "first event -> complete s",
        format!("{:.2}", total.as_secs_f64()),
    );
    row(
        "END-TO-END events/s",
        format!("{:.0}", produced as f64 / total.as_secs_f64()),
    );
    row(
        "daemon lag after last send s",
        format!("{:.3}", (total - sim_done).as_secs_f64()),
    );
    row(
        "first event -> all in cache s",
        format!("{:.2}", cache_at.as_secs_f64()),
    );
    row(
        "first event -> journal complete s",
        format!("{:.2}", (pg_at - t0).as_secs_f64()),
    );
    row(
        "first event -> Redis P:seq complete s",
        format!("{:.2}", (redis_at - t0).as_secs_f64()),
    );
    row("daemon CPU s", format!("{cpu_d:.2}"));
    row(
        "daemon CPU µs / event",
        format!("{:.1}", cpu_d * 1e6 / produced as f64),
    );
    row(
        "bench process (sim) CPU µs / event",
        format!("{:.1}", cpu_s * 1e6 / produced as f64),
    );
    row(
        &format!("Postgres backends ({}) CPU µs / event", backends.len()),
        format!("{:.1}", cpu_pg * 1e6 / produced as f64),
    );
    row(
        "redis-server CPU µs / event",
        format!("{:.1}", cpu_r * 1e6 / produced as f64),
    );
    row("daemon RSS after, MiB", format!("{rss:.1}"));
}

async fn latency() {
    let n = env_usize("E2E_EVENTS", 30_000);
    let rate = 2_000u32;
    settle().await;
    let env = Env::new().await;
    let d = env.daemon().await;
    let (sub, got) = latency_subscriber(&env.prefix, &env.account).await;
    // Warm up (connections, allocator), unrecorded.
    env.sim.run(2_000, Some(rate)).await;
    env.wait_complete(&d, WAIT).await;
    got.lock().unwrap().clear();
    let load_before = load1();
    env.sim.record_send_times(true);
    let t0 = Instant::now();
    let produced = env.sim.run(n, Some(rate)).await;
    let elapsed = t0.elapsed();
    env.wait_complete(&d, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = env.sim.take_send_times();
    env.sim.record_send_times(false);
    let received = std::mem::take(&mut *got.lock().unwrap());
    let _ = sub.send(());
    d.stop();
    env.cleanup().await;

    let lat = latencies(&sent, received);
    header(&format!(
        "latency ({rate} events/s, spot): sim send -> Redis subscriber receipt"
    ));
    row(
        "load1 before / after",
        format!("{load_before:.2} / {:.2}", load1()),
    );
    row("events sent", produced);
    row(
        "achieved rate events/s",
        format!("{:.0}", produced as f64 / elapsed.as_secs_f64()),
    );
    row("events that caused a message (measured)", lat.len());
    row(
        "events that changed nothing (no message)",
        sent.len() - lat.len(),
    );
    if !lat.is_empty() {
        row("p50", us(pct(&lat, 0.50)));
        row("p90", us(pct(&lat, 0.90)));
        row("p99", us(pct(&lat, 0.99)));
        row("p99.9", us(pct(&lat, 0.999)));
        row("max", us(*lat.last().unwrap()));
    }
}

async fn memory() {
    settle().await;
    // Idle after start: an empty-ish account (the sim's initial balances only).
    let env = Env::new().await;
    let d = env.daemon().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_mib(d.pid());
    let idle_load = load1();
    d.stop();
    env.cleanup().await;

    // 1,000 assets + 10,000 open orders loaded by the first snapshot.
    let env = Env::new().await;
    env.sim.seed_assets(1_000);
    env.sim.seed_open_orders(10_000);
    let d = env.daemon().await;
    let view = d.view().await;
    let (assets, orders) = (
        view["balances"].as_object().map_or(0, |m| m.len()),
        view["open_orders"].as_object().map_or(0, |m| m.len()),
    );
    env.wait_complete(&d, WAIT).await;
    let peak = peak_rss_mib(d.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_mib(d.pid());
    let loaded_load = load1();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = rss_mib(d.pid());

    header("memory (daemon VmRSS, its own process)");
    row(
        "idle after start, MiB",
        format!("{idle:.1}  (load1 {idle_load:.2})"),
    );
    row(
        &format!("loading {assets} assets + {orders} open orders: peak (VmHWM), MiB"),
        format!("{peak:.1}"),
    );
    row(
        "loaded, 2 s after the sinks caught up, MiB",
        format!("{loaded:.1}  (load1 {loaded_load:.2})"),
    );
    row("settled, 12 s after, MiB", format!("{settled:.1}"));
    // E2E_MEMORY_EVENTS (default 1,000,000) at full speed in bursts of 100k, caught up before
    // each sample.
    let t0 = Instant::now();
    let mut total = 0usize;
    for _ in 0..env_usize("E2E_MEMORY_EVENTS", 1_000_000).div_ceil(100_000) {
        total += env.sim.run(100_000, None).await;
        env.wait_complete(&d, Duration::from_secs(600)).await;
        let open = d.metric("acctstate_open_orders").await;
        row(
            &format!("after {total:>9} events ({open:.0} open orders), MiB"),
            format!("{:.1}  (load1 {:.2})", rss_mib(d.pid()), load1()),
        );
    }
    row(
        "1M phase: events/s incl. catch-up pauses",
        format!("{:.0}", total as f64 / t0.elapsed().as_secs_f64()),
    );
    d.stop();
    env.cleanup().await;
}

async fn outage() {
    let cut_secs = env_usize("E2E_OUTAGE_SECS", 60) as u64;
    let rate = 1_000u32;
    settle().await;
    let env = Env::new().await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let mut proxied = url::Url::parse(&env.db_url).unwrap();
    proxied.set_port(Some(proxy.addr().port())).unwrap();
    let d = Daemon::start(&env.vars(proxied.as_str())).await;
    env.sim.wait_for_subscriber(WAIT).await.unwrap();
    let trader = {
        let sim = env.sim.clone();
        tokio::spawn(async move { sim.run(usize::MAX, Some(rate)).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    header(&format!(
        "outage (Postgres cut for {cut_secs} s at {rate} events/s)"
    ));
    row("load1 at start", format!("{:.2}", load1()));
    row("RSS before cut, MiB", format!("{:.1}", rss_mib(d.pid())));
    proxy.cut();
    let cut_at = Instant::now();
    let mut peak_rss = 0f64;
    let mut peak_depth = 0f64;
    while cut_at.elapsed() < Duration::from_secs(cut_secs) {
        tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(cut_secs))).await;
        let rss = rss_mib(d.pid());
        let depth = d.metric("acctstate_pg_queue_depth").await;
        peak_rss = peak_rss.max(rss);
        peak_depth = peak_depth.max(depth);
        row(
            &format!(
                "cut +{:>3.0} s: RSS MiB / pg queue depth",
                cut_at.elapsed().as_secs_f64()
            ),
            format!("{rss:.1} / {depth:.0}"),
        );
    }
    let backlog_seq = d.view().await["seq"].as_i64().unwrap();
    proxy.restore();
    let restored = Instant::now();
    let mut backlog_written = None;
    loop {
        let pg = env.pg_max_seq().await;
        if backlog_written.is_none() && pg >= backlog_seq {
            backlog_written = Some(restored.elapsed());
        }
        // The live seq read after `pg`'s: the journal has reached a seq the cache held just now.
        let live = d.view().await["seq"].as_i64().unwrap();
        if env.pg_max_seq().await >= live {
            break;
        }
        assert!(restored.elapsed() < Duration::from_secs(300), "no catch-up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let caught_up = restored.elapsed();
    trader.abort();
    let seq = env.wait_complete(&d, WAIT).await;
    let rows = env.journal_rows().await;
    row("peak RSS during cut, MiB", format!("{peak_rss:.1}"));
    row("peak pg queue depth", format!("{peak_depth:.0}"));
    row(
        "restore -> backlog (seq at restore) journaled, s",
        format!("{:.2}", backlog_written.unwrap_or(caught_up).as_secs_f64()),
    );
    row(
        "restore -> journal reaches the live cache seq, s",
        format!("{:.2}", caught_up.as_secs_f64()),
    );
    row("journal rows / final seq", format!("{rows} / {seq}"));
    row(
        "RSS after catch-up, MiB",
        format!("{:.1}", rss_mib(d.pid())),
    );
    row("load1 at end", format!("{:.2}", load1()));
    d.stop();
    env.cleanup().await;
}
