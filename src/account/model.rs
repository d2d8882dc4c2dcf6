//! The domain model of one account: balances, positions, orders and fills.
//!
//! These types are exchange-neutral (no Binance field names): the `binance` module converts its
//! wire types into them. Every amount is a `rust_decimal::Decimal`, serialized as a JSON string;
//! field names are the Postgres column names of the contract, so the same JSON is a Redis
//! message's `data`, a Redis hash value and an `account_changes.data` row.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Exchange timestamps are milliseconds since the Unix epoch, as Binance sends them.
pub type Millis = i64;

/// Which Binance product the account trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Market {
    Spot,
    Usdm,
}

impl Market {
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::Usdm => "usdm",
        }
    }
}

impl std::str::FromStr for Market {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spot" => Ok(Market::Spot),
            "usdm" => Ok(Market::Usdm),
            other => Err(format!("must be `spot` or `usdm`, got `{other}`")),
        }
    }
}

/// One asset's balance. Spot fills `free`/`locked`/`total`; USD-M adds the wallet balances and
/// reports its available balance as `free` (`locked` 0, `total` = wallet balance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub asset: String,
    pub free: Decimal,
    pub locked: Decimal,
    pub total: Decimal,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wallet_balance: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cross_wallet_balance: Option<Decimal>,
    /// Exchange time of the update that produced this state.
    pub updated_at: Millis,
}

impl Balance {
    /// A spot balance; `total` is derived.
    pub fn spot(asset: impl Into<String>, free: Decimal, locked: Decimal, at: Millis) -> Self {
        Balance {
            asset: asset.into(),
            free,
            locked,
            total: free + locked,
            wallet_balance: None,
            cross_wallet_balance: None,
            updated_at: at,
        }
    }

    /// The same balance with every amount zero (an asset the exchange no longer lists).
    pub fn zeroed(&self, at: Millis) -> Self {
        Balance {
            asset: self.asset.clone(),
            free: Decimal::ZERO,
            locked: Decimal::ZERO,
            total: Decimal::ZERO,
            wallet_balance: self.wallet_balance.map(|_| Decimal::ZERO),
            cross_wallet_balance: self.cross_wallet_balance.map(|_| Decimal::ZERO),
            updated_at: at,
        }
    }

    /// Equal amounts, ignoring the timestamp.
    pub fn same_amounts(&self, other: &Balance) -> bool {
        self.free == other.free
            && self.locked == other.locked
            && self.total == other.total
            && self.wallet_balance == other.wallet_balance
            && self.cross_wallet_balance == other.cross_wallet_balance
    }
}

/// A USD-M position, keyed by symbol and position side (`BOTH`, `LONG`, `SHORT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: String,
    pub position_side: String,
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub breakeven_price: Decimal,
    pub unrealized_pnl: Decimal,
    pub realized_pnl: Decimal,
    pub margin_type: String,
    pub isolated_wallet: Decimal,
    pub updated_at: Millis,
}

impl Position {
    pub fn key(&self) -> String {
        format!("{}:{}", self.symbol, self.position_side)
    }

    /// A flat position (the exchange no longer lists it); realized PnL is kept.
    pub fn closed(&self, at: Millis) -> Self {
        Position {
            amount: Decimal::ZERO,
            entry_price: Decimal::ZERO,
            breakeven_price: Decimal::ZERO,
            unrealized_pnl: Decimal::ZERO,
            isolated_wallet: Decimal::ZERO,
            updated_at: at,
            ..self.clone()
        }
    }

    pub fn same_values(&self, other: &Position) -> bool {
        Position {
            updated_at: 0,
            ..self.clone()
        } == Position {
            updated_at: 0,
            ..other.clone()
        }
    }
}

/// Every order status Binance reports, Spot, USD-M and USD-M algo (conditional) orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    PendingNew,
    PartiallyFilled,
    Filled,
    Canceled,
    PendingCancel,
    Rejected,
    Expired,
    ExpiredInMatch,
    /// Algo order: trigger condition met, being sent to the matching engine.
    Triggering,
    /// Algo order: a regular order was placed in the matching engine.
    Triggered,
    /// Algo order: finished.
    Finished,
}

impl OrderStatus {
    /// A finished order never changes again and is dropped from the open-order set.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled
                | OrderStatus::Canceled
                | OrderStatus::Rejected
                | OrderStatus::Expired
                | OrderStatus::ExpiredInMatch
                | OrderStatus::Triggered
                | OrderStatus::Finished
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PendingNew => "PENDING_NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::PendingCancel => "PENDING_CANCEL",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::ExpiredInMatch => "EXPIRED_IN_MATCH",
            OrderStatus::Triggering => "TRIGGERING",
            OrderStatus::Triggered => "TRIGGERED",
            OrderStatus::Finished => "FINISHED",
        }
    }
}

/// Every execution type Binance reports (Spot `x`, USD-M `o.x`): why an order update was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionType {
    New,
    Canceled,
    Replaced,
    Rejected,
    Trade,
    Expired,
    TradePrevention,
    /// USD-M: liquidation execution.
    Calculated,
    /// USD-M: order modified.
    Amendment,
}

/// An order, open or finished. Algo (conditional) USD-M orders live in the same table with a
/// negative `order_id` (minus the algo id), so their ids cannot collide with regular orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub symbol: String,
    pub order_id: i64,
    pub client_order_id: String,
    pub side: String,
    pub order_type: String,
    pub time_in_force: String,
    pub status: OrderStatus,
    pub price: Decimal,
    pub stop_price: Decimal,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub cum_quote_qty: Decimal,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Order {
    pub fn key(&self) -> String {
        order_key(&self.symbol, self.order_id)
    }

    /// Order id used for a USD-M algo order.
    pub fn algo_order_id(algo_id: i64) -> i64 {
        -algo_id
    }

    pub fn same_values(&self, other: &Order) -> bool {
        Order {
            updated_at: 0,
            ..self.clone()
        } == Order {
            updated_at: 0,
            ..other.clone()
        }
    }
}

pub fn order_key(symbol: &str, order_id: i64) -> String {
    format!("{symbol}:{order_id}")
}

/// One trade of one of the account's orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub symbol: String,
    pub trade_id: i64,
    pub order_id: i64,
    pub side: String,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    #[serde(default)]
    pub commission_asset: Option<String>,
    pub is_maker: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub realized_pnl: Option<Decimal>,
    pub traded_at: Millis,
}

impl Fill {
    pub fn key(&self) -> String {
        format!("{}:{}", self.symbol, self.trade_id)
    }
}
