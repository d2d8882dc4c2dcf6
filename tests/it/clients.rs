//! The change stream `P:changes` and the Rust client (`clients/rust`, `acctstate-client`)
//! against the real daemon, Redis and the simulated exchange: the stream entries are the
//! published messages; a mirror that joins mid-burst, one cut off for a second during thousands
//! of events (resumes from the stream, no re-read of the keys), one cut off past the stream's
//! length (falls back to the keys) and one through a Redis restart (resync) all end exactly
//! equal to the cache, with no seq applied twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use acctstate::sim::SimMarket;
use acctstate_client::{Mirror, Stats};
use fred::prelude::*;
use tokio::task::JoinHandle;

use crate::bounce::*;
use crate::common::*;

/// A mirror following in the background, every seq it applied recorded.
struct Follower {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Mirror, Vec<i64>)>,
}

impl Follower {
    async fn start(redis_url: &str, b: &Bounce) -> Follower {
        let mut mirror = Mirror::connect(redis_url, &b.prefix, &b.account)
            .await
            .expect("the mirror connects");
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match mirror.poll(Duration::from_millis(100)).await {
                        Ok(changes) => seqs.extend(changes.iter().map(|c| c.seq)),
                        // Cut off: the next poll resumes where this one stopped.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                (mirror, seqs)
            })
        };
        Follower { stop, task }
    }

    /// Stops following once the mirror reached the cache's seq (trading has stopped and the
    /// daemon converged); checks it equals the keys and applied no seq twice.
    async fn finish(self, b: &Bounce, d: &DaemonProcess) -> Stats {
        assert_converged(&b.sim, &b.observed(d, &[])).await;
        let view = account_json(&b.client, d.http.expect("address"))
            .await
            .expect("/v1/account")
            .view();
        let keys = RedisState::read(&b.redis, &b.prefix, &b.account).await;
        assert_eq!(keys.seq, Some(view.seq), "the keys are at the cache's seq");
        // The follower task owns the mirror: wait for its seq through a fresh reader of the
        // stream's tail instead of sharing it.
        eventually(WAIT, "the mirror reached the cache's seq", || async {
            let tail: Vec<(String, HashMap<String, String>)> = b
                .redis
                .xrevrange(
                    format!("{}:{}:changes", b.prefix, b.account),
                    "+",
                    "-",
                    Some(1),
                )
                .await
                .unwrap_or_default();
            tail.first()
                .and_then(|(id, _)| id.split('-').next()?.parse::<i64>().ok())
                .is_some_and(|s| s >= view.seq)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.stop.store(true, Ordering::SeqCst);
        let (mirror, seqs) = self.task.await.expect("follower");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a seq applied twice or backwards"
        );
        assert_eq!(mirror.seq(), Some(view.seq), "{:?}", mirror.stats);
        let as_json = |m: &Mirror| {
            (
                m.balances.len(),
                m.positions.len(),
                m.open_orders.keys().cloned().collect::<Vec<_>>(),
            )
        };
        let mut fresh = Mirror::connect(&b.redis_url, &b.prefix, &b.account)
            .await
            .expect("connect");
        assert!(fresh.load().await.expect("load"));
        assert_eq!(as_json(&mirror), as_json(&fresh));
        assert_eq!(mirror.balances, fresh.balances, "balances differ");
        assert_eq!(mirror.positions, fresh.positions, "positions differ");
        assert_eq!(mirror.open_orders, fresh.open_orders, "open orders differ");
        assert_eq!(
            mirror.open_orders.len(),
            view.open_orders.len(),
            "the mirror holds the cache's open orders"
        );
        mirror.stats
    }
}

/// Every stream entry is `{seq}-0` holding exactly the message published on the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_entries_are_the_published_messages() {
    let mut b = Bounce::new(SimMarket::Usdm, None, None).await;
    let sub = Subscriber::start(&b.prefix, &b.account).await;
    let d = b.start().await;
    b.sim.run(1_000, Some(RATE)).await;
    assert_converged(&b.sim, &b.observed(&d, &[])).await;
    let entries: Vec<(String, HashMap<String, String>)> = b
        .redis
        .xrange(
            format!("{}:{}:changes", b.prefix, b.account),
            "-",
            "+",
            None,
        )
        .await
        .expect("XRANGE");
    let published: HashMap<i64, serde_json::Value> = sub
        .messages()
        .into_iter()
        .filter_map(|(_, m)| Some((m["seq"].as_i64()?, m)))
        .collect();
    let mut compared = 0;
    for (id, fields) in &entries {
        let m: serde_json::Value = serde_json::from_str(&fields["m"]).expect("m is JSON");
        let seq = m["seq"].as_i64().expect("seq");
        if m["kind"] == "status" && m["data"]["event"] == "resync" {
            assert!(id.starts_with(&format!("{seq}-")), "{id} {m}");
            continue;
        }
        assert_eq!(id, &format!("{seq}-0"));
        if let Some(p) = published.get(&seq) {
            assert_eq!(p, &m, "stream entry {id} differs from its message");
            compared += 1;
        }
    }
    assert!(compared >= 500, "only {compared} entries compared");
    sub.stop().await;
    b.sim.run(MIN_EVENTS as usize, Some(RATE)).await;
    b.finish(d, 100, &[]).await;
}

/// Joining mid-burst, then cut off for a second while ≥ 3,000 events flow: the mirror resumes
/// from the stream without reading the keys again and ends exactly at the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_cut_off_for_a_second_resumes_from_the_stream() {
    let mut b = Bounce::new(SimMarket::Spot, None, None).await;
    let d = b.start().await;
    let trader = b.trade(usize::MAX);
    b.delivered(1_000).await;
    let proxy = TcpProxy::start(b.redis_url.trim_start_matches("redis://")).await;
    let follower = Follower::start(&format!("redis://{}", proxy.addr()), &b).await;
    b.delivered(b.sim.events_sent() + 1_000).await;
    proxy.cut();
    let at_cut = b.sim.events_sent();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    b.delivered(at_cut + 5_000).await;
    trader.abort();
    let stats = follower.finish(&b, &d).await;
    assert_eq!(
        stats.loads, 1,
        "resumed without re-reading the keys: {stats:?}"
    );
    assert_eq!(stats.fallbacks, 0, "{stats:?}");
    // The bounce checks (journal, fills, volume) on top.
    b.sim.run(MIN_EVENTS as usize, Some(RATE)).await;
    b.finish(d, 100, &[]).await;
}

/// Cut off while more changes pass than the stream keeps: the mirror falls back to the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_cut_off_past_the_stream_falls_back_to_the_keys() {
    let mut b = Bounce::new(SimMarket::Usdm, None, None).await;
    b.extra
        .push(("ACCTSTATE__REDIS__STREAM_MAXLEN", "50".into()));
    let d = b.start().await;
    let proxy = TcpProxy::start(b.redis_url.trim_start_matches("redis://")).await;
    let follower = Follower::start(&format!("redis://{}", proxy.addr()), &b).await;
    let trader = b.trade(usize::MAX);
    b.delivered(1_000).await;
    proxy.cut();
    let at_cut = b.sim.events_sent();
    b.delivered(at_cut + 2_000).await;
    proxy.restore();
    b.delivered(at_cut + 5_000).await;
    trader.abort();
    let stats = follower.finish(&b, &d).await;
    assert!(stats.fallbacks >= 1, "{stats:?}");
    // The bounce checks (journal, fills, volume) on top.
    b.sim.run(MIN_EVENTS as usize, Some(RATE)).await;
    b.finish(d, 100, &[]).await;
}

/// Redis restarted empty mid-burst: the daemon rewrites the keys and marks the stream with
/// `resync`; the mirror re-reads and ends exactly at the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_follows_through_a_redis_restart() {
    let mut redis = PrivateRedis::start().await;
    let mut b = Bounce::new(SimMarket::Spot, None, Some(redis.url())).await;
    let d = b.start().await;
    let follower = Follower::start(&redis.url(), &b).await;
    let trader = b.trade(usize::MAX);
    b.delivered(2_000).await;
    redis.kill();
    let at_kill = b.sim.events_sent();
    b.delivered(at_kill + 2_000).await;
    redis.start_again().await;
    b.redis = redis_client_at(&redis.url()).await;
    b.delivered(at_kill + 5_000).await;
    trader.abort();
    let stats = follower.finish(&b, &d).await;
    assert!(stats.resyncs + stats.fallbacks >= 1, "{stats:?}");
    // The bounce checks (journal, fills, volume) on top.
    b.sim.run(MIN_EVENTS as usize, Some(RATE)).await;
    b.finish(d, 100, &[]).await;
}
