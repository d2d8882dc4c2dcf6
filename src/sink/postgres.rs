//! The Postgres write-behind: one task per process, fed by every account's cache actor.
//!
//! It drains whatever is queued — changes of many accounts — into one transaction: every change
//! appended to `account_changes`, fills inserted once, current state upserted only when newer
//! (`WHERE t.seq < excluded.seq`), so retries and replays change nothing. When Postgres is down
//! it keeps draining its channel and retries with backoff: pending current state coalesces per
//! account and key (memory bounded by the number of keys), history (journal and fills) is kept
//! up to `history_limit` changes per account (one busy account cannot crowd out another's),
//! counted and logged loudly if that bound is ever reached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::rows::{Columns, Row};
use crate::account::{AccountBatch, ChangeBatch, Kind};
use crate::config::PostgresSettings;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A lazy pool: the daemon starts even when Postgres is down.
pub fn lazy_pool(settings: &PostgresSettings) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = settings
        .url
        .expose()
        .parse()
        .context("postgres.url is not a valid Postgres URL")?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_secs(3))
        // Every statement at debug would drown an operator's debug log (and its lines carry no
        // `message`): statements at trace, slow ones (> 1 s) at warn.
        .connect_lazy_with(
            opts.application_name("acctstate")
                .log_statements(tracing::log::LevelFilter::Trace)
                .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)),
        ))
}

/// Changes waiting to be written.
#[derive(Default)]
struct Pending {
    /// Latest change per (account, kind, key) for the current-state tables: its batch (shared
    /// with `history` and the other sink, not cloned) and its index there.
    state: HashMap<(Arc<str>, Kind, String), (ChangeBatch, usize)>,
    /// Every change (journal), fills among them, in seq order per account.
    history: Vec<AccountBatch>,
    history_len: usize,
    /// History changes pending per account (bounded by `history_limit` each).
    per_account: HashMap<Arc<str>, usize>,
    oldest: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.state.is_empty() && self.history.is_empty()
    }

    fn add(&mut self, batch: AccountBatch, history_limit: usize, dropped: &mut u64) {
        self.oldest.get_or_insert_with(Instant::now);
        for (i, c) in batch.changes.iter().enumerate() {
            if matches!(c.kind(), Kind::Balance | Kind::Position | Kind::Order) {
                let key = (batch.account.clone(), c.kind(), c.key());
                match self.state.get(&key) {
                    Some((b, j)) if b[*j].seq > c.seq => {}
                    _ => {
                        self.state.insert(key, (batch.changes.clone(), i));
                    }
                }
            }
        }
        let n = batch.changes.len();
        let held = self.per_account.entry(batch.account.clone()).or_default();
        if *held + n > history_limit {
            *dropped += n as u64;
            metrics::counter!("acctstate_pg_history_dropped_total", "account" => batch.account.to_string()).increment(n as u64);
            tracing::error!(
                event = "postgres_history_full",
                account_id = %batch.account,
                pending = *held,
                limit = history_limit,
                dropped_total = *dropped,
                "Postgres history buffer of this account is full: journal rows and fills are being DROPPED (current state is still kept)"
            );
            return;
        }
        *held += n;
        self.history_len += n;
        self.history.push(batch);
    }

    fn depth(&self) -> usize {
        self.history_len.max(self.state.len())
    }
}

/// Runs until the channel closes and everything pending is written.
/// `linger`: after the first change of an idle writer, how long more changes are gathered
/// before the transaction starts (group commit: at low rates one transaction carries several
/// events instead of one each; Postgres is write-behind, so subscribers do not wait for it).
pub async fn run(
    pool: PgPool,
    history_limit: usize,
    linger: Duration,
    mut rx: mpsc::UnboundedReceiver<AccountBatch>,
) {
    let mut pending = Pending::default();
    let mut dropped = 0u64;
    let mut open = true;
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    let mut migrated = false;
    let m = WriterMetrics::new();
    loop {
        if pending.is_empty() {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(b) => pending.add(b, history_limit, &mut dropped),
                None => break,
            }
            // The linger sleeps without listening: changes wait in the channel, and the
            // actor's sends wake nobody (listening meant a task poll and a timer re-armed per
            // event). A closed channel is seen when it is drained.
            if !linger.is_zero() {
                tokio::time::sleep(linger).await;
            }
        }
        loop {
            match rx.try_recv() {
                Ok(b) => pending.add(b, history_limit, &mut dropped),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        m.queue_depth.set(pending.depth() as f64);
        if let Some(t) = pending.oldest {
            m.oldest_pending.set(t.elapsed().as_secs_f64());
        }
        let started = Instant::now();
        let attempt = async {
            if !migrated {
                MIGRATOR.run(&pool).await.context("apply migrations")?;
                migrated = true;
            }
            write(&pool, &pending).await
        };
        match attempt.await {
            Ok(()) => {
                m.write_seconds.record(started.elapsed().as_secs_f64());
                m.rows_written.increment(pending.history_len as u64);
                m.up.set(1.0);
                if let Some(since) = down_since.take() {
                    tracing::info!(
                        event = "postgres_up",
                        outage_secs = since.elapsed().as_secs_f64(),
                        written = pending.history_len,
                        "postgres up: caught up"
                    );
                }
                pending = Pending::default();
                m.queue_depth.set(0.0);
                m.oldest_pending.set(0.0);
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                m.write_errors.increment(1);
                m.up.set(0.0);
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::error!(event = "postgres_down", error = %format!("{e:#}"), pending = pending.depth(), "postgres down: write failed, keeping changes and retrying");
                } else {
                    tracing::debug!(error = %format!("{e:#}"), pending = pending.depth(), "postgres write retry failed");
                }
                // Keep draining the channel while waiting, so the actor never waits on us.
                let deadline = tokio::time::Instant::now() + backoff;
                while open {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        b = rx.recv() => match b {
                            Some(b) => pending.add(b, history_limit, &mut dropped),
                            None => open = false,
                        },
                    }
                }
                if !open {
                    tokio::time::sleep_until(deadline).await;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!(
        event = "postgres_stopped",
        "postgres writer stopped: every queued change is written"
    );
}

/// The writer's metric handles, looked up once (a lookup by name hashes and locks per call).
struct WriterMetrics {
    queue_depth: metrics::Gauge,
    oldest_pending: metrics::Gauge,
    up: metrics::Gauge,
    write_seconds: metrics::Histogram,
    rows_written: metrics::Counter,
    write_errors: metrics::Counter,
}

impl WriterMetrics {
    fn new() -> Self {
        WriterMetrics {
            queue_depth: metrics::gauge!("acctstate_pg_queue_depth"),
            oldest_pending: metrics::gauge!("acctstate_pg_oldest_pending_seconds"),
            up: metrics::gauge!("acctstate_postgres_up"),
            write_seconds: metrics::histogram!("acctstate_pg_write_seconds"),
            rows_written: metrics::counter!("acctstate_pg_rows_written_total"),
            write_errors: metrics::counter!("acctstate_pg_write_errors_total"),
        }
    }
}

/// Writes one batch: one statement per `CHUNK` rows (`rows::WRITE_SQL`: every table at once),
/// so the common batch is one round trip in its own implicit transaction; a backlog of several
/// chunks goes in one explicit transaction.
async fn write(pool: &PgPool, p: &Pending) -> anyhow::Result<()> {
    let mut history: Vec<Row<'_>> = Vec::with_capacity(p.history_len);
    for b in &p.history {
        for c in b.changes.iter() {
            history.push((&b.account, c));
        }
    }
    let mut state: Vec<Row<'_>> = Vec::with_capacity(p.state.len());
    for ((a, _, _), (b, i)) in &p.state {
        state.push((a, &b[*i]));
    }
    let statements = history.len().max(state.len()).div_ceil(CHUNK).max(1);
    let chunk = |rows: &[Row<'_>], k: usize| -> std::ops::Range<usize> {
        (k * CHUNK).min(rows.len())..((k + 1) * CHUNK).min(rows.len())
    };
    let columns = |k| Columns::build(&history[chunk(&history, k)], &state[chunk(&state, k)]);
    if statements == 1 {
        columns(0)?
            .query()
            .execute(pool)
            .await
            .context("write batch")?;
        return Ok(());
    }
    let mut tx = pool.begin().await.context("begin transaction")?;
    for k in 0..statements {
        columns(k)?
            .query()
            .execute(&mut *tx)
            .await
            .context("write batch chunk")?;
    }
    tx.commit().await.context("commit")?;
    Ok(())
}

/// Rows per statement, so one huge backlog does not become one huge statement. A statement's
/// arguments live three times while it is sent (its columns, sqlx's encoded arguments, the
/// socket buffer): 2,500 rows is ~7 MB of heap at a 10,000-order snapshot where 5,000 was ~14,
/// at the same throughput; 1,000 cost Postgres ~50% more per row (BENCHMARKS.md, sessions 5-6).
const CHUNK: usize = 2500;
