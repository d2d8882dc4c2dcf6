//! What enters the cache: exchange-neutral updates, made by the `binance` module from its wire
//! types (and by tests directly).

use rust_decimal::Decimal;

use super::model::{Balance, Fill, Millis, Order, Position};

/// New values for some fields of one asset's balance; `None` keeps what the cache holds.
/// Spot's `outboundAccountPosition` sets `free`/`locked`; USD-M's `ACCOUNT_UPDATE` sets the
/// wallet balances, REST sets all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancePatch {
    pub asset: String,
    pub free: Option<Decimal>,
    pub locked: Option<Decimal>,
    pub wallet_balance: Option<Decimal>,
    pub cross_wallet_balance: Option<Decimal>,
    pub updated_at: Millis,
}

/// A REST snapshot of the whole account, applied as differences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The exchange time at which the snapshot was requested: an entity the cache updated after
    /// it is newer than the snapshot and left alone.
    pub as_of: Millis,
    /// Every non-zero balance; a cached asset missing here is zero.
    pub balances: Vec<Balance>,
    /// Every open position (USD-M); `None` for markets without positions.
    pub positions: Option<Vec<Position>>,
    /// Every open order, plus the final state of orders that left the open set since the cache
    /// last saw them.
    pub orders: Vec<Order>,
    /// Cached open orders whose fate could not be learned: left as they are.
    pub unresolved_orders: Vec<String>,
    /// The cached open orders the snapshot was taken against (the cache's view when it
    /// started): only these can be judged vanished. An order the cache learned later (the
    /// stream lags the exchange) was never looked up and is left alone. `None`: every cached
    /// open order is judged.
    pub checked_orders: Option<Vec<String>>,
    /// Trades the stream may have missed (fetched for orders whose filled quantity grew).
    pub fills: Vec<Fill>,
}

/// One update of the account. Order updates are the common case and are kept inline (boxing
/// them would allocate per event).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Balances(Vec<BalancePatch>),
    Positions(Vec<Position>),
    Order {
        order: Order,
        fill: Option<Fill>,
    },
    Fill(Fill),
    Snapshot(Snapshot),
    /// A state transition of the stream (connected, disconnected, resynced, ...).
    Status {
        event: String,
        detail: Option<String>,
    },
}
