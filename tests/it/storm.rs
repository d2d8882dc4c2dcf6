//! Truth under faults the bounce suite does not combine: trades and order changes that reach
//! REST without ever being announced on a connected stream, half-open sockets, and a seeded
//! schedule of overlapping faults (the combined-fault suite).

use std::time::{Duration, Instant};

use acctstate::sim::SimMarket;

use crate::bounce::*;
use crate::common::*;

/// Some trading actions are never announced while the daemon is connected, followed by ones
/// that are (so an unannounced trade has a lower id than a later announced one); a gap comes in
/// between. Every trade still ends in `fills` and every order with its final status: recovery
/// asks by time window, not from the highest trade id seen.
async fn unannounced_actions_are_recovered(market: SimMarket) {
    let mut b = Bounce::new(market, None, None).await;
    b.extra
        .push(("ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS", "2".into()));
    let d = b.start().await;
    b.sim.set_unannounced(150);
    let trader = b.trade(usize::MAX);
    b.delivered(4_000).await;
    b.sim.drop_connections();
    b.delivered(MIN_EVENTS).await;
    trader.abort();
    b.sim.set_unannounced(0);
    let unannounced = b.sim.unannounced();
    assert!(unannounced >= 100, "only {unannounced} unannounced actions");
    eprintln!("{unannounced} trading actions were never announced");
    b.finish(d, 300, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_unannounced_actions_are_recovered() {
    unannounced_actions_are_recovered(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_unannounced_actions_are_recovered() {
    unannounced_actions_are_recovered(SimMarket::Usdm).await;
}

/// A half-open socket (the server stops sending, answering pings and closing) is found within
/// 45 s with the default settings, and the daemon reconnects and resyncs.
async fn half_open_socket_found_in_seconds(market: SimMarket) {
    let mut b = Bounce::new(market, None, None).await;
    let d = b.start().await;
    b.sim.run(2_000, Some(RATE)).await;
    let before = b.reconnects(&d).await;
    b.sim.stall_connections();
    // Trading goes on: REST sees it, the stalled socket does not.
    let trader = b.trade(usize::MAX);
    eventually(
        Duration::from_secs(45),
        "the half-open socket is found",
        || async {
            d.logs().iter().any(|l| {
                l["event"] == "stream_disconnected"
                    && l["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("no answer to a ping"))
            })
        },
    )
    .await;
    b.reconnected(&d, before).await;
    b.delivered(MIN_EVENTS).await;
    trader.abort();
    b.finish(d, 100, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_half_open_socket_found_in_seconds() {
    half_open_socket_found_in_seconds(SimMarket::Spot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_half_open_socket_found_in_seconds() {
    half_open_socket_found_in_seconds(SimMarket::Usdm).await;
}

// ------------------------------------------------------------------- the combined-fault suite

/// How long the faults go on, while the sim trades.
const STORM: Duration = Duration::from_secs(60);
/// Trading pace during the storm (events/s).
const STORM_RATE: u32 = 600;

/// The seed of a storm: `ACCTSTATE_STORM_SEED` replays one.
fn storm_seed(default: u64) -> u64 {
    std::env::var("ACCTSTATE_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// One daemon run: its first seq, and how it ended (`Some(last seq)` when it drained cleanly).
struct Run {
    first_seq: i64,
    drained: Option<i64>,
}

/// Starts a daemon without waiting for readiness (Postgres or Redis may be down).
async fn spawn(b: &Bounce) -> DaemonProcess {
    b.spawn_with_redis(&b.redis_url).await
}

/// The run's first seq, once it logged it (a daemon killed before that made no change).
fn first_seq(d: &DaemonProcess) -> Option<i64> {
    d.log_line("cache started")?["first_seq"].as_i64()
}

/// Follows the contract's late-subscriber protocol over everything `sub` received since it
/// joined at `joined`: apply messages above the held seq, re-read the keys on `resync`.
async fn late_subscriber_state(b: &Bounce, joined: RedisState, sub: &Subscriber) -> RedisState {
    let mut state = joined;
    for (_, m) in sub.messages() {
        let seq = m["seq"].as_i64().unwrap_or(i64::MIN);
        if state.seq.is_some_and(|s| seq <= s) {
            continue;
        }
        if m["kind"] == "status" && m["data"]["event"] == "resync" {
            state = RedisState::read(&b.redis, &b.prefix, &b.account).await;
            continue;
        }
        state.apply_message(&m);
    }
    state
}

/// A seeded schedule of overlapping faults over `STORM` of trading — WebSocket aborts and
/// refused reconnects, terminated subscriptions / expired listenKeys, half-open sockets, Postgres
/// stopped, Redis stopped and restarted empty, `kill -9`, SIGTERM and restarts, silent changes —
/// while 10 % of the trading actions are never announced. At the end: converged everywhere
/// (cache, tables, Redis hashes), every trade in `fills` once, every order with its final
/// status, no seq reused, and a subscriber that joined late by the contract's protocol equal to
/// the cache.
async fn storm(market: SimMarket, default_seed: u64) {
    let seed = storm_seed(default_seed);
    eprintln!("storm {market:?} seed {seed} (replay with ACCTSTATE_STORM_SEED={seed})");
    let mut rng = Rng::new(seed);
    let pg = PrivatePg::start().await;
    let mut redis = PrivateRedis::start().await;
    let mut b = Bounce::new(market, Some(pg.url()), Some(redis.url())).await;
    b.extra.extend([
        (
            "ACCTSTATE__BINANCE__RECONCILE_INTERVAL_SECS",
            "3".to_owned(),
        ),
        ("ACCTSTATE__SHUTDOWN__DRAIN_TIMEOUT_SECS", "3".to_owned()),
    ]);
    b.sim.set_unannounced(100);
    let mut d = Some(spawn(&b).await);
    let sim = b.sim.clone();
    let trader = tokio::spawn(async move { sim.run(usize::MAX, Some(STORM_RATE)).await });
    let mut runs: Vec<Run> = Vec::new();
    let (mut pg_back, mut redis_back, mut refused_until) = (None, None, None);
    let mut log: Vec<String> = Vec::new();
    let end = Instant::now() + STORM;
    while Instant::now() < end {
        tokio::time::sleep(millis(800 + rng.below(2_200))).await;
        let now = Instant::now();
        if pg_back.is_some_and(|t| now >= t) {
            pg.start_again().await;
            pg_back = None;
            log.push("postgres back".into());
        }
        if redis_back.is_some_and(|t| now >= t) {
            redis.start_again().await;
            redis_back = None;
            log.push("redis back (empty)".into());
        }
        if refused_until.is_some_and(|t| now >= t) {
            b.sim.set_refuse_connections(false);
            refused_until = None;
        }
        let Some(daemon) = d.take() else {
            d = Some(spawn(&b).await);
            log.push("daemon restarted".into());
            continue;
        };
        let fault = rng.below(11);
        log.push(format!("fault {fault}"));
        match fault {
            0 | 1 => b.sim.drop_connections(),
            2 => {
                b.sim.set_refuse_connections(true);
                b.sim.drop_connections();
                refused_until = Some(now + millis(1_000 + rng.below(3_000)));
            }
            3 => match market {
                SimMarket::Spot => b.sim.terminate_subscription(),
                SimMarket::Usdm => b.sim.expire_listen_key(),
            },
            4 if pg_back.is_none() => {
                pg.stop().await;
                pg_back = Some(now + millis(2_000 + rng.below(6_000)));
            }
            5 if redis_back.is_none() => {
                redis.kill();
                redis_back = Some(now + millis(1_000 + rng.below(4_000)));
            }
            6 => {
                let mut daemon = daemon;
                let first = first_seq(&daemon);
                daemon.signal("KILL");
                let _ = daemon.wait_with_deadline(EXIT).await;
                runs.extend(first.map(|first_seq| Run {
                    first_seq,
                    drained: None,
                }));
                continue;
            }
            7 => {
                let mut daemon = daemon;
                let first = first_seq(&daemon);
                daemon.sigterm();
                let exit = daemon.wait_with_deadline(EXIT).await;
                let last = daemon
                    .log_line("cache actor stopped")
                    .and_then(|l| l["seq"].as_i64());
                runs.extend(first.map(|first_seq| Run {
                    first_seq,
                    drained: last.filter(|_| exit.success()),
                }));
                continue;
            }
            8 => b.sim.silent_change(),
            9 => b.sim.stall_connections(),
            _ => {}
        }
        d = Some(daemon);
    }
    eprintln!("storm schedule: {}", log.join(", "));

    // Everything comes back; the daemon runs; a subscriber joins late while trading goes on.
    if pg_back.is_some() {
        pg.start_again().await;
    }
    if redis_back.is_some() {
        redis.start_again().await;
    }
    b.sim.set_refuse_connections(false);
    let d = match d {
        Some(d) => d,
        None => spawn(&b).await,
    };
    b.redis = redis_client_at(&redis.url()).await;
    b.wait_ready(&d, Duration::from_secs(60)).await;
    let sub = Subscriber::start_at(&redis.url(), &b.prefix, &b.account).await;
    let joined = RedisState::read(&b.redis, &b.prefix, &b.account).await;
    let traded = b.sim.state().fills.len();
    b.traded(50).await;
    trader.abort();
    b.sim.set_unannounced(0);
    eprintln!(
        "storm: {} runs, {} trades ({} after the storm), {} actions unannounced, {} events delivered",
        runs.len() + 1,
        b.sim.state().fills.len(),
        b.sim.state().fills.len() - traded,
        b.sim.unannounced(),
        b.sim.events_sent()
    );
    assert_converged(&b.sim, &b.observed(&d, &[])).await;
    let view = account_json(&b.client, d.http.expect("address"))
        .await
        .expect("/v1/account")
        .view();
    let followed = late_subscriber_state(&b, joined, &sub).await;
    assert_eq!(
        followed,
        RedisState::of_view(&view),
        "the late subscriber differs from the cache"
    );
    sub.stop().await;

    // The journal checks take each run's range: a drained run's from its log, a killed run's
    // from what Postgres holds below the next run's first seq.
    runs.sort_by_key(|r| r.first_seq);
    let final_first = first_seq(&d).expect("the last run logged its first seq");
    for (i, r) in runs.iter().enumerate() {
        let last = match r.drained {
            Some(last) => last,
            None => {
                let below = runs.get(i + 1).map_or(final_first, |n| n.first_seq);
                let max: Option<i64> = sqlx::query_scalar(
                    "SELECT max(seq) FROM account_changes
                     WHERE account_id = $1 AND seq >= $2 AND seq < $3",
                )
                .bind(&b.account)
                .bind(r.first_seq)
                .bind(below)
                .fetch_one(&b.pool)
                .await
                .expect("max seq of a run");
                max.unwrap_or(r.first_seq - 1)
            }
        };
        b.runs.push(RunEnd {
            first_seq: r.first_seq,
            last_seq: last,
            graceful: r.drained.is_some(),
        });
    }
    b.finish(d, 300, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_storm_seed_1() {
    storm(SimMarket::Spot, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_storm_seed_2() {
    storm(SimMarket::Usdm, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_storm_seed_3() {
    storm(SimMarket::Spot, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdm_storm_seed_4() {
    storm(SimMarket::Usdm, 4).await;
}
