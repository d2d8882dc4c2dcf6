//! The account state the cache actor owns, as a plain struct with pure methods.
//!
//! `apply` turns one update into the changes it really makes: nothing for duplicates, for
//! values the cache already holds, or for updates older than what it holds (per-entity exchange
//! time; an order's filled quantity never goes down; a finished order never reopens). Finished
//! orders leave the in-memory open set, and fills are remembered only by a bounded window of
//! hashed keys, so memory does not grow with history.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use rust_decimal::Decimal;
use serde::Serialize;

use super::change::{Change, Entity, Source, StatusEvent};
use super::model::{Balance, Fill, Market, Millis, Order, OrderStatus, Position};
use super::update::{BalancePatch, Snapshot, Update};

/// How many finished orders and fills are remembered to reject replays.
pub const RECENT_WINDOW: usize = 100_000;

/// Why updates were dropped, counted for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// The update held values the cache already had.
    pub unchanged: u64,
    /// The update was older than what the cache holds.
    pub stale: u64,
    /// A fill seen before, or an update of a finished order.
    pub duplicate: u64,
}

/// The cache's view for readers: `/v1/account` and the Redis resync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    pub account_id: String,
    pub market: Market,
    /// The seq of the last change reflected here.
    pub seq: i64,
    pub balances: BTreeMap<String, Balance>,
    pub positions: BTreeMap<String, Position>,
    pub open_orders: BTreeMap<String, Order>,
}

/// A bounded set of recently seen keys (stored as 64-bit hashes), oldest forgotten first.
#[derive(Debug)]
struct RecentSet {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl RecentSet {
    fn new(cap: usize) -> Self {
        RecentSet {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn hash(symbol: &str, id: i64) -> u64 {
        let mut h = DefaultHasher::new();
        symbol.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    }

    fn contains(&self, symbol: &str, id: i64) -> bool {
        self.set.contains(&Self::hash(symbol, id))
    }

    /// Returns false when the key was already there.
    fn insert(&mut self, symbol: &str, id: i64) -> bool {
        let h = Self::hash(symbol, id);
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The in-memory account.
#[derive(Debug)]
pub struct AccountState {
    account_id: String,
    market: Market,
    last_seq: i64,
    balances: BTreeMap<String, Balance>,
    positions: BTreeMap<String, Position>,
    open_orders: BTreeMap<String, Order>,
    finished_orders: RecentSet,
    fills: RecentSet,
    drops: Drops,
}

impl AccountState {
    /// An empty account whose first change will carry `first_seq`.
    pub fn new(account_id: impl Into<String>, market: Market, first_seq: i64) -> Self {
        AccountState {
            account_id: account_id.into(),
            market,
            last_seq: first_seq - 1,
            balances: BTreeMap::new(),
            positions: BTreeMap::new(),
            open_orders: BTreeMap::new(),
            finished_orders: RecentSet::new(RECENT_WINDOW),
            fills: RecentSet::new(RECENT_WINDOW),
            drops: Drops::default(),
        }
    }

    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    pub fn drops(&self) -> Drops {
        self.drops
    }

    pub fn open_order_count(&self) -> usize {
        self.open_orders.len()
    }

    pub fn view(&self) -> AccountView {
        AccountView {
            account_id: self.account_id.clone(),
            market: self.market,
            seq: self.last_seq,
            balances: self.balances.clone(),
            positions: self.positions.clone(),
            open_orders: self.open_orders.clone(),
        }
    }

    /// Applies one update; `event_time` is the exchange's event time (ignored for snapshots,
    /// which carry their own). Returns the changes it made, numbered.
    pub fn apply(&mut self, event_time: Millis, update: Update) -> Vec<Change> {
        let mut out = Emitter {
            changes: Vec::new(),
            seq: self.last_seq,
            event_time,
            source: Source::Stream,
        };
        match update {
            Update::Balances(patches) => {
                for p in patches {
                    apply_balance(&mut self.balances, &mut self.drops, p, &mut out);
                }
            }
            Update::Positions(positions) => {
                for p in positions {
                    apply_position(&mut self.positions, &mut self.drops, p, false, &mut out);
                }
            }
            Update::Order { order, fill } => {
                self.apply_order(order, &mut out);
                if let Some(fill) = fill {
                    self.apply_fill(fill, &mut out);
                }
            }
            Update::Fill(fill) => self.apply_fill(fill, &mut out),
            Update::Snapshot(snapshot) => {
                out.source = Source::Snapshot;
                out.event_time = snapshot.as_of;
                self.apply_snapshot(snapshot, &mut out);
            }
            Update::Status { event, detail } => {
                out.emit(Entity::Status(StatusEvent { event, detail }));
            }
        }
        self.last_seq = out.seq;
        out.changes
    }

    fn apply_order(&mut self, order: Order, out: &mut Emitter) {
        let key = order.key();
        if self.finished_orders.contains(&order.symbol, order.order_id) {
            self.drops.duplicate += 1;
            return;
        }
        if let Some(held) = self.open_orders.get(&key) {
            let older = order.executed_qty < held.executed_qty
                || (order.executed_qty == held.executed_qty && order.updated_at < held.updated_at);
            if older {
                self.drops.stale += 1;
                return;
            }
            if order.same_values(held) {
                self.drops.unchanged += 1;
                return;
            }
        }
        if order.status.is_final() {
            self.open_orders.remove(&key);
            self.finished_orders.insert(&order.symbol, order.order_id);
        } else {
            self.open_orders.insert(key, order.clone());
        }
        out.emit(Entity::Order(order));
    }

    fn apply_fill(&mut self, fill: Fill, out: &mut Emitter) {
        if !self.fills.insert(&fill.symbol, fill.trade_id) {
            self.drops.duplicate += 1;
            return;
        }
        out.emit(Entity::Fill(fill));
    }

    fn apply_snapshot(&mut self, snap: Snapshot, out: &mut Emitter) {
        let as_of = snap.as_of;
        // Balances: the listed ones as given, every other cached one is zero.
        let listed: HashSet<&str> = snap.balances.iter().map(|b| b.asset.as_str()).collect();
        let vanished: Vec<Balance> = self
            .balances
            .values()
            .filter(|b| !listed.contains(b.asset.as_str()) && b.updated_at <= as_of)
            .map(|b| b.zeroed(as_of))
            .collect();
        for b in snap.balances.into_iter().chain(vanished) {
            let patch = BalancePatch {
                asset: b.asset,
                free: Some(b.free),
                locked: Some(b.locked),
                wallet_balance: b.wallet_balance,
                cross_wallet_balance: b.cross_wallet_balance,
                updated_at: b.updated_at,
            };
            apply_balance(&mut self.balances, &mut self.drops, patch, out);
        }

        if let Some(positions) = snap.positions {
            let listed: HashSet<String> = positions.iter().map(Position::key).collect();
            let closed: Vec<Position> = self
                .positions
                .iter()
                .filter(|(k, p)| {
                    !listed.contains(*k) && p.amount != Decimal::ZERO && p.updated_at <= as_of
                })
                .map(|(_, p)| p.closed(as_of))
                .collect();
            for p in positions.into_iter().chain(closed) {
                apply_position(&mut self.positions, &mut self.drops, p, true, out);
            }
        }

        let listed: HashSet<String> = snap.orders.iter().map(Order::key).collect();
        let unresolved: HashSet<&str> = snap.unresolved_orders.iter().map(String::as_str).collect();
        let vanished: Vec<Order> = self
            .open_orders
            .iter()
            .filter(|(k, o)| {
                !listed.contains(*k) && !unresolved.contains(k.as_str()) && o.updated_at <= as_of
            })
            .map(|(_, o)| o.clone())
            .collect();
        for order in snap.orders {
            self.apply_order(order, out);
        }
        for mut order in vanished {
            tracing::warn!(
                order = %order.key(),
                "open order vanished from the snapshot without a final state; marking it EXPIRED"
            );
            order.status = OrderStatus::Expired;
            order.updated_at = as_of;
            self.apply_order(order, out);
        }
        for fill in snap.fills {
            self.apply_fill(fill, out);
        }
    }
}

/// Numbers changes as they are made.
struct Emitter {
    changes: Vec<Change>,
    seq: i64,
    event_time: Millis,
    source: Source,
}

impl Emitter {
    fn emit(&mut self, entity: Entity) {
        self.seq += 1;
        self.changes.push(Change {
            seq: self.seq,
            source: self.source,
            event_time: self.event_time,
            entity,
        });
    }
}

fn apply_balance(
    balances: &mut BTreeMap<String, Balance>,
    drops: &mut Drops,
    p: BalancePatch,
    out: &mut Emitter,
) {
    let held = balances.get(&p.asset);
    if let Some(held) = held
        && p.updated_at < held.updated_at
    {
        drops.stale += 1;
        return;
    }
    let base = held.cloned();
    let free = p.free.or(base.as_ref().map(|b| b.free)).unwrap_or_default();
    let locked = p
        .locked
        .or(base.as_ref().map(|b| b.locked))
        .unwrap_or_default();
    let wallet_balance = p
        .wallet_balance
        .or(base.as_ref().and_then(|b| b.wallet_balance));
    let cross_wallet_balance = p
        .cross_wallet_balance
        .or(base.as_ref().and_then(|b| b.cross_wallet_balance));
    let next = Balance {
        total: wallet_balance.unwrap_or(free + locked),
        asset: p.asset,
        free,
        locked,
        wallet_balance,
        cross_wallet_balance,
        updated_at: p.updated_at,
    };
    if let Some(held) = base.as_ref()
        && held.same_amounts(&next)
    {
        drops.unchanged += 1;
        return;
    }
    if base.is_none() && next.total.is_zero() && next.free.is_zero() {
        // A zero balance the cache never held changes nothing.
        drops.unchanged += 1;
        return;
    }
    balances.insert(next.asset.clone(), next.clone());
    out.emit(Entity::Balance(next));
}

fn apply_position(
    positions: &mut BTreeMap<String, Position>,
    drops: &mut Drops,
    mut p: Position,
    from_snapshot: bool,
    out: &mut Emitter,
) {
    let key = p.key();
    if let Some(held) = positions.get(&key) {
        if p.updated_at < held.updated_at {
            drops.stale += 1;
            return;
        }
        if from_snapshot {
            // REST does not report accumulated realized PnL nor (v3) the margin type.
            p.realized_pnl = held.realized_pnl;
            if p.margin_type.is_empty() {
                p.margin_type = held.margin_type.clone();
            }
        }
        if p.same_values(held) {
            drops.unchanged += 1;
            return;
        }
    } else if p.amount.is_zero() && from_snapshot {
        drops.unchanged += 1;
        return;
    }
    positions.insert(key, p.clone());
    out.emit(Entity::Position(p));
}
