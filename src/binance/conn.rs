//! One user-data WebSocket connection: its task owns the socket and nothing of any account.
//!
//! It keeps the socket alive and honest — our own pings (one unanswered for `pong_timeout` is a
//! dead, half-open connection), a silence bound, a rotation before Binance's 24-hour cut — and
//! routes every text frame to the account session it belongs to: Spot by `subscriptionId`
//! (a WebSocket API connection carries many accounts' `userDataStream.subscribe.signature`
//! subscriptions; this task sends those requests and reads their answers), USD-M to its one
//! listenKey's session. When the connection ends (the rotation included), every session on it
//! hears `Down` (it reconnects and resyncs); on `serverShutdown` they hear `Moved` first, so
//! each moves to a new connection before this one closes. Sessions never touch the socket; this task never
//! parses an account's events.
//!
//! `SpotPool` (in `pool`) chooses the connection a Spot account subscribes on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::connect::{OpenError, StreamConfig, Ws, subscribe_outcome, subscribe_request};
use super::convert::{self, Frame, SpotRoute};
use super::rest::RestClient;

use super::inbox::Refused;
pub use super::inbox::{Inbound, Inbox};

enum Cmd {
    Subscribe {
        rest: Arc<RestClient>,
        inbox: Inbox,
        reply: oneshot::Sender<Result<u64, OpenError>>,
    },
    /// Stop routing `sub`; `tell_server`: also end it on Binance's side.
    Unsubscribe { sub: u64, tell_server: bool },
}

/// A handle to a running connection (cheap to clone).
#[derive(Clone)]
pub struct Conn {
    pub id: u64,
    cmd: mpsc::UnboundedSender<Cmd>,
    /// Subscriptions carried or being made.
    load: Arc<AtomicUsize>,
    /// Still taking new subscriptions.
    accepting: Arc<AtomicBool>,
}

impl Conn {
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) && !self.cmd.is_closed()
    }

    /// Reserves a place for one more subscription (the pool does this under its lock).
    pub fn reserve(&self) {
        self.load.fetch_add(1, Ordering::Relaxed);
    }

    /// Spot: subscribes `rest`'s account; its frames go to `inbox`. The place must be reserved.
    pub async fn subscribe(&self, rest: Arc<RestClient>, inbox: Inbox) -> Result<u64, OpenError> {
        let (reply, answer) = oneshot::channel();
        if self
            .cmd
            .send(Cmd::Subscribe { rest, inbox, reply })
            .is_err()
        {
            self.load.fetch_sub(1, Ordering::Relaxed);
            return Err(OpenError::Other("the connection has closed".into()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(OpenError::Other(
                "the connection closed during the subscription".into(),
            ))
        })
    }

    pub fn unsubscribe(&self, sub: u64, tell_server: bool) {
        let _ = self.cmd.send(Cmd::Unsubscribe { sub, tell_server });
    }
}

/// A subscription request sent and not yet answered: who asked, who to tell, until when.
type Pending = (
    Inbox,
    oneshot::Sender<Result<u64, OpenError>>,
    Instant,
    Arc<RestClient>,
);

/// How a connection routes frames.
enum Routes {
    /// Spot WS API: by `subscriptionId`.
    Spot {
        subs: HashMap<u64, Inbox>,
        /// Subscription requests sent, by request id: who asked, until when.
        pending: HashMap<String, Pending>,
    },
    /// USD-M: one listenKey per connection.
    Single(Inbox),
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Starts the task of a Spot WebSocket API connection (already connected).
pub fn spawn_spot(ws: Ws, cfg: StreamConfig, cancel: CancellationToken) -> Conn {
    spawn(
        ws,
        cfg,
        Routes::Spot {
            subs: HashMap::new(),
            pending: HashMap::new(),
        },
        cancel,
    )
}

/// Starts the task of a USD-M stream connection carrying one listenKey, routed to `inbox`.
/// Dropping every clone of the returned handle closes the connection.
pub fn spawn_single(ws: Ws, cfg: StreamConfig, inbox: Inbox, cancel: CancellationToken) -> Conn {
    spawn(ws, cfg, Routes::Single(inbox), cancel)
}

fn spawn(ws: Ws, cfg: StreamConfig, routes: Routes, cancel: CancellationToken) -> Conn {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Conn {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        cmd: tx,
        load: Arc::new(AtomicUsize::new(0)),
        accepting: Arc::new(AtomicBool::new(true)),
    };
    let task = Task {
        id: conn.id,
        ws,
        cfg,
        routes,
        load: conn.load.clone(),
        accepting: conn.accepting.clone(),
        next_request: 0,
        stalled: None,
    };
    tokio::spawn(task.run(rx, cancel));
    conn
}

struct Task {
    id: u64,
    ws: Ws,
    cfg: StreamConfig,
    routes: Routes,
    load: Arc<AtomicUsize>,
    accepting: Arc<AtomicBool>,
    next_request: u64,
    /// A frame its session had no room for, and its inbox: until it is queued the socket is
    /// not read (back-pressure, `inbox`), the commands and timers still run.
    stalled: Option<(Inbox, Utf8Bytes)>,
}

/// How long a subscription request may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, cancel: CancellationToken) {
        metrics::gauge!("acctstate_ws_connections").increment(1.0);
        let mut last_frame = Instant::now();
        let mut pong_due: Option<Instant> = None;
        let rotate_at = Instant::now() + self.cfg.rotate_after;
        let mut ping = tokio::time::interval(self.cfg.ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        let mut moved = false;
        // Registered with the timer once, not once per frame.
        let rotate = tokio::time::sleep_until(rotate_at);
        tokio::pin!(rotate);
        // Likewise the cancellation waiter (made per frame it was a lock and a list insert).
        let stopping = cancel.cancelled();
        tokio::pin!(stopping);
        let reason = loop {
            let unanswered = async {
                match pong_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let room = async {
                match &self.stalled {
                    Some((inbox, text)) => inbox.frame(text.clone()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stopping => break "stopping".to_owned(),
                queued = room => {
                    // The session made room (or is gone: its frame goes with it); read on.
                    let single = matches!(self.routes, Routes::Single(_));
                    self.stalled = None;
                    // An answer to a ping sent before the stall may be among what is unread.
                    pong_due = None;
                    last_frame = Instant::now();
                    if !queued && single {
                        break "no longer needed".to_owned();
                    }
                }
                msg = self.ws.next(), if self.stalled.is_none() => {
                    last_frame = Instant::now();
                    pong_due = None;
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(end) = self.route(t) {
                                if end == ROUTE_SHUTDOWN {
                                    moved = true;
                                    self.move_all("server shutdown");
                                    continue;
                                }
                                break end.to_owned();
                            }
                        }
                        Some(Ok(Message::Binary(b))) => {
                            metrics::counter!("acctstate_parse_errors_total").increment(1);
                            tracing::warn!(conn = self.id, bytes = b.len(), "stream: unexpected binary frame skipped");
                        }
                        Some(Ok(Message::Close(_))) => break "closed by the server".to_owned(),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                                metrics::counter!("acctstate_oversized_frames_total").increment(1);
                            }
                            break format!("read error: {e}");
                        }
                        None => break "stream ended".to_owned(),
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Subscribe { rest, inbox, reply }) => {
                        if let Err(e) = self.send_subscribe(rest, inbox, reply).await {
                            break e;
                        }
                    }
                    Some(Cmd::Unsubscribe { sub, tell_server }) => {
                        self.unroute(sub, tell_server).await;
                        if moved && self.load.load(Ordering::Relaxed) == 0 {
                            break "every subscription moved".to_owned();
                        }
                    }
                    // Every handle is gone (USD-M: the session ended; Spot: the pool).
                    None => break "no longer needed".to_owned(),
                },
                _ = ping.tick() => {
                    self.expire_requests();
                    // While stalled the socket is not read, so no answer could be seen: the
                    // frames waiting are the connection's sign of life.
                    if self.stalled.is_some() {
                        continue;
                    }
                    if last_frame.elapsed() > self.cfg.idle_timeout {
                        break format!("silent for {} s", self.cfg.idle_timeout.as_secs());
                    }
                    if self.ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break "ping failed".to_owned();
                    }
                    pong_due.get_or_insert(Instant::now() + self.cfg.pong_timeout);
                }
                _ = unanswered, if self.stalled.is_none() => {
                    break format!("no answer to a ping within {} s (half-open connection)", self.cfg.pong_timeout.as_secs());
                }
                // As before sharing: the rotation is a reconnect (and a resync) of every account
                // on the connection, once a day.
                _ = &mut rotate => {
                    break "rotating the connection before the 24-hour cut".to_owned();
                }
            }
        };
        self.accepting.store(false, Ordering::Relaxed);
        let _ = self.ws.close(None).await;
        metrics::gauge!("acctstate_ws_connections").decrement(1.0);
        tracing::debug!(conn = self.id, reason = %reason, "connection closed");
        match std::mem::replace(
            &mut self.routes,
            Routes::Spot {
                subs: HashMap::new(),
                pending: HashMap::new(),
            },
        ) {
            Routes::Spot { subs, pending } => {
                for inbox in subs.into_values() {
                    let _ = inbox.control(Inbound::Down(reason.clone()));
                }
                for (_, (_, reply, _, _)) in pending {
                    let _ =
                        reply.send(Err(OpenError::Other(format!("connection ended: {reason}"))));
                }
            }
            Routes::Single(inbox) => {
                let _ = inbox.control(Inbound::Down(reason));
            }
        }
    }

    /// Routes one frame; returns why the connection must end, if it must.
    fn route(&mut self, text: Utf8Bytes) -> Option<&'static str> {
        match &mut self.routes {
            Routes::Single(inbox) => match inbox.try_frame(text) {
                Ok(()) => None,
                Err(Refused::Full(text)) => {
                    self.stalled = Some((inbox.clone(), text));
                    None
                }
                Err(Refused::Closed) => Some("no longer needed"),
            },
            Routes::Spot { subs, pending } => {
                let frame = match convert::spot_route(text.as_str()) {
                    SpotRoute::Subscription(id) => {
                        match subs.get(&id) {
                            Some(inbox) => {
                                if let Err(Refused::Full(text)) = inbox.try_frame(text) {
                                    self.stalled = Some((inbox.clone(), text));
                                }
                            }
                            None => unroutable(self.id, "unknown subscriptionId"),
                        }
                        return None;
                    }
                    SpotRoute::Frame(f) => Some(*f),
                    SpotRoute::Malformed => None,
                };
                match frame {
                    Some(Frame::ServerShutdown) => return Some(ROUTE_SHUTDOWN),
                    Some(Frame::Response {
                        id: Some(rid),
                        status,
                        result,
                        error,
                    }) if pending.contains_key(&rid) => {
                        if let Some((inbox, reply, _, rest)) = pending.remove(&rid) {
                            let outcome = subscribe_outcome(status, result.as_ref(), error, &rest);
                            match &outcome {
                                Ok(sub) => {
                                    subs.insert(*sub, inbox);
                                }
                                Err(_) => {
                                    self.load.fetch_sub(1, Ordering::Relaxed);
                                }
                            }
                            let _ = reply.send(outcome);
                        }
                    }
                    Some(Frame::Response { status, error, .. }) => {
                        if let Some(e) = error {
                            tracing::warn!(conn = self.id, status, error = %e, "stream: request refused");
                        }
                    }
                    // An event without `subscriptionId` (or malformed): only a connection of one
                    // account can say whose it is (its session counts what does not parse).
                    _ if subs.len() == 1 => {
                        if let Some(inbox) = subs.values().next()
                            && let Err(Refused::Full(text)) = inbox.try_frame(text)
                        {
                            self.stalled = Some((inbox.clone(), text));
                        }
                    }
                    _ => unroutable(self.id, "no subscriptionId on a shared connection"),
                }
                None
            }
        }
    }

    /// Tells every session to move to a new connection; this one takes no new subscriptions.
    fn move_all(&mut self, why: &str) {
        self.accepting.store(false, Ordering::Relaxed);
        tracing::info!(
            conn = self.id,
            reason = why,
            "connection going away: its accounts move to a new one"
        );
        match &self.routes {
            Routes::Spot { subs, .. } => {
                for inbox in subs.values() {
                    let _ = inbox.control(Inbound::Moved(why.to_owned()));
                }
            }
            Routes::Single(inbox) => {
                let _ = inbox.control(Inbound::Moved(why.to_owned()));
            }
        }
    }

    async fn send_subscribe(
        &mut self,
        rest: Arc<RestClient>,
        inbox: Inbox,
        reply: oneshot::Sender<Result<u64, OpenError>>,
    ) -> Result<(), String> {
        let Routes::Spot { pending, .. } = &mut self.routes else {
            let _ = reply.send(Err(OpenError::Other(
                "not a WebSocket API connection".into(),
            )));
            return Ok(());
        };
        self.next_request += 1;
        let id = format!("sub-{}-{}", self.id, self.next_request);
        let request = subscribe_request(&rest, &id);
        pending.insert(id, (inbox, reply, Instant::now() + ANSWER_WITHIN, rest));
        self.ws
            .send(Message::text(request))
            .await
            .map_err(|e| format!("send subscribe: {e}"))
    }

    async fn unroute(&mut self, sub: u64, tell_server: bool) {
        let Routes::Spot { subs, .. } = &mut self.routes else {
            return;
        };
        if subs.remove(&sub).is_none() {
            return;
        }
        self.load.fetch_sub(1, Ordering::Relaxed);
        if tell_server {
            self.next_request += 1;
            let request = serde_json::json!({
                "id": format!("unsub-{}-{}", self.id, self.next_request),
                "method": "userDataStream.unsubscribe",
                "params": {"subscriptionId": sub},
            });
            let _ = self.ws.send(Message::text(request.to_string())).await;
        }
    }

    fn expire_requests(&mut self) {
        let Routes::Spot { pending, .. } = &mut self.routes else {
            return;
        };
        let now = Instant::now();
        let late: Vec<String> = pending
            .iter()
            .filter(|(_, (_, _, due, _))| *due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in late {
            if let Some((_, reply, _, _)) = pending.remove(&k) {
                self.load.fetch_sub(1, Ordering::Relaxed);
                let _ = reply.send(Err(OpenError::Other(
                    "no answer to the subscription request".into(),
                )));
            }
        }
    }
}

/// `route`'s marker for `serverShutdown` (handled in the loop, not an end).
const ROUTE_SHUTDOWN: &str = "server shutdown";

fn unroutable(conn: u64, why: &'static str) {
    metrics::counter!("acctstate_unroutable_frames_total").increment(1);
    tracing::warn!(
        conn,
        why,
        "stream: a frame no account on this connection owns was skipped"
    );
}
