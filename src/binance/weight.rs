//! The REST budget of one market: Binance's REQUEST_WEIGHT limit is per IP, so every account of
//! the process (snapshots, backfills, reconciliations, listenKeys, Spot subscriptions) spends
//! from one `Budget` per market (Spot and USD-M are counted separately by Binance).
//!
//! Binance counts weight in fixed minutes of its clock and reports the count so far in
//! `X-MBX-USED-WEIGHT-1M` on every answer. A call first *spends* its documented weight here
//! (waiting, in arrival order, for the next minute when the planned cap would be passed), and
//! every answer *observes* the server's count, which wins when it is higher (other programs on
//! the same IP, or a short estimate). A 429/418 with `Retry-After` stops every account's calls
//! until it has passed. Snapshots also take one of `snapshot_concurrency` slots, so 500 resyncs
//! after a dropped connection queue and complete one after another instead of all crawling;
//! and the periodic reconciliation interval stretches when the accounts' snapshots would not
//! fit the cap over it (`reconcile_interval`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::account::{Market, Millis};

/// The part of the cap the periodic reconciliation may plan with; the rest stays free for
/// resyncs after gaps, listenKeys and backfills.
const RECONCILE_SHARE: f64 = 0.5;

#[derive(Debug)]
struct Window {
    /// Binance minute (server ms / 60 000) the count belongs to.
    minute: i64,
    used: u32,
    banned_until: Option<Instant>,
}

/// One market's weight budget, shared by every account of that market.
#[derive(Debug)]
pub struct Budget {
    market: Market,
    /// Binance's limit per minute (`rateLimits`, or the default).
    limit: AtomicU32,
    /// Percent of `limit` this process plans with.
    share_pct: u32,
    window: Mutex<Window>,
    /// Callers wait for weight in arrival order.
    queue: tokio::sync::Mutex<()>,
    snapshots: Semaphore,
    /// Accounts that reconcile on this budget.
    accounts: AtomicUsize,
    /// Weight of one snapshot, as last measured (moving average).
    snapshot_weight: AtomicU32,
    stretched: AtomicBool,
}

impl Budget {
    pub fn new(market: Market, limit: u32, share_pct: u32, snapshot_concurrency: usize) -> Budget {
        let limit = if limit == 0 {
            default_limit(market)
        } else {
            limit
        };
        metrics::gauge!("acctstate_rest_weight_limit", "market" => market.as_str())
            .set(f64::from(limit));
        Budget {
            market,
            limit: AtomicU32::new(limit),
            share_pct: share_pct.clamp(1, 100),
            window: Mutex::new(Window {
                minute: 0,
                used: 0,
                banned_until: None,
            }),
            queue: tokio::sync::Mutex::new(()),
            snapshots: Semaphore::new(snapshot_concurrency.max(1)),
            accounts: AtomicUsize::new(0),
            snapshot_weight: AtomicU32::new(match market {
                Market::Spot => 140,
                Market::Usdm => 95,
            }),
            stretched: AtomicBool::new(false),
        }
    }

    pub fn market(&self) -> Market {
        self.market
    }

    /// Binance's limit per minute.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Adopts the limit Binance publishes (`rateLimits` REQUEST_WEIGHT per minute) when it is
    /// lower than the configured one.
    pub fn adopt_published(&self, published: u32) {
        if published > 0 && published < self.limit() {
            tracing::info!(
                event = "rest_weight_limit",
                market = self.market.as_str(),
                limit = published,
                "REST weight limit taken from exchangeInfo rateLimits"
            );
            self.limit.store(published, Ordering::Relaxed);
            metrics::gauge!("acctstate_rest_weight_limit", "market" => self.market.as_str())
                .set(f64::from(published));
        }
    }

    /// What the process plans to use per minute.
    pub fn cap(&self) -> u32 {
        (u64::from(self.limit()) * u64::from(self.share_pct) / 100).max(1) as u32
    }

    /// Waits until `weight` fits the current minute's cap, then counts it. `now` is Binance's
    /// clock as the caller estimates it.
    pub async fn spend(&self, weight: u32, now: impl Fn() -> Millis) {
        let _turn = self.queue.lock().await;
        loop {
            let wait = {
                let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
                let now_ms = now();
                match w.banned_until {
                    Some(until) if until > Instant::now() => Some(until - Instant::now()),
                    _ => {
                        w.banned_until = None;
                        let minute = now_ms.div_euclid(60_000);
                        if minute != w.minute {
                            w.minute = minute;
                            w.used = 0;
                        }
                        let cap = self.cap();
                        // A call heavier than the whole cap goes alone at a minute's start.
                        if w.used + weight <= cap || (w.used == 0 && weight > cap) {
                            w.used += weight;
                            metrics::gauge!("acctstate_rest_weight_used", "market" => self.market.as_str()).set(f64::from(w.used));
                            None
                        } else {
                            let into = now_ms.rem_euclid(60_000);
                            Some(Duration::from_millis((60_000 - into) as u64 + 50))
                        }
                    }
                }
            };
            match wait {
                None => return,
                Some(d) => {
                    metrics::counter!("acctstate_rest_budget_waits_total", "market" => self.market.as_str()).increment(1);
                    // Only the head of the queue waits here (the rest wait for its turn), so
                    // this is one line per wait, and it is the one sign of why a resync is late.
                    tracing::info!(
                        event = "rest_budget_wait",
                        market = self.market.as_str(),
                        wait_ms = d.as_millis() as u64,
                        "REST budget: the minute's share is spent; waiting for the next minute"
                    );
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// The server's count for the minute of `now` (`X-MBX-USED-WEIGHT-1M`).
    pub fn observe(&self, used: u32, now: Millis) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.div_euclid(60_000) == w.minute && used > w.used {
            w.used = used;
            metrics::gauge!("acctstate_rest_weight_used", "market" => self.market.as_str())
                .set(f64::from(used));
        }
    }

    /// A 429/418: nobody calls before `retry_after` has passed.
    pub fn ban(&self, status: u16, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.banned_until.is_none_or(|t| t < until) {
            w.banned_until = Some(until);
        }
        drop(w);
        metrics::counter!("acctstate_rest_rate_limited_total", "market" => self.market.as_str(), "status" => status.to_string()).increment(1);
        tracing::warn!(
            event = "rest_rate_limited",
            market = self.market.as_str(),
            status,
            retry_after_secs = retry_after.as_secs(),
            "Binance rate limit: every account's REST calls wait"
        );
    }

    /// A slot for one snapshot (resync or reconciliation).
    pub async fn snapshot_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.snapshots.acquire().await.ok()
    }

    /// The weight one snapshot took (moving average over snapshots).
    pub fn record_snapshot_weight(&self, weight: u32) {
        let old = self.snapshot_weight.load(Ordering::Relaxed);
        self.snapshot_weight
            .store((old * 7 + weight).div_ceil(8), Ordering::Relaxed);
    }

    /// An account joins or leaves the periodic reconciliation.
    pub fn join(&self) {
        self.accounts.fetch_add(1, Ordering::Relaxed);
    }
    pub fn leave(&self) {
        self.accounts.fetch_sub(1, Ordering::Relaxed);
    }

    /// The reconciliation interval every account uses: `configured`, stretched so that all
    /// accounts' snapshots fit `RECONCILE_SHARE` of the cap (logged once when it stretches).
    pub fn reconcile_interval(&self, configured: Duration) -> Duration {
        let per_round = self.accounts.load(Ordering::Relaxed) as f64
            * f64::from(self.snapshot_weight.load(Ordering::Relaxed));
        let per_minute = f64::from(self.cap()) * RECONCILE_SHARE;
        let needed = Duration::from_secs_f64(per_round / per_minute * 60.0);
        let effective = configured.max(needed);
        metrics::gauge!("acctstate_reconcile_interval_seconds", "market" => self.market.as_str())
            .set(effective.as_secs_f64());
        if effective > configured && !self.stretched.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                event = "reconcile_interval_stretched",
                market = self.market.as_str(),
                configured_secs = configured.as_secs(),
                effective_secs = effective.as_secs(),
                accounts = self.accounts.load(Ordering::Relaxed),
                "the REST budget cannot reconcile every account as often as configured: the interval is stretched"
            );
        }
        effective
    }
}

/// Binance's published REQUEST_WEIGHT per minute (SPEC §3).
pub fn default_limit(market: Market) -> u32 {
    match market {
        Market::Spot => 6_000,
        Market::Usdm => 2_400,
    }
}

/// The documented weight of a call we make (SPEC §3; unknown paths: 1). `params` names the
/// query's keys (weights depend on whether `symbol` is given).
pub fn weight_of(method: &Method, path: &str, has_symbol: bool) -> u32 {
    match path {
        "/api/v3/account" | "/api/v3/allOrders" | "/api/v3/myTrades" | "/api/v3/exchangeInfo" => 20,
        "/api/v3/openOrders" if has_symbol => 6,
        "/api/v3/openOrders" => 80,
        "/sapi/v1/account/apiRestrictions" => 1,
        "/fapi/v3/account"
        | "/fapi/v2/account"
        | "/fapi/v3/positionRisk"
        | "/fapi/v2/positionRisk" => 5,
        "/fapi/v1/allOrders" | "/fapi/v1/userTrades" => 5,
        "/fapi/v1/openOrders" | "/fapi/v1/openAlgoOrders" if has_symbol => 1,
        "/fapi/v1/openOrders" | "/fapi/v1/openAlgoOrders" => 40,
        "/fapi/v1/listenKey" if method == Method::POST => 1,
        _ => 1,
    }
}

/// Weight of a Spot WebSocket API connection attempt and of a user-data subscription.
pub const WS_CONNECT_WEIGHT: u32 = 2;
pub const WS_SUBSCRIBE_WEIGHT: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spending_waits_for_the_next_minute_and_observes_the_server() {
        let b = Budget::new(Market::Usdm, 100, 100, 1);
        let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(60_000 * 10 + 1_000));
        let c = clock.clone();
        let now = move || c.load(Ordering::Relaxed);
        b.spend(60, &now).await;
        b.spend(40, &now).await;
        // Full: the next call waits for the next minute.
        let started = Instant::now();
        let c2 = clock.clone();
        let mover = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(59)).await;
            c2.store(60_000 * 11 + 10, Ordering::Relaxed);
        });
        b.spend(10, &now).await;
        assert!(started.elapsed() >= Duration::from_secs(59));
        mover.await.unwrap();
        // The server says more was used this minute: that wins.
        b.observe(95, clock.load(Ordering::Relaxed));
        let before = Instant::now();
        let c3 = clock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(61)).await;
            c3.store(60_000 * 12 + 10, Ordering::Relaxed);
        });
        b.spend(10, &now).await;
        assert!(before.elapsed() >= Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_stops_everyone() {
        let b = Budget::new(Market::Spot, 0, 80, 1);
        assert_eq!(b.cap(), 4_800);
        b.ban(429, Duration::from_secs(30));
        let started = Instant::now();
        b.spend(1, || 0).await;
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[test]
    fn the_interval_stretches_when_the_budget_cannot_hold_it() {
        let b = Budget::new(Market::Spot, 6_000, 100, 1);
        for _ in 0..1_000 {
            b.join();
        }
        b.record_snapshot_weight(140);
        let every = Duration::from_secs(300);
        let got = b.reconcile_interval(every);
        // 1000 × ~140 weight over 3000 weight/min ≈ 47 minutes.
        assert!(got > Duration::from_secs(2_400), "{got:?}");
        for _ in 0..999 {
            b.leave();
        }
        assert_eq!(b.reconcile_interval(every), every);
    }
}
