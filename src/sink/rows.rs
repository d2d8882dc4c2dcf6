//! The Postgres writer's statement: a batch's journal rows, fills and current-state upserts in
//! ONE statement (data-modifying CTEs over UNNEST arrays). One statement is one round trip and
//! its own transaction, where BEGIN, an INSERT per table and COMMIT were six: at the rates
//! accounts run at, the round trips and their wake-ups were most of the writer's cost
//! (BENCHMARKS.md). Pure column building; `postgres.rs` owns the connection and the retries.

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::account::{Balance, Change, Entity, Fill, Order, Position};

/// A change with the account it belongs to.
pub type Row<'a> = (&'a str, &'a Change);

/// Every table in one statement. Each CTE inserts its arrays' rows (none when they are empty);
/// Postgres runs every data-modifying CTE whether or not the outer query reads it.
pub const WRITE_SQL: &str = "
WITH journal AS (
    INSERT INTO account_changes (account_id, seq, kind, key, data, source, event_time)
    SELECT u.account_id, u.seq, u.kind, u.key, u.data::jsonb, u.source, u.event_time
    FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::timestamptz[])
        AS u(account_id, seq, kind, key, data, source, event_time)
    ON CONFLICT (account_id, seq) DO NOTHING
), fills AS (
    INSERT INTO fills (account_id, symbol, trade_id, order_id, side, price, qty, quote_qty,
                       commission, commission_asset, is_maker, realized_pnl, traded_at, seq)
    SELECT * FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[],
        $13::numeric[], $14::numeric[], $15::numeric[], $16::numeric[], $17::text[], $18::bool[],
        $19::numeric[], $20::timestamptz[], $21::bigint[])
    ON CONFLICT (account_id, symbol, trade_id) DO NOTHING
), balances AS (
    INSERT INTO balances AS t (account_id, asset, free, locked, total, wallet_balance,
                               cross_wallet_balance, seq, updated_at)
    SELECT * FROM UNNEST($22::text[], $23::text[], $24::numeric[], $25::numeric[], $26::numeric[],
        $27::numeric[], $28::numeric[], $29::bigint[], $30::timestamptz[])
    ON CONFLICT (account_id, asset) DO UPDATE SET
        free = excluded.free, locked = excluded.locked, total = excluded.total,
        wallet_balance = excluded.wallet_balance,
        cross_wallet_balance = excluded.cross_wallet_balance,
        seq = excluded.seq, updated_at = excluded.updated_at
    WHERE t.seq < excluded.seq
), positions AS (
    INSERT INTO positions AS t (account_id, symbol, position_side, amount, entry_price,
        breakeven_price, unrealized_pnl, realized_pnl, margin_type, isolated_wallet, seq, updated_at)
    SELECT * FROM UNNEST($31::text[], $32::text[], $33::text[], $34::numeric[], $35::numeric[],
        $36::numeric[], $37::numeric[], $38::numeric[], $39::text[], $40::numeric[], $41::bigint[],
        $42::timestamptz[])
    ON CONFLICT (account_id, symbol, position_side) DO UPDATE SET
        amount = excluded.amount, entry_price = excluded.entry_price,
        breakeven_price = excluded.breakeven_price, unrealized_pnl = excluded.unrealized_pnl,
        realized_pnl = excluded.realized_pnl, margin_type = excluded.margin_type,
        isolated_wallet = excluded.isolated_wallet, seq = excluded.seq,
        updated_at = excluded.updated_at
    WHERE t.seq < excluded.seq
), orders AS (
    INSERT INTO orders AS t (account_id, symbol, order_id, client_order_id, side, order_type,
        time_in_force, status, price, stop_price, orig_qty, executed_qty, cum_quote_qty,
        created_at, updated_at, seq)
    SELECT * FROM UNNEST($43::text[], $44::text[], $45::bigint[], $46::text[], $47::text[],
        $48::text[], $49::text[], $50::text[], $51::numeric[], $52::numeric[], $53::numeric[],
        $54::numeric[], $55::numeric[], $56::timestamptz[], $57::timestamptz[], $58::bigint[])
    ON CONFLICT (account_id, symbol, order_id) DO UPDATE SET
        client_order_id = excluded.client_order_id, side = excluded.side,
        order_type = excluded.order_type, time_in_force = excluded.time_in_force,
        status = excluded.status, price = excluded.price, stop_price = excluded.stop_price,
        orig_qty = excluded.orig_qty, executed_qty = excluded.executed_qty,
        cum_quote_qty = excluded.cum_quote_qty, created_at = excluded.created_at,
        updated_at = excluded.updated_at, seq = excluded.seq
    WHERE t.seq < excluded.seq
)
SELECT 1";

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The columns of one statement: `history` rows go to the journal (and fills), `state` rows
/// (the latest change per key) to the current-state tables.
#[derive(Default)]
pub struct Columns<'a> {
    journal: Journal<'a>,
    fills: Fills<'a>,
    balances: Balances<'a>,
    positions: Positions<'a>,
    orders: Orders<'a>,
}

#[derive(Default)]
struct Journal<'a> {
    account: Vec<&'a str>,
    seq: Vec<i64>,
    kind: Vec<&'static str>,
    key: Vec<String>,
    data: Vec<&'a str>,
    source: Vec<&'static str>,
    event_time: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct Fills<'a> {
    account: Vec<&'a str>,
    symbol: Vec<&'a str>,
    trade_id: Vec<i64>,
    order_id: Vec<i64>,
    side: Vec<&'a str>,
    price: Vec<Decimal>,
    qty: Vec<Decimal>,
    quote_qty: Vec<Decimal>,
    commission: Vec<Decimal>,
    commission_asset: Vec<Option<&'a str>>,
    is_maker: Vec<bool>,
    realized_pnl: Vec<Option<Decimal>>,
    traded_at: Vec<DateTime<Utc>>,
    seq: Vec<i64>,
}

#[derive(Default)]
struct Balances<'a> {
    account: Vec<&'a str>,
    asset: Vec<&'a str>,
    free: Vec<Decimal>,
    locked: Vec<Decimal>,
    total: Vec<Decimal>,
    wallet: Vec<Option<Decimal>>,
    cross_wallet: Vec<Option<Decimal>>,
    seq: Vec<i64>,
    updated_at: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct Positions<'a> {
    account: Vec<&'a str>,
    symbol: Vec<&'a str>,
    side: Vec<&'a str>,
    amount: Vec<Decimal>,
    entry_price: Vec<Decimal>,
    breakeven_price: Vec<Decimal>,
    unrealized_pnl: Vec<Decimal>,
    realized_pnl: Vec<Decimal>,
    margin_type: Vec<&'a str>,
    isolated_wallet: Vec<Decimal>,
    seq: Vec<i64>,
    updated_at: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct Orders<'a> {
    account: Vec<&'a str>,
    symbol: Vec<&'a str>,
    order_id: Vec<i64>,
    client_order_id: Vec<&'a str>,
    side: Vec<&'a str>,
    order_type: Vec<&'a str>,
    time_in_force: Vec<&'a str>,
    status: Vec<&'static str>,
    price: Vec<Decimal>,
    stop_price: Vec<Decimal>,
    orig_qty: Vec<Decimal>,
    executed_qty: Vec<Decimal>,
    cum_quote_qty: Vec<Decimal>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    seq: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The columns of `history` (journal, fills) and `state` (current-state upserts).
    pub fn build(history: &[Row<'a>], state: &[Row<'a>]) -> anyhow::Result<Self> {
        let mut c = Columns::default();
        for &(a, ch) in history {
            c.journal.push(a, ch)?;
            if let Entity::Fill(f) = &ch.entity {
                c.fills.push(a, ch.seq, f);
            }
        }
        for &(a, ch) in state {
            match &ch.entity {
                Entity::Balance(b) => c.balances.push(a, ch.seq, b),
                Entity::Position(p) => c.positions.push(a, ch.seq, p),
                Entity::Order(o) => c.orders.push(a, ch.seq, o),
                Entity::Fill(_) | Entity::Status(_) => {}
            }
        }
        Ok(c)
    }

    /// `WRITE_SQL` with every array bound, in its parameters' order.
    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let (j, f, b, p, o) = (
            &self.journal,
            &self.fills,
            &self.balances,
            &self.positions,
            &self.orders,
        );
        sqlx::query(WRITE_SQL)
            .bind(&j.account)
            .bind(&j.seq)
            .bind(&j.kind)
            .bind(&j.key)
            .bind(&j.data)
            .bind(&j.source)
            .bind(&j.event_time)
            .bind(&f.account)
            .bind(&f.symbol)
            .bind(&f.trade_id)
            .bind(&f.order_id)
            .bind(&f.side)
            .bind(&f.price)
            .bind(&f.qty)
            .bind(&f.quote_qty)
            .bind(&f.commission)
            .bind(&f.commission_asset)
            .bind(&f.is_maker)
            .bind(&f.realized_pnl)
            .bind(&f.traded_at)
            .bind(&f.seq)
            .bind(&b.account)
            .bind(&b.asset)
            .bind(&b.free)
            .bind(&b.locked)
            .bind(&b.total)
            .bind(&b.wallet)
            .bind(&b.cross_wallet)
            .bind(&b.seq)
            .bind(&b.updated_at)
            .bind(&p.account)
            .bind(&p.symbol)
            .bind(&p.side)
            .bind(&p.amount)
            .bind(&p.entry_price)
            .bind(&p.breakeven_price)
            .bind(&p.unrealized_pnl)
            .bind(&p.realized_pnl)
            .bind(&p.margin_type)
            .bind(&p.isolated_wallet)
            .bind(&p.seq)
            .bind(&p.updated_at)
            .bind(&o.account)
            .bind(&o.symbol)
            .bind(&o.order_id)
            .bind(&o.client_order_id)
            .bind(&o.side)
            .bind(&o.order_type)
            .bind(&o.time_in_force)
            .bind(&o.status)
            .bind(&o.price)
            .bind(&o.stop_price)
            .bind(&o.orig_qty)
            .bind(&o.executed_qty)
            .bind(&o.cum_quote_qty)
            .bind(&o.created_at)
            .bind(&o.updated_at)
            .bind(&o.seq)
    }
}

impl<'a> Journal<'a> {
    fn push(&mut self, account: &'a str, c: &'a Change) -> anyhow::Result<()> {
        self.account.push(account);
        self.seq.push(c.seq);
        self.kind.push(c.kind().as_str());
        self.key.push(c.key());
        // JSON text (shared with the Redis publisher), cast to jsonb by Postgres.
        self.data.push(c.json().context("serialize change")?);
        self.source.push(c.source.as_str());
        self.event_time.push(ts(c.event_time));
        Ok(())
    }
}

impl<'a> Fills<'a> {
    fn push(&mut self, account: &'a str, seq: i64, f: &'a Fill) {
        self.account.push(account);
        self.symbol.push(&f.symbol);
        self.trade_id.push(f.trade_id);
        self.order_id.push(f.order_id);
        self.side.push(&f.side);
        self.price.push(f.price);
        self.qty.push(f.qty);
        self.quote_qty.push(f.quote_qty);
        self.commission.push(f.commission);
        self.commission_asset.push(f.commission_asset.as_deref());
        self.is_maker.push(f.is_maker);
        self.realized_pnl.push(f.realized_pnl);
        self.traded_at.push(ts(f.traded_at));
        self.seq.push(seq);
    }
}

impl<'a> Balances<'a> {
    fn push(&mut self, account: &'a str, seq: i64, b: &'a Balance) {
        self.account.push(account);
        self.asset.push(&b.asset);
        self.free.push(b.free);
        self.locked.push(b.locked);
        self.total.push(b.total);
        self.wallet.push(b.wallet_balance);
        self.cross_wallet.push(b.cross_wallet_balance);
        self.seq.push(seq);
        self.updated_at.push(ts(b.updated_at));
    }
}

impl<'a> Positions<'a> {
    fn push(&mut self, account: &'a str, seq: i64, p: &'a Position) {
        self.account.push(account);
        self.symbol.push(&p.symbol);
        self.side.push(&p.position_side);
        self.amount.push(p.amount);
        self.entry_price.push(p.entry_price);
        self.breakeven_price.push(p.breakeven_price);
        self.unrealized_pnl.push(p.unrealized_pnl);
        self.realized_pnl.push(p.realized_pnl);
        self.margin_type.push(&p.margin_type);
        self.isolated_wallet.push(p.isolated_wallet);
        self.seq.push(seq);
        self.updated_at.push(ts(p.updated_at));
    }
}

impl<'a> Orders<'a> {
    fn push(&mut self, account: &'a str, seq: i64, o: &'a Order) {
        self.account.push(account);
        self.symbol.push(&o.symbol);
        self.order_id.push(o.order_id);
        self.client_order_id.push(&o.client_order_id);
        self.side.push(&o.side);
        self.order_type.push(&o.order_type);
        self.time_in_force.push(&o.time_in_force);
        self.status.push(o.status.as_str());
        self.price.push(o.price);
        self.stop_price.push(o.stop_price);
        self.orig_qty.push(o.orig_qty);
        self.executed_qty.push(o.executed_qty);
        self.cum_quote_qty.push(o.cum_quote_qty);
        self.created_at.push(ts(o.created_at));
        self.updated_at.push(ts(o.updated_at));
        self.seq.push(seq);
    }
}
