//! The stream task: one per daemon, owning the exchange connection.
//!
//! Spot: WebSocket API + `userDataStream.subscribe.signature`. USD-M: listenKey +
//! `{ws_url}/private/ws?listenKey=<key>&events=<E1>/<E2>/…` with a keepalive (SPEC §1.2: the only
//! form production delivers on; `events` is an allow list). The listenKey is a credential: it
//! never reaches a log line or an error. Both markets: our own pings (one unanswered for
//! `pong_timeout` is a dead, half-open connection), a silence bound, a rotation before Binance's
//! 24-hour cut, reconnects with exponential backoff and jitter forever, and a resync after every
//! (re)connect: events are buffered while the REST snapshot is taken, the snapshot is applied as
//! differences, then the buffer. A periodic reconciliation repeats the snapshot while connected;
//! every change it makes is counted as a correction, and two reconciliations in a row that
//! correct orders or fills while the stream delivered nothing mean a deaf stream (reconnected
//! with a fresh listenKey).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::connect::{OpenError, Session, open, subscribe};
pub use super::connect::{StreamConfig, probe};
use super::convert::{self, Frame};
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
    /// Spot `serverShutdown`: a new session is already open.
    Handover(Box<Session>),
}

/// The stream task.
pub struct Stream {
    rest: Arc<RestClient>,
    cache: CacheHandle,
    cfg: StreamConfig,
    health: Arc<StreamHealth>,
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
    pub fn new(
        rest: Arc<RestClient>,
        cache: CacheHandle,
        cfg: StreamConfig,
        health: Arc<StreamHealth>,
        cursors: TradeCursors,
        recovered_through: Option<Millis>,
    ) -> Self {
        Stream {
            rest,
            cache,
            cfg,
            health,
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
            tracing::warn!(error = %e, "could not measure the server-time offset");
        }
        let mut backoff = Duration::from_millis(250);
        let mut ever_subscribed = false;
        let mut next: Option<Box<Session>> = None;
        let mut last_key: Option<String> = None;
        let mut fatal: Option<anyhow::Error> = None;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let opened = match next.take() {
                Some(s) => Ok(*s),
                None => tokio::select! {
                    _ = cancel.cancelled() => break,
                    s = open(&self.rest, &self.cfg) => s,
                },
            };
            let session = match opened {
                Ok(s) => s,
                Err(OpenError::Rest(RestError::Credentials(e))) if !ever_subscribed => {
                    return Err(anyhow::anyhow!(RestError::Credentials(e)));
                }
                Err(e) => {
                    tracing::warn!(event = "stream_connect_failed", error = %e, retry_in_ms = backoff.as_millis() as u64, "stream: connect failed");
                    metrics::counter!("acctstate_reconnects_total").increment(1);
                    self.health.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                    continue;
                }
            };
            ever_subscribed = true;
            last_key = session.listen_key.clone().or(last_key);
            let started = Instant::now();
            let end = self.drive(session, &cancel).await;
            self.health.connected.store(false, Ordering::Relaxed);
            self.health.subscribed.store(false, Ordering::Relaxed);
            metrics::gauge!("acctstate_stream_connected").set(0.0);
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
                End::Handover(s) => {
                    tracing::info!(
                        event = "stream_handover",
                        "stream: server shutting down; switched to a new connection"
                    );
                    next = Some(s);
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
                        tracing::warn!(error = %e, "stream: could not delete the deaf listenKey");
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(250);
                    }
                    tracing::warn!(event = "stream_disconnected", reason = %reason, retry_in_ms = backoff.as_millis() as u64, "stream: disconnected, reconnecting");
                    let _ = self
                        .cache
                        .apply(
                            now_ms(),
                            Update::Status {
                                event: "disconnected".into(),
                                detail: Some(reason),
                            },
                        )
                        .await;
                    metrics::counter!("acctstate_reconnects_total").increment(1);
                    self.health.reconnects.fetch_add(1, Ordering::Relaxed);
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
                Ok(_) => tracing::info!(event = "listen_key_deleted", "stream: listenKey deleted"),
                Err(e) => tracing::warn!(error = %e, "stream: could not delete the listenKey"),
            }
        }
        tracing::info!(event = "stream_stopped", "stream stopped");
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
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
            let view = cache.view().await?;
            snapshot::fetch(&rest, &view, &cursors, since).await
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
        metrics::counter!("acctstate_reconciliations_total").increment(1);
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
        metrics::counter!("acctstate_stream_deaf_total").increment(1);
        tracing::error!(
            event = "stream_deaf",
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

    /// Reads one connection until it ends.
    async fn drive(&mut self, mut s: Session, cancel: &CancellationToken) -> End {
        self.health.connected.store(true, Ordering::Relaxed);
        self.health.subscribed.store(true, Ordering::Relaxed);
        metrics::gauge!("acctstate_stream_connected").set(1.0);
        let _ = self
            .cache
            .apply(
                now_ms(),
                Update::Status {
                    event: "connected".into(),
                    detail: None,
                },
            )
            .await;

        let mut buffer: Option<Vec<(Millis, Update)>> = Some(Vec::new());
        let mut snapshot_task = Some(self.spawn_snapshot());
        let mut initial = true;
        self.heard = 0;
        self.deaf_strikes = 0;
        let mut last_frame = Instant::now();
        // When the ping in flight is due to be answered (any frame answers it).
        let mut pong_due: Option<Instant> = None;
        let rotate_at = Instant::now() + self.cfg.rotate_after;
        let mut ping = tokio::time::interval(self.cfg.ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        let mut keepalive = tokio::time::interval(self.cfg.keepalive_every);
        keepalive.reset();
        let reconcile_period = self
            .cfg
            .reconcile_every
            .unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let mut reconcile = tokio::time::interval(reconcile_period);
        reconcile.reset();

        loop {
            let reconcile_due = snapshot_task.is_none() && self.cfg.reconcile_every.is_some();
            let snapshot_done = async {
                match snapshot_task.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            let unanswered = async {
                match pong_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = s.ws.close(None).await;
                    return End::Cancelled;
                }
                msg = s.ws.next() => {
                    last_frame = Instant::now();
                    pong_due = None;
                    self.health.last_frame_ms.store(now_ms(), Ordering::Relaxed);
                    let updates = match msg {
                        Some(Ok(Message::Text(t))) => match self.on_text(t.as_str()) {
                            Ok(u) => u,
                            Err(end) => match end {
                                Ctl::ServerShutdown => {
                                    match open(&self.rest, &self.cfg).await {
                                        Ok(new) => { let _ = s.ws.close(None).await; return End::Handover(Box::new(new)); }
                                        Err(e) => return End::Reconnect(format!("server shutdown; new connection failed: {e}")),
                                    }
                                }
                                Ctl::Resubscribe => {
                                    tracing::warn!(event = "stream_resubscribing", "stream: subscription terminated (eventStreamTerminated); resubscribing");
                                    if let Err(e) = subscribe(&self.rest, &mut s.ws).await {
                                        return End::Reconnect(format!("resubscription failed: {e}"));
                                    }
                                    let _ = self.cache.apply(now_ms(), Update::Status { event: "resubscribed".into(), detail: Some("eventStreamTerminated".into()) }).await;
                                    // What the subscription missed comes from a fresh resync.
                                    if let Some(task) = snapshot_task.take() {
                                        task.abort();
                                    }
                                    buffer = Some(buffer.take().unwrap_or_default());
                                    snapshot_task = Some(self.spawn_snapshot());
                                    initial = true;
                                    Vec::new()
                                }
                                Ctl::Reconnect(r) => return End::Reconnect(r),
                            },
                        },
                        Some(Ok(Message::Binary(b))) => {
                            metrics::counter!("acctstate_parse_errors_total").increment(1);
                            tracing::warn!(bytes = b.len(), "stream: unexpected binary frame skipped");
                            Vec::new()
                        }
                        Some(Ok(Message::Close(_))) => return End::Reconnect("closed by the server".into()),
                        Some(Ok(_)) => Vec::new(),
                        Some(Err(e)) => {
                            if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                                metrics::counter!("acctstate_oversized_frames_total").increment(1);
                            }
                            return End::Reconnect(format!("read error: {e}"));
                        }
                        None => return End::Reconnect("stream ended".into()),
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
                        Ok(Err(e)) => { tracing::warn!(error = %format!("{e:#}"), "reconciliation snapshot failed"); continue; }
                        Err(e) => return End::Reconnect(format!("snapshot task failed: {e}")),
                    };
                    let counts = match self.apply_snapshot(snap).await {
                        Ok(c) => c,
                        Err(_) => return End::Cancelled,
                    };
                    let n = counts.total();
                    if !initial && n > 0 {
                        metrics::counter!("acctstate_resync_corrections_total").increment(n as u64);
                        tracing::warn!(event = "resync_corrections", corrections = n, "reconciliation corrected the cache");
                    }
                    if initial {
                        self.heard = 0;
                    } else if self.judge_hearing(counts) {
                        let _ = s.ws.close(None).await;
                        return End::Deaf("deaf: reconciliations correct what the stream never delivered".into());
                    }
                    if let Some(buffered) = buffer.take() {
                        let count = buffered.len();
                        for (et, u) in buffered {
                            if self.apply_event(et, u).await.is_err() {
                                return End::Cancelled;
                            }
                        }
                        let _ = self.cache.apply(now_ms(), Update::Status { event: "resynced".into(), detail: Some(format!("{n} corrections, {count} buffered events")) }).await;
                        self.health.snapshot_loaded.store(true, Ordering::Relaxed);
                    }
                    initial = false;
                }
                _ = ping.tick() => {
                    if last_frame.elapsed() > self.cfg.idle_timeout {
                        return End::Reconnect(format!("silent for {} s", self.cfg.idle_timeout.as_secs()));
                    }
                    if s.ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return End::Reconnect("ping failed".into());
                    }
                    pong_due.get_or_insert(Instant::now() + self.cfg.pong_timeout);
                }
                _ = unanswered => {
                    return End::Reconnect(format!("no answer to a ping within {} s (half-open connection)", self.cfg.pong_timeout.as_secs()));
                }
                _ = keepalive.tick(), if s.listen_key.is_some() => {
                    match self.rest.key_call(Method::PUT, "/fapi/v1/listenKey", &[]).await {
                        Ok(_) => tracing::debug!("listenKey kept alive"),
                        Err(e) if e.code() == Some(-1125) => return End::Reconnect("listenKey no longer exists (-1125)".into()),
                        Err(e) => tracing::warn!(error = %e, "listenKey keepalive failed"),
                    }
                }
                _ = reconcile.tick(), if reconcile_due => {
                    snapshot_task = Some(self.spawn_snapshot());
                }
                _ = tokio::time::sleep_until(rotate_at) => {
                    return End::Reconnect("rotating the connection before the 24-hour cut".into());
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
                metrics::counter!("acctstate_parse_errors_total").increment(1);
                let excerpt: String = text.chars().take(200).collect();
                tracing::warn!(event = "frame_malformed", error = %e, excerpt = %excerpt, "stream: malformed frame skipped");
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
                count_event(event_type, event_time);
                Ok(vec![(event_time, update)])
            }
            Frame::Updates {
                event_time,
                updates,
                event_type,
            } => {
                count_event(event_type, event_time);
                Ok(updates.into_iter().map(|u| (event_time, u)).collect())
            }
            Frame::Info { event_type } => {
                metrics::counter!("acctstate_events_total", "type" => event_type).increment(1);
                Ok(Vec::new())
            }
            Frame::StreamTerminated => Err(Ctl::Resubscribe),
            Frame::ListenKeyExpired => Err(Ctl::Reconnect("listenKey expired".into())),
            Frame::ServerShutdown => Err(Ctl::ServerShutdown),
            Frame::Response { status, error, .. } => {
                if let Some(e) = error {
                    tracing::warn!(status, error = %e, "stream: request refused");
                }
                Ok(Vec::new())
            }
            Frame::Unknown { event_type } => {
                metrics::counter!("acctstate_unknown_events_total").increment(1);
                // Binance adds event types over time: counted, logged at debug, never fatal.
                tracing::debug!(event_type = %event_type, "stream: unknown event type skipped");
                Ok(Vec::new())
            }
        }
    }
}

/// A control event that ends the connection.
enum Ctl {
    ServerShutdown,
    /// Spot `eventStreamTerminated`: subscribe again on the same connection, then resync.
    Resubscribe,
    Reconnect(String),
}

fn count_event(event_type: &'static str, event_time: Millis) {
    metrics::counter!("acctstate_events_total", "type" => event_type).increment(1);
    let lag = (now_ms() - event_time).max(0) as f64 / 1000.0;
    metrics::histogram!("acctstate_event_lag_seconds").record(lag);
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// ±20 % jitter, so many daemons do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let factor = rand::random_range(0.8..1.2);
    d.mul_f64(factor)
}
