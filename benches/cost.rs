//! The cost curve: what one event costs at the rates accounts really run at, not only at
//! saturation. The release daemon runs as its own process against the sim (one Spot account),
//! local Postgres and Redis; for each rate of `COST_RATES` (default 20,200,2000,0 events/s; 0 =
//! saturation) and each `runtime.worker_threads` of `COST_THREADS` (default 1; `2,1` compares) it
//! trades for `COST_SECS` (default 10) seconds and reports, from `/proc/<pid>/stat`:
//! daemon CPU per event, the CPU of this run's Postgres backends per journal row, the Redis
//! server's CPU per event, and send→Redis latency p50 / p99 / p99.9 (the `Sim::record_send_times`
//! hook and a subscriber on its own thread, as in `e2e latency`).
//!
//! `cargo bench --bench cost`

#[path = "../tests/it/common.rs"]
mod common;
// Shared with the other load tools, which use the rest.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use support::*;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(curve());
}

async fn curve() {
    let rates: Vec<u32> = std::env::var("COST_RATES")
        .unwrap_or_else(|_| "20,200,2000,0".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let threads: Vec<usize> = std::env::var("COST_THREADS")
        .unwrap_or_else(|_| "1".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs = env_usize("COST_SECS", 10) as u64;
    settle().await;
    for t in threads {
        one_daemon(t, &rates, secs).await;
    }
    row("load1 at the end", format!("{:.2}", load1()));
}

/// The curve of one daemon with `runtime.worker_threads = threads`; rate 0 = saturation (the sim
/// sends `COST_SATURATION_EVENTS`, default 100,000, as fast as it can).
async fn one_daemon(threads: usize, rates: &[u32], secs: u64) {
    let env = Env::new().await;
    let db = env.db_url.rsplit('/').next().unwrap_or_default().to_owned();
    let d = env
        .daemon_with(&[("ACCTSTATE__RUNTIME__WORKER_THREADS", threads.to_string())])
        .await;
    let (sub, got) = latency_subscriber(&env.prefix, &env.account).await;
    // Warm up (connections, allocator), unmeasured.
    env.sim.run(1_000, Some(1_000)).await;
    env.wait_complete(&d, WAIT).await;
    header(&format!(
        "cost curve, one spot account, runtime.worker_threads = {threads}, {secs} s per rate"
    ));
    let redis_pid = redis_server_pid();
    for &rate in rates {
        got.lock().unwrap().clear();
        let pid = d.pid().to_string();
        let (cpu0, pg0, rd0) = (
            cpu_user_kernel_secs(&pid),
            pg_backends_cpu(&db),
            redis_pid.as_deref().map_or(f64::NAN, cpu_secs),
        );
        let rows0 = env.journal_rows().await;
        let sent0 = env.sim.events_sent();
        env.sim.record_send_times(true);
        let t0 = Instant::now();
        let (count, label) = if rate == 0 {
            (
                env_usize("COST_SATURATION_EVENTS", 100_000),
                "saturation".to_owned(),
            )
        } else {
            (rate as usize * secs as usize, format!("{rate} ev/s"))
        };
        env.sim.run(count, (rate > 0).then_some(rate)).await;
        let elapsed = t0.elapsed();
        env.wait_complete(&d, WAIT).await;
        let all_done = t0.elapsed();
        if rate > 0 {
            // The same wall time for every rate: idle costs (timers, probes) count in full.
            let rest = Duration::from_secs(secs).saturating_sub(t0.elapsed());
            tokio::time::sleep(rest).await;
        }
        let (user, kernel) = cpu_user_kernel_secs(&pid);
        let (user, kernel) = (user - cpu0.0, kernel - cpu0.1);
        let pg = pg_backends_cpu(&db) - pg0;
        let rd = redis_pid.as_deref().map_or(f64::NAN, cpu_secs) - rd0;
        let events = (env.sim.events_sent() - sent0).max(1) as f64;
        let rows = (env.journal_rows().await - rows0).max(1) as f64;
        let lat = matched_latencies(&env.sim, &got);
        row(
            &format!(
                "{label}: events in {:.1} s / journal rows",
                elapsed.as_secs_f64()
            ),
            format!("{events:.0} / {rows:.0}"),
        );
        if rate == 0 {
            row(
                &format!("{label}: events/s into journal and Redis"),
                format!("{:.0}", events / all_done.as_secs_f64()),
            );
        }
        cpu_per_event_row(
            &format!("{label}: daemon CPU per event (user + kernel), µs"),
            user,
            kernel,
            events,
        );
        row(
            &format!("{label}: Postgres backends CPU per row, µs"),
            format!("{:.1}", pg * 1e6 / rows),
        );
        row(
            &format!("{label}: redis-server CPU per event, µs"),
            format!("{:.1}", rd * 1e6 / events),
        );
        if !lat.is_empty() {
            row(
                &format!("{label}: send→Redis p50 / p99 / p99.9"),
                format!(
                    "{} / {} / {}",
                    us(pct(&lat, 0.5)),
                    us(pct(&lat, 0.99)),
                    us(pct(&lat, 0.999))
                ),
            );
        }
    }
    let _ = sub.send(());
    d.stop();
    env.cleanup().await;
}
