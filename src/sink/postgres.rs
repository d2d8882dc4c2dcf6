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
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Postgres, Transaction};
use tokio::sync::mpsc;

use crate::account::{AccountBatch, Change, ChangeBatch, Entity, Kind};
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
    loop {
        if pending.is_empty() {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(b) => pending.add(b, history_limit, &mut dropped),
                None => break,
            }
            let until = tokio::time::Instant::now() + linger;
            while open && !linger.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    b = rx.recv() => match b {
                        Some(b) => pending.add(b, history_limit, &mut dropped),
                        None => open = false,
                    },
                }
            }
        }
        while let Ok(b) = rx.try_recv() {
            pending.add(b, history_limit, &mut dropped);
        }
        metrics::gauge!("acctstate_pg_queue_depth").set(pending.depth() as f64);
        if let Some(t) = pending.oldest {
            metrics::gauge!("acctstate_pg_oldest_pending_seconds").set(t.elapsed().as_secs_f64());
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
                metrics::histogram!("acctstate_pg_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("acctstate_pg_rows_written_total")
                    .increment(pending.history_len as u64);
                metrics::gauge!("acctstate_postgres_up").set(1.0);
                if let Some(since) = down_since.take() {
                    tracing::info!(
                        event = "postgres_up",
                        outage_secs = since.elapsed().as_secs_f64(),
                        written = pending.history_len,
                        "postgres up: caught up"
                    );
                }
                pending = Pending::default();
                metrics::gauge!("acctstate_pg_queue_depth").set(0.0);
                metrics::gauge!("acctstate_pg_oldest_pending_seconds").set(0.0);
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                metrics::counter!("acctstate_pg_write_errors_total").increment(1);
                metrics::gauge!("acctstate_postgres_up").set(0.0);
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

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A change with the account it belongs to.
type Row<'a> = (&'a str, &'a Change);

async fn write(pool: &PgPool, p: &Pending) -> anyhow::Result<()> {
    let mut tx = pool.begin().await.context("begin transaction")?;
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
    write_journal(&mut tx, &history).await?;
    write_fills(&mut tx, &history).await?;
    write_state(&mut tx, &state).await?;
    tx.commit().await.context("commit")?;
    Ok(())
}

/// Rows per statement, so one huge backlog does not become one huge statement.
const CHUNK: usize = 5000;

async fn write_journal(
    tx: &mut Transaction<'static, Postgres>,
    all: &[Row<'_>],
) -> anyhow::Result<()> {
    for chunk in all.chunks(CHUNK) {
        let mut account = Vec::with_capacity(chunk.len());
        let mut seq = Vec::with_capacity(chunk.len());
        let mut kind = Vec::with_capacity(chunk.len());
        let mut key = Vec::with_capacity(chunk.len());
        let mut data = Vec::with_capacity(chunk.len());
        let mut source = Vec::with_capacity(chunk.len());
        let mut event_time = Vec::with_capacity(chunk.len());
        for (a, c) in chunk {
            account.push(*a);
            seq.push(c.seq);
            kind.push(c.kind().as_str());
            key.push(c.key());
            // JSON text, cast to jsonb by Postgres: no `serde_json::Value` tree per change.
            data.push(serde_json::to_string(&c.entity).context("serialize change")?);
            source.push(c.source.as_str());
            event_time.push(ts(c.event_time));
        }
        sqlx::query(
            "INSERT INTO account_changes (account_id, seq, kind, key, data, source, event_time)
             SELECT u.account_id, u.seq, u.kind, u.key, u.data::jsonb, u.source, u.event_time
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[])
                 AS u(account_id, seq, kind, key, data, source, event_time)
             ON CONFLICT (account_id, seq) DO NOTHING",
        )
        .bind(&account)
        .bind(&seq)
        .bind(&kind)
        .bind(&key)
        .bind(&data)
        .bind(&source)
        .bind(&event_time)
        .execute(&mut **tx)
        .await
        .context("insert account_changes")?;
    }
    Ok(())
}

async fn write_fills(
    tx: &mut Transaction<'static, Postgres>,
    changes: &[Row<'_>],
) -> anyhow::Result<()> {
    let fills: Vec<(&str, i64, &crate::account::Fill)> = changes
        .iter()
        .filter_map(|&(a, c)| match &c.entity {
            Entity::Fill(f) => Some((a, c.seq, f)),
            _ => None,
        })
        .collect();
    for chunk in fills.chunks(CHUNK) {
        let mut cols = FillColumns::default();
        for (a, seq, f) in chunk {
            cols.push(a, *seq, f);
        }
        sqlx::query(
            "INSERT INTO fills (account_id, symbol, trade_id, order_id, side, price, qty, quote_qty,
                                commission, commission_asset, is_maker, realized_pnl, traded_at, seq)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                 $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[], $10::text[], $11::bool[],
                 $12::numeric[], $13::timestamptz[], $14::bigint[])
             ON CONFLICT (account_id, symbol, trade_id) DO NOTHING",
        )
        .bind(&cols.account)
        .bind(&cols.symbol)
        .bind(&cols.trade_id)
        .bind(&cols.order_id)
        .bind(&cols.side)
        .bind(&cols.price)
        .bind(&cols.qty)
        .bind(&cols.quote_qty)
        .bind(&cols.commission)
        .bind(&cols.commission_asset)
        .bind(&cols.is_maker)
        .bind(&cols.realized_pnl)
        .bind(&cols.traded_at)
        .bind(&cols.seq)
        .execute(&mut **tx)
        .await
        .context("insert fills")?;
    }
    Ok(())
}

#[derive(Default)]
struct FillColumns {
    account: Vec<String>,
    symbol: Vec<String>,
    trade_id: Vec<i64>,
    order_id: Vec<i64>,
    side: Vec<String>,
    price: Vec<Decimal>,
    qty: Vec<Decimal>,
    quote_qty: Vec<Decimal>,
    commission: Vec<Decimal>,
    commission_asset: Vec<Option<String>>,
    is_maker: Vec<bool>,
    realized_pnl: Vec<Option<Decimal>>,
    traded_at: Vec<DateTime<Utc>>,
    seq: Vec<i64>,
}

impl FillColumns {
    fn push(&mut self, account: &str, seq: i64, f: &crate::account::Fill) {
        self.account.push(account.to_owned());
        self.symbol.push(f.symbol.clone());
        self.trade_id.push(f.trade_id);
        self.order_id.push(f.order_id);
        self.side.push(f.side.clone());
        self.price.push(f.price);
        self.qty.push(f.qty);
        self.quote_qty.push(f.quote_qty);
        self.commission.push(f.commission);
        self.commission_asset.push(f.commission_asset.clone());
        self.is_maker.push(f.is_maker);
        self.realized_pnl.push(f.realized_pnl);
        self.traded_at.push(ts(f.traded_at));
        self.seq.push(seq);
    }
}

async fn write_state(
    tx: &mut Transaction<'static, Postgres>,
    changes: &[Row<'_>],
) -> anyhow::Result<()> {
    let mut balances = Vec::new();
    let mut positions = Vec::new();
    let mut orders = Vec::new();
    for &(a, c) in changes {
        match &c.entity {
            Entity::Balance(b) => balances.push((a, c.seq, b)),
            Entity::Position(p) => positions.push((a, c.seq, p)),
            Entity::Order(o) => orders.push((a, c.seq, o)),
            Entity::Fill(_) | Entity::Status(_) => {}
        }
    }
    for chunk in balances.chunks(CHUNK) {
        sqlx::query(
            "INSERT INTO balances AS t (account_id, asset, free, locked, total, wallet_balance,
                                        cross_wallet_balance, seq, updated_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[],
                 $6::numeric[], $7::numeric[], $8::bigint[], $9::timestamptz[])
             ON CONFLICT (account_id, asset) DO UPDATE SET
                 free = excluded.free, locked = excluded.locked, total = excluded.total,
                 wallet_balance = excluded.wallet_balance,
                 cross_wallet_balance = excluded.cross_wallet_balance,
                 seq = excluded.seq, updated_at = excluded.updated_at
             WHERE t.seq < excluded.seq",
        )
        .bind(chunk.iter().map(|(a, _, _)| *a).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|(_, _, b)| b.asset.clone())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|(_, _, b)| b.free).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, b)| b.locked).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, b)| b.total).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|(_, _, b)| b.wallet_balance)
                .collect::<Vec<_>>(),
        )
        .bind(
            chunk
                .iter()
                .map(|(_, _, b)| b.cross_wallet_balance)
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|(_, s, _)| *s).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|(_, _, b)| ts(b.updated_at))
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await
        .context("upsert balances")?;
    }
    for chunk in positions.chunks(CHUNK) {
        sqlx::query(
            "INSERT INTO positions AS t (account_id, symbol, position_side, amount, entry_price,
                 breakeven_price, unrealized_pnl, realized_pnl, margin_type, isolated_wallet, seq, updated_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[],
                 $7::numeric[], $8::numeric[], $9::text[], $10::numeric[], $11::bigint[], $12::timestamptz[])
             ON CONFLICT (account_id, symbol, position_side) DO UPDATE SET
                 amount = excluded.amount, entry_price = excluded.entry_price,
                 breakeven_price = excluded.breakeven_price, unrealized_pnl = excluded.unrealized_pnl,
                 realized_pnl = excluded.realized_pnl, margin_type = excluded.margin_type,
                 isolated_wallet = excluded.isolated_wallet, seq = excluded.seq,
                 updated_at = excluded.updated_at
             WHERE t.seq < excluded.seq",
        )
        .bind(chunk.iter().map(|(a, _, _)| *a).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.symbol.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.position_side.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.amount).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.entry_price).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.breakeven_price).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.unrealized_pnl).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.realized_pnl).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.margin_type.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| p.isolated_wallet).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, s, _)| *s).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, p)| ts(p.updated_at)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .context("upsert positions")?;
    }
    for chunk in orders.chunks(CHUNK) {
        sqlx::query(
            "INSERT INTO orders AS t (account_id, symbol, order_id, client_order_id, side, order_type,
                 time_in_force, status, price, stop_price, orig_qty, executed_qty, cum_quote_qty,
                 created_at, updated_at, seq)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[],
                 $13::numeric[], $14::timestamptz[], $15::timestamptz[], $16::bigint[])
             ON CONFLICT (account_id, symbol, order_id) DO UPDATE SET
                 client_order_id = excluded.client_order_id, side = excluded.side,
                 order_type = excluded.order_type, time_in_force = excluded.time_in_force,
                 status = excluded.status, price = excluded.price, stop_price = excluded.stop_price,
                 orig_qty = excluded.orig_qty, executed_qty = excluded.executed_qty,
                 cum_quote_qty = excluded.cum_quote_qty, created_at = excluded.created_at,
                 updated_at = excluded.updated_at, seq = excluded.seq
             WHERE t.seq < excluded.seq",
        )
        .bind(chunk.iter().map(|(a, _, _)| *a).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.symbol.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.order_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.client_order_id.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.side.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.order_type.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.time_in_force.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.status.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.price).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.stop_price).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.orig_qty).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.executed_qty).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| o.cum_quote_qty).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| ts(o.created_at)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, _, o)| ts(o.updated_at)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, s, _)| *s).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .context("upsert orders")?;
    }
    Ok(())
}
