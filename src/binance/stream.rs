//! One account's stream session: the task that feeds one account's cache from the exchange.
//!
//! It does not own a socket: its frames arrive from a connection task (`conn`) — Spot: a
//! subscription on a WebSocket API connection shared with other accounts (`pool`); USD-M: its
//! listenKey's own connection, `{ws_url}/private/ws?listenKey=<key>&events=<E1>/<E2>/…` (SPEC
//! §1.2), kept alive by this session. The listenKey is a credential: it never reaches a log line
//! or an error. After every (re)connect or move it resyncs: events are buffered while the REST
//! snapshot is taken (inside the market's weight budget, one of its snapshot slots), the
//! snapshot is applied as differences, then the buffer. A periodic reconciliation repeats the
//! snapshot while connected, spread over the budget's interval; every change it makes is
//! counted as a correction, and two reconciliations in a row that correct orders or fills while
//! the stream delivered nothing mean a deaf stream (reconnected with a fresh listenKey).
//! Reconnects back off exponentially with jitter, forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::conn::{self, Conn, Inbound};
use super::connect::{OpenError, open_usdm};
pub use super::connect::{StreamConfig, probe};
use super::convert::{self, Frame};
use super::pool::{SpotPool, Subscription};
use super::rest::{RestClient, RestError};
use super::snapshot::{self, Cursor, Fetched, TradeCursors};
use crate::account::{CacheHandle, Counts, Kind, Market, Millis, Update};

/// What readiness and `/v1/account` report about the stream.
#[derive(Debug, Default)]
pub struct StreamHealth {
    pub connected: AtomicBool,
    pub subscribed: AtomicBool,
    pub snapshot_loaded: AtomicBool,
    pub reconnects: AtomicU64,
    pub last_frame_ms: AtomicI64,
    /// How often the stream was found deaf (see `DEAF_STRIKES`).
    pub deaf: AtomicU64,
}

impl StreamHealth {
    pub fn ready(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && self.snapshot_loaded.load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "subscribed": self.subscribed.load(Ordering::Relaxed),
            "snapshot_loaded": self.snapshot_loaded.load(Ordering::Relaxed),
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "last_frame_ms": self.last_frame_ms.load(Ordering::Relaxed),
            "deaf": self.deaf.load(Ordering::Relaxed),
        })
    }
}

/// Why a connection ended.
enum End {
    Cancelled,
    Reconnect(String),
    /// Connected but deaf: reconnect with a fresh listenKey.
    Deaf(String),
    /// The first snapshot of a connection was refused for the credentials (USD-M: opening
    /// the stream needs the API key only, so a wrong secret shows here first).
    Credentials(anyhow::Error),
    /// The connection went away (`serverShutdown`): the next one is already open.
    Handover(Box<Linked>),
}

/// Where an account's frames come from.
enum Link {
    Spot(Subscription),
    Usdm { _conn: Conn, key: String },
}

impl Link {
    fn listen_key(&self) -> Option<&str> {
        match self {
            Link::Usdm { key, .. } => Some(key),
            Link::Spot(_) => None,
        }
    }

    /// The connection ended: nothing to tell the server when the link is dropped.
    fn lost(&mut self) {
        if let Link::Spot(sub) = self {
            sub.gone = true;
        }
    }
}

/// An open link and the inbox its connection routes to.
struct Linked {
    link: Link,
    inbox: mpsc::UnboundedReceiver<Inbound>,
}

/// One account's stream session.
pub struct Stream {
    account_id: Arc<str>,
    rest: Arc<RestClient>,
    cache: CacheHandle,
    cfg: StreamConfig,
    health: Arc<StreamHealth>,
    /// Spot: the shared connections of the account's endpoint.
    pool: Option<Arc<SpotPool>>,
    m: SessionMetrics,
    cursors: TradeCursors,
    /// The exchange time up to which every trade and order is known to be recovered: the last
    /// snapshot whose recovery asked every question (at a restart, the last event an earlier run
    /// recorded). The next recovery starts `RECOVERY_OVERLAP_MS` before it.
    recovered_through: Option<Millis>,
    /// Events the stream delivered since the last snapshot was applied.
    heard: u64,
    /// Reconciliations in a row that corrected orders or fills while nothing was heard.
    deaf_strikes: u32,
}

/// Reconciliations in a row that must find corrections to stream-owned entities (orders, fills)
/// with no stream event in between before the stream is called deaf. A quiet account makes no
/// such corrections; one missed event makes one; a deaf stream makes them every time.
const DEAF_STRIKES: u32 = 2;

impl Stream {
    /// `cursors` and `recovered_through` come from Postgres after a restart (empty / `None` at
    /// a first start).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        account_id: &str,
        rest: Arc<RestClient>,
        cache: CacheHandle,
        cfg: StreamConfig,
        health: Arc<StreamHealth>,
        pool: Option<Arc<SpotPool>>,
        cursors: TradeCursors,
        recovered_through: Option<Millis>,
    ) -> Self {
        Stream {
            account_id: Arc::from(account_id),
            m: SessionMetrics::new(account_id),
            rest,
            cache,
            cfg,
            health,
            pool,
            cursors,
            recovered_through,
            heard: 0,
            deaf_strikes: 0,
        }
    }

    fn market(&self) -> Market {
        self.rest.market()
    }

    /// Runs until `cancel`. Returns an error only for a credentials error before the first
    /// successful subscription or the first snapshot (a wrong key or secret is not worth
    /// retrying forever at start).
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        if let Err(e) = self.rest.sync_time().await {
            tracing::warn!(account_id = %self.account_id, error = %e, "could not measure the server-time offset");
        }
        let reconciling = self.cfg.reconcile_every.is_some();
        if reconciling {
            self.rest.budget().join();
        }
        let result = self.run_links(&cancel).await;
        if reconciling {
            self.rest.budget().leave();
        }
        tracing::info!(event = "stream_stopped", account_id = %self.account_id, "stream stopped");
        result
    }

    async fn run_links(&mut self, cancel: &CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(250);
        let mut ever_subscribed = false;
        let mut next: Option<Box<Linked>> = None;
        let mut last_key: Option<String> = None;
        let mut fatal: Option<anyhow::Error> = None;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let opened = match next.take() {
                Some(l) => Ok(*l),
                None => tokio::select! {
                    _ = cancel.cancelled() => break,
                    l = self.open() => l,
                },
            };
            let linked = match opened {
                Ok(l) => l,
                Err(OpenError::Rest(RestError::Credentials(e))) if !ever_subscribed => {
                    return Err(anyhow::anyhow!(RestError::Credentials(e)));
                }
                Err(e) => {
                    tracing::warn!(event = "stream_connect_failed", account_id = %self.account_id, error = %e, retry_in_ms = backoff.as_millis() as u64, "stream: connect failed");
                    self.count_reconnect();
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                    continue;
                }
            };
            ever_subscribed = true;
            last_key = linked.link.listen_key().map(str::to_owned).or(last_key);
            let started = Instant::now();
            let end = self.drive(linked, cancel).await;
            self.health.connected.store(false, Ordering::Relaxed);
            self.health.subscribed.store(false, Ordering::Relaxed);
            self.m.connected.set(0.0);
            let deaf = matches!(end, End::Deaf(_));
            let end = match end {
                End::Credentials(e) if !self.health.snapshot_loaded.load(Ordering::Relaxed) => {
                    fatal = Some(e);
                    break;
                }
                End::Credentials(e) => End::Reconnect(format!("snapshot failed: {e:#}")),
                other => other,
            };
            match end {
                End::Cancelled | End::Credentials(_) => break,
                End::Handover(l) => {
                    tracing::info!(
                        event = "stream_handover",
                        account_id = %self.account_id,
                        "stream: the connection is going away; switched to a new one"
                    );
                    next = Some(l);
                }
                End::Reconnect(reason) | End::Deaf(reason) => {
                    // POST would hand back the same key while it lives: a fresh one needs the
                    // old one gone.
                    if deaf
                        && last_key.take().is_some()
                        && let Err(e) = self
                            .rest
                            .key_call(Method::DELETE, "/fapi/v1/listenKey", &[])
                            .await
                    {
                        tracing::warn!(account_id = %self.account_id, error = %e, "stream: could not delete the deaf listenKey");
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(250);
                    }
                    tracing::warn!(event = "stream_disconnected", account_id = %self.account_id, reason = %reason, retry_in_ms = backoff.as_millis() as u64, "stream: disconnected, reconnecting");
                    self.status("disconnected", Some(reason)).await;
                    self.count_reconnect();
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
        if let (Market::Usdm, Some(_)) = (self.market(), last_key) {
            match self
                .rest
                .key_call(Method::DELETE, "/fapi/v1/listenKey", &[])
                .await
            {
                Ok(_) => {
                    tracing::info!(event = "listen_key_deleted", account_id = %self.account_id, "stream: listenKey deleted")
                }
                Err(e) => {
                    tracing::warn!(account_id = %self.account_id, error = %e, "stream: could not delete the listenKey")
                }
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Opens the account's link: Spot, a subscription on a shared connection; USD-M, a
    /// listenKey on its own connection.
    async fn open(&self) -> Result<Linked, OpenError> {
        let (tx, inbox) = super::inbox::inbox();
        let link = match (self.market(), &self.pool) {
            (Market::Spot, Some(pool)) => {
                let sub = pool.subscribe(&self.rest, tx).await?;
                tracing::info!(
                    event = "stream_connected",
                    account_id = %self.account_id,
                    conn = sub.conn.id,
                    subscription = sub.id,
                    "stream: connected and subscribed (spot WebSocket API)"
                );
                Link::Spot(sub)
            }
            (Market::Spot, None) => {
                return Err(OpenError::Other("no spot connection pool".into()));
            }
            (Market::Usdm, _) => {
                let (ws, key) = open_usdm(&self.rest, &self.cfg).await?;
                let conn = conn::spawn_single(ws, self.cfg.clone(), tx, CancellationToken::new());
                Link::Usdm { _conn: conn, key }
            }
        };
        Ok(Linked { link, inbox })
    }

    fn count_reconnect(&self) {
        self.m.reconnects.increment(1);
        self.health.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes a status change of this account's stream.
    async fn status(&self, event: &str, detail: Option<String>) {
        let _ = self
            .cache
            .apply(
                now_ms(),
                Update::Status {
                    event: event.into(),
                    detail,
                },
            )
            .await;
    }

    /// When the next periodic reconciliation is due: the budget's interval (stretched when
    /// the accounts' snapshots would not fit it), the first one at a random phase so accounts
    /// spread over the interval.
    fn next_reconcile(&self, first: bool) -> Option<Instant> {
        let configured = self.cfg.reconcile_every?;
        let every = self.rest.budget().reconcile_interval(configured);
        let wait = if first {
            every.mul_f64(rand::random_range(0.5..1.0))
        } else {
            every
        };
        Some(Instant::now() + wait)
    }

    /// The snapshot runs beside the read loop; it is aborted if the connection ends first. Its
    /// recovery window starts before the last complete one (see `recovered_through`).
    fn spawn_snapshot(&self) -> AbortOnDropHandle<anyhow::Result<Fetched>> {
        let rest = self.rest.clone();
        let cache = self.cache.clone();
        let cursors = self.cursors.clone();
        let since = self
            .recovered_through
            .map(|t| t - snapshot::RECOVERY_OVERLAP_MS);
        AbortOnDropHandle::new(tokio::spawn(async move {
            // Queued behind the market's other snapshots: the account stays unready (its events
            // buffered) until its turn has come and the snapshot is applied.
            let budget = rest.budget().clone();
            let _slot = budget.snapshot_slot().await;
            let spent = rest.weight_spent();
            let open = cache.read(snapshot::open_ids).await?;
            let fetched = snapshot::fetch(&rest, &open, &cursors, since).await;
            budget.record_snapshot_weight((rest.weight_spent() - spent) as u32);
            fetched
        }))
    }

    /// Applies a snapshot; returns its changes per kind.
    async fn apply_snapshot(&mut self, fetched: Fetched) -> anyhow::Result<Counts> {
        let Fetched { snap, recovered } = fetched;
        for f in &snap.fills {
            self.advance_cursor(&f.symbol, f.trade_id, f.traded_at);
        }
        if recovered {
            let as_of = snap.as_of;
            self.recovered_through = Some(self.recovered_through.map_or(as_of, |t| t.max(as_of)));
        }
        let counts = (
            snap.balances.len(),
            snap.positions.as_ref().map_or(0, Vec::len),
            snap.orders.len(),
            snap.fills.len(),
        );
        let changes = self
            .cache
            .apply_and_count(snap.as_of, Update::Snapshot(snap))
            .await?;
        tracing::info!(
            event = "snapshot_applied",
            account_id = %self.account_id,
            balances = counts.0,
            positions = counts.1,
            orders = counts.2,
            backfilled_fills = counts.3,
            changes = changes.total(),
            "snapshot applied"
        );
        Ok(changes)
    }

    /// After a reconciliation (counted here): is the stream deaf? (See `DEAF_STRIKES`.)
    fn judge_hearing(&mut self, corrections: Counts) -> bool {
        self.m.reconciliations.increment(1);
        let owned = corrections.of(Kind::Order) + corrections.of(Kind::Fill);
        if owned > 0 && self.heard == 0 {
            self.deaf_strikes += 1;
        } else {
            self.deaf_strikes = 0;
        }
        self.heard = 0;
        if self.deaf_strikes < DEAF_STRIKES {
            return false;
        }
        self.deaf_strikes = 0;
        self.health.deaf.fetch_add(1, Ordering::Relaxed);
        self.m.deaf.increment(1);
        tracing::error!(
            event = "stream_deaf",
            account_id = %self.account_id,
            reconciliations = DEAF_STRIKES,
            order_corrections = corrections.of(Kind::Order),
            fill_corrections = corrections.of(Kind::Fill),
            "stream deaf: reconciliations keep correcting orders and fills while the stream delivers nothing; reconnecting with a fresh listenKey"
        );
        true
    }

    /// Applies one stream event. The trade cursor moves only here, once the fill is in the
    /// cache: a fill still buffered when the connection drops must be backfilled by the next
    /// resync, so the cursor must not have passed it.
    async fn apply_event(&mut self, et: Millis, u: Update) -> anyhow::Result<()> {
        match &u {
            Update::Order { fill: Some(f), .. } | Update::Fill(f) => {
                self.advance_cursor(&f.symbol, f.trade_id, f.traded_at)
            }
            _ => {}
        }
        self.cache.apply(et, u).await?;
        Ok(())
    }

    fn advance_cursor(&mut self, symbol: &str, trade_id: i64, traded_at: Millis) {
        let c = Cursor {
            trade_id,
            traded_at,
        };
        match self.cursors.get_mut(symbol) {
            Some(held) if held.trade_id >= trade_id => {}
            Some(held) => *held = c,
            None => {
                self.cursors.insert(symbol.to_owned(), c);
            }
        }
    }

    /// Reads one link until it ends.
    async fn drive(&mut self, linked: Linked, cancel: &CancellationToken) -> End {
        let Linked {
            mut link,
            mut inbox,
        } = linked;
        self.health.connected.store(true, Ordering::Relaxed);
        self.health.subscribed.store(true, Ordering::Relaxed);
        self.m.connected.set(1.0);
        self.status("connected", None).await;

        let mut buffer: Option<Vec<(Millis, Update)>> = Some(Vec::new());
        let mut snapshot_task = Some(self.spawn_snapshot());
        let mut initial = true;
        self.heard = 0;
        self.deaf_strikes = 0;
        let mut keepalive = tokio::time::interval(self.cfg.keepalive_every);
        keepalive.reset();
        let mut reconcile_at = self.next_reconcile(true);
        // One timer for the reconciliation, reset when its time changes (not made per frame);
        // polled only while armed.
        let reconcile_due = tokio::time::sleep_until(Instant::now());
        tokio::pin!(reconcile_due);
        let mut armed: Option<Instant> = None;
        // The cancellation waiter, registered once rather than once per frame.
        let stopping = cancel.cancelled();
        tokio::pin!(stopping);

        loop {
            let due = reconcile_at.filter(|_| snapshot_task.is_none());
            if due != armed {
                if let Some(t) = due {
                    reconcile_due.as_mut().reset(t);
                }
                armed = due;
            }
            let snapshot_done = async {
                match snapshot_task.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stopping => return End::Cancelled,
                msg = inbox.recv() => {
                    let text = match msg {
                        Some(Inbound::Frame(t, _room)) => t,
                        Some(Inbound::Moved(why)) => {
                            return match self.open().await {
                                Ok(next) => End::Handover(Box::new(next)),
                                Err(e) => End::Reconnect(format!("{why}; a new connection failed: {e}")),
                            };
                        }
                        Some(Inbound::Down(reason)) => {
                            link.lost();
                            return End::Reconnect(reason);
                        }
                        None => {
                            link.lost();
                            return End::Reconnect("the connection task ended".into());
                        }
                    };
                    self.health.last_frame_ms.store(now_ms(), Ordering::Relaxed);
                    let updates = match self.on_text(text.as_str()) {
                        Ok(u) => u,
                        Err(Ctl::Resubscribe) => {
                            tracing::warn!(event = "stream_resubscribing", account_id = %self.account_id, "stream: subscription terminated (eventStreamTerminated); resubscribing");
                            link.lost();
                            // The old subscription's inbox closes now, not after `open`: a
                            // connection waiting for room in it (it may be the one `open`
                            // subscribes on) reads on. The resync below covers its frames.
                            inbox.close();
                            match self.open().await {
                                Ok(next) => {
                                    link = next.link;
                                    inbox = next.inbox;
                                }
                                Err(e) => return End::Reconnect(format!("resubscription failed: {e}")),
                            }
                            self.status("resubscribed", Some("eventStreamTerminated".into())).await;
                            // What the subscription missed comes from a fresh resync.
                            if let Some(task) = snapshot_task.take() {
                                task.abort();
                            }
                            buffer = Some(buffer.take().unwrap_or_default());
                            snapshot_task = Some(self.spawn_snapshot());
                            initial = true;
                            Vec::new()
                        }
                        Err(Ctl::Reconnect(r)) => return End::Reconnect(r),
                    };
                    for (et, u) in updates {
                        match buffer.as_mut() {
                            Some(b) => b.push((et, u)),
                            None => if self.apply_event(et, u).await.is_err() {
                                return End::Cancelled;
                            },
                        }
                    }
                }
                done = snapshot_done => {
                    snapshot_task = None;
                    let snap = match done {
                        Ok(Ok(snap)) => snap,
                        Ok(Err(e)) if initial => {
                            if matches!(e.downcast_ref::<RestError>(), Some(RestError::Credentials(_))) {
                                return End::Credentials(e);
                            }
                            return End::Reconnect(format!("snapshot failed: {e:#}"));
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(account_id = %self.account_id, error = %format!("{e:#}"), "reconciliation snapshot failed");
                            reconcile_at = self.next_reconcile(false);
                            continue;
                        }
                        Err(e) => return End::Reconnect(format!("snapshot task failed: {e}")),
                    };
                    let counts = match self.apply_snapshot(snap).await {
                        Ok(c) => c,
                        Err(_) => return End::Cancelled,
                    };
                    let n = counts.total();
                    if !initial && n > 0 {
                        self.m.corrections.increment(n as u64);
                        tracing::warn!(event = "resync_corrections", account_id = %self.account_id, corrections = n, "reconciliation corrected the cache");
                    }
                    if initial {
                        self.heard = 0;
                    } else if self.judge_hearing(counts) {
                        return End::Deaf("deaf: reconciliations correct what the stream never delivered".into());
                    }
                    if let Some(buffered) = buffer.take() {
                        let count = buffered.len();
                        for (et, u) in buffered {
                            if self.apply_event(et, u).await.is_err() {
                                return End::Cancelled;
                            }
                        }
                        self.status("resynced", Some(format!("{n} corrections, {count} buffered events"))).await;
                        self.health.snapshot_loaded.store(true, Ordering::Relaxed);
                    }
                    initial = false;
                    reconcile_at = self.next_reconcile(false);
                }
                _ = keepalive.tick(), if link.listen_key().is_some() => {
                    match self.rest.key_call(Method::PUT, "/fapi/v1/listenKey", &[]).await {
                        Ok(_) => tracing::debug!(account_id = %self.account_id, "listenKey kept alive"),
                        Err(e) if e.code() == Some(-1125) => return End::Reconnect("listenKey no longer exists (-1125)".into()),
                        Err(e) => tracing::warn!(account_id = %self.account_id, error = %e, "listenKey keepalive failed"),
                    }
                }
                _ = &mut reconcile_due, if armed.is_some() => {
                    snapshot_task = Some(self.spawn_snapshot());
                }
            }
        }
    }

    /// Parses a text frame into cache updates, or a reason to leave this connection.
    fn on_text(&mut self, text: &str) -> Result<Vec<(Millis, Update)>, Ctl> {
        let parsed = match self.market() {
            Market::Spot => convert::parse_spot_frame(text),
            Market::Usdm => convert::parse_usdm_frame(text),
        };
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.m.parse_errors.increment(1);
                let excerpt: String = text.chars().take(200).collect();
                tracing::warn!(event = "frame_malformed", account_id = %self.account_id, error = %e, excerpt = %excerpt, "stream: malformed frame skipped");
                return Ok(Vec::new());
            }
        };
        if matches!(
            frame,
            Frame::Update { .. }
                | Frame::Updates { .. }
                | Frame::Info { .. }
                | Frame::Unknown { .. }
        ) {
            self.heard += 1;
        }
        match frame {
            Frame::Update {
                event_time,
                update,
                event_type,
            } => {
                self.m.event(event_type, event_time);
                Ok(vec![(event_time, update)])
            }
            Frame::Updates {
                event_time,
                updates,
                event_type,
            } => {
                self.m.event(event_type, event_time);
                Ok(updates.into_iter().map(|u| (event_time, u)).collect())
            }
            Frame::Info { event_type } => {
                self.m.counter(event_type).increment(1);
                Ok(Vec::new())
            }
            Frame::StreamTerminated => Err(Ctl::Resubscribe),
            Frame::ListenKeyExpired => Err(Ctl::Reconnect("listenKey expired".into())),
            // The connection task handles it; a session of one never sees it.
            Frame::ServerShutdown => Ok(Vec::new()),
            Frame::Response { status, error, .. } => {
                if let Some(e) = error {
                    tracing::warn!(account_id = %self.account_id, status, error = %e, "stream: request refused");
                }
                Ok(Vec::new())
            }
            Frame::Unknown { event_type } => {
                self.m.unknown.increment(1);
                // Binance adds event types over time: counted, logged at debug, never fatal.
                tracing::debug!(account_id = %self.account_id, event_type = %event_type, "stream: unknown event type skipped");
                Ok(Vec::new())
            }
        }
    }
}

/// A control event that ends the subscription or the connection.
enum Ctl {
    /// Spot `eventStreamTerminated`: subscribe again, then resync.
    Resubscribe,
    Reconnect(String),
}

/// A session's metric handles, registered once with the account's label (the counters at 0,
/// so `rate()` sees their first increment).
struct SessionMetrics {
    account: String,
    events: HashMap<&'static str, metrics::Counter>,
    reconnects: metrics::Counter,
    parse_errors: metrics::Counter,
    unknown: metrics::Counter,
    corrections: metrics::Counter,
    reconciliations: metrics::Counter,
    deaf: metrics::Counter,
    connected: metrics::Gauge,
    lag: metrics::Histogram,
}

impl SessionMetrics {
    fn new(account: &str) -> Self {
        let c = |name: &'static str| {
            let c = metrics::counter!(name, "account" => account.to_owned());
            c.increment(0);
            c
        };
        SessionMetrics {
            account: account.to_owned(),
            events: HashMap::new(),
            reconnects: c("acctstate_reconnects_total"),
            parse_errors: c("acctstate_parse_errors_total"),
            unknown: c("acctstate_unknown_events_total"),
            corrections: c("acctstate_resync_corrections_total"),
            reconciliations: c("acctstate_reconciliations_total"),
            deaf: c("acctstate_stream_deaf_total"),
            connected: metrics::gauge!("acctstate_stream_connected", "account" => account.to_owned()),
            // Process-wide: a histogram per account would be 16 series per account.
            lag: metrics::histogram!("acctstate_event_lag_seconds"),
        }
    }

    fn counter(&mut self, event_type: &'static str) -> &metrics::Counter {
        let account = &self.account;
        self.events.entry(event_type).or_insert_with(|| {
            metrics::counter!("acctstate_events_total", "account" => account.clone(), "type" => event_type)
        })
    }

    fn event(&mut self, event_type: &'static str, event_time: Millis) {
        self.counter(event_type).increment(1);
        let lag = (now_ms() - event_time).max(0) as f64 / 1000.0;
        self.lag.record(lag);
    }
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// ±20 % jitter, so many daemons do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let factor = rand::random_range(0.8..1.2);
    d.mul_f64(factor)
}
