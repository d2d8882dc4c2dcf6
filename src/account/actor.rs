//! The cache actor: the one task that owns the `AccountState`.
//!
//! One actor per account. Others hold a cheap, cloneable `CacheHandle`: the account's session
//! sends updates through it, the HTTP server and the Redis sink ask for views. The actor applies
//! each update and hands the resulting changes, tagged with the account, to the sinks over
//! unbounded channels, so it never waits on Postgres or Redis (each sink drains its channel at
//! once into its own bounded, coalescing buffer). Its metrics carry the `account` label.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::change::{Change, Kind, Source};
use super::model::Millis;
use super::state::{AccountState, AccountView, Drops, ViewRef};
use super::update::Update;

/// Changes of one update, shared by every sink.
pub type ChangeBatch = Arc<[Change]>;

/// A batch with the account it belongs to (the Postgres writer serves every account).
#[derive(Debug, Clone)]
pub struct AccountBatch {
    pub account: Arc<str>,
    pub changes: ChangeBatch,
}

/// How many commands may wait for the actor before senders wait.
const MAILBOX: usize = 4096;

#[allow(clippy::large_enum_variant)]
enum Command {
    Apply {
        event_time: Millis,
        update: Update,
        done: Option<oneshot::Sender<Counts>>,
    },
    /// A reader's function, run on the actor against the borrowed view (it sends its own
    /// answer): a reader takes what it needs — the serialized account, some keys — without a
    /// copy of the whole account.
    Read(Box<dyn FnOnce(ViewRef<'_>) + Send>),
    Seq(oneshot::Sender<i64>),
    Close,
}

/// A handle to the cache actor.
#[derive(Clone, Debug)]
pub struct CacheHandle {
    tx: mpsc::Sender<Command>,
}

impl CacheHandle {
    /// Queues an update for the cache.
    pub async fn apply(&self, event_time: Millis, update: Update) -> anyhow::Result<()> {
        self.tx
            .send(Command::Apply {
                event_time,
                update,
                done: None,
            })
            .await
            .map_err(|_| anyhow!("the cache actor has stopped"))
    }

    /// Applies an update and waits until it is applied; returns how many changes it made.
    pub async fn apply_and_wait(
        &self,
        event_time: Millis,
        update: Update,
    ) -> anyhow::Result<usize> {
        Ok(self.apply_and_count(event_time, update).await?.total())
    }

    /// Applies an update and waits until it is applied; returns its changes counted per kind.
    pub async fn apply_and_count(
        &self,
        event_time: Millis,
        update: Update,
    ) -> anyhow::Result<Counts> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Apply {
                event_time,
                update,
                done: Some(done),
            })
            .await
            .map_err(|_| anyhow!("the cache actor has stopped"))?;
        rx.await.context("the cache actor stopped before answering")
    }

    /// The whole cached account, copied, consistent at one seq.
    pub async fn view(&self) -> anyhow::Result<AccountView> {
        self.read(|v| v.copied()).await
    }

    /// Runs `f` on the actor against the view, consistent at one seq, and returns its answer.
    /// The actor applies nothing meanwhile: keep `f` to reading (a 10,000-order account
    /// serializes in a few milliseconds).
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(ViewRef<'_>) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let (tx, rx) = oneshot::channel();
        let run = move |v: ViewRef<'_>| {
            let _ = tx.send(f(v));
        };
        self.tx
            .send(Command::Read(Box::new(run)))
            .await
            .map_err(|_| anyhow!("the cache actor has stopped"))?;
        rx.await.context("the cache actor stopped before answering")
    }

    /// The last seq (a cheap liveness question: no view is copied).
    pub async fn seq(&self) -> anyhow::Result<i64> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Seq(tx))
            .await
            .map_err(|_| anyhow!("the cache actor has stopped"))?;
        rx.await.context("the cache actor stopped before answering")
    }

    /// Stops the actor after the commands already queued; the sinks' channels then close.
    pub async fn close(&self) {
        let _ = self.tx.send(Command::Close).await;
    }
}

/// Starts the actor. Every batch of changes is sent to each of `sinks`.
pub fn spawn(
    state: AccountState,
    sinks: Vec<mpsc::UnboundedSender<AccountBatch>>,
) -> (CacheHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let task = tokio::spawn(run(state, rx, sinks));
    (CacheHandle { tx }, task)
}

/// The actor's metric handles, registered once with the account's label.
struct ActorMetrics {
    account: String,
    /// Per kind (`Kind::ALL` order) × source (stream, snapshot), registered on first use (a
    /// series per pair that never happens would be noise).
    changes: [[Option<metrics::Counter>; 2]; 5],
    drops: [metrics::Counter; 4],
    open_orders: metrics::Gauge,
    seq: metrics::Gauge,
}

impl ActorMetrics {
    fn new(account: &str) -> Self {
        let a = account.to_owned();
        let drops = DROP_REASONS.map(|r| {
            let c = metrics::counter!("acctstate_dropped_updates_total", "account" => a.clone(), "reason" => r);
            c.increment(0);
            c
        });
        ActorMetrics {
            account: a.clone(),
            changes: Default::default(),
            drops,
            open_orders: metrics::gauge!("acctstate_open_orders", "account" => a.clone()),
            seq: metrics::gauge!("acctstate_seq", "account" => a),
        }
    }

    fn change(&mut self, c: &Change) {
        let k = Kind::ALL.iter().position(|k| *k == c.kind()).unwrap_or(0);
        let s = usize::from(c.source == Source::Snapshot);
        let account = &self.account;
        self.changes[k][s]
            .get_or_insert_with(|| {
                metrics::counter!("acctstate_changes_total", "account" => account.clone(), "kind" => c.kind().as_str(), "source" => c.source.as_str())
            })
            .increment(1);
    }
}

const DROP_REASONS: [&str; 4] = ["unchanged", "stale", "duplicate", "invalid"];

async fn run(
    mut state: AccountState,
    mut rx: mpsc::Receiver<Command>,
    sinks: Vec<mpsc::UnboundedSender<AccountBatch>>,
) {
    let account: Arc<str> = Arc::from(state.view_id());
    let mut m = ActorMetrics::new(&account);
    let mut drops = Drops::default();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Apply {
                event_time,
                update,
                done,
            } => {
                let changes = state.apply(event_time, update);
                let n = changes.len();
                let counts = done.as_ref().map(|_| Counts::of_changes(&changes));
                if n > 0 {
                    for c in &changes {
                        m.change(c);
                    }
                    let batch = AccountBatch {
                        account: account.clone(),
                        changes: changes.into(),
                    };
                    for sink in &sinks {
                        // A sink that has stopped is gone for good; the others still get it.
                        let _ = sink.send(batch.clone());
                    }
                }
                record_drops(&m.drops, &mut drops, state.drops());
                m.open_orders.set(state.open_order_count() as f64);
                m.seq.set(state.last_seq() as f64);
                if let (Some(done), Some(counts)) = (done, counts) {
                    let _ = done.send(counts);
                }
            }
            Command::Read(f) => f(state.view_ref()),
            Command::Seq(reply) => {
                let _ = reply.send(state.last_seq());
            }
            Command::Close => break,
        }
    }
    tracing::info!(
        event = "cache_stopped",
        account_id = %account,
        seq = state.last_seq(),
        "cache actor stopped"
    );
}

/// Moves the drop counters (in `DROP_REASONS` order) forward to the state's totals.
fn record_drops(counters: &[metrics::Counter; 4], seen: &mut Drops, now: Drops) {
    for (counter, before, after) in [
        (&counters[0], seen.unchanged, now.unchanged),
        (&counters[1], seen.stale, now.stale),
        (&counters[2], seen.duplicate, now.duplicate),
        (&counters[3], seen.invalid, now.invalid),
    ] {
        if after > before {
            counter.increment(after - before);
        }
    }
    *seen = now;
}

/// How many changes one update made, per kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts([usize; Kind::ALL.len()]);

impl Counts {
    fn of_changes(changes: &[crate::account::Change]) -> Counts {
        let mut c = Counts::default();
        for ch in changes {
            if let Some(i) = Kind::ALL.iter().position(|k| *k == ch.kind()) {
                c.0[i] += 1;
            }
        }
        c
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    pub fn of(&self, kind: Kind) -> usize {
        Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.0[i])
    }
}

/// Kinds that have a current-state table and hash (not fills, not status).
pub fn is_state_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Balance | Kind::Position | Kind::Order)
}
