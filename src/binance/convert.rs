//! Binance frames and REST bodies → domain values (`account::Update`, `Order`, `Fill`, ...).
//!
//! The stream task hands every text frame to `parse_spot_frame` / `parse_usdm_frame` and every
//! REST body to the matching function here. Nothing in this module can panic on input: every
//! access is checked, every arithmetic is `checked_*`, and every failure is a `ParseError`
//! whose message is serde's (never the frame itself, which the caller may log truncated).

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::wire;
use crate::account::{Balance, BalancePatch, Fill, Millis, Order, OrderStatus, Position, Update};

/// What one text frame contained.
#[derive(Debug)]
pub enum Frame {
    /// A state update for the cache, with the exchange event time `E`.
    Update {
        event_time: Millis,
        update: Update,
        event_type: &'static str,
    },
    /// Several state updates from one event (USD-M `ACCOUNT_UPDATE`: balances first, then
    /// positions), all with the event time `E`. Apply them in order.
    Updates {
        event_time: Millis,
        updates: Vec<Update>,
        event_type: &'static str,
    },
    /// An event that carries no state for the cache: `balanceUpdate` / `externalLockUpdate`
    /// deltas (the next `outboundAccountPosition` carries the absolute value, so they are NOT
    /// applied), `listStatus`, `MARGIN_CALL`, `ACCOUNT_CONFIG_UPDATE`, `STRATEGY_UPDATE`,
    /// `GRID_UPDATE`, `CONDITIONAL_ORDER_TRIGGER_REJECT`, `TRADE_LITE` (its fill is reported
    /// again, with commission, by the `ORDER_TRADE_UPDATE` of the same trade, which is the one
    /// recorded). Counted by type.
    Info { event_type: &'static str },
    /// Spot: the subscription ended (`eventStreamTerminated`): resubscribe.
    StreamTerminated,
    /// Spot: `serverShutdown`: open a new connection now.
    ServerShutdown,
    /// `listenKeyExpired`: new key + reconnect.
    ListenKeyExpired,
    /// A WS API response to a request we sent.
    Response {
        id: Option<String>,
        status: u16,
        result: Option<Value>,
        error: Option<ApiError>,
    },
    /// An event type this code does not know: counted and logged at debug, never fatal.
    Unknown { event_type: String },
}

/// Binance's error body `{"code":-1022,"msg":"..."}` (REST), or a WS API response's `error`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, thiserror::Error)]
#[error("Binance error {code}: {msg}")]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The serde message (or what is wrong), never the frame itself.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> ParseError {
    ParseError::Malformed(msg.into())
}

/// The event types, as `&'static str` for `Frame`'s `event_type`.
mod ev {
    pub const OUTBOUND_ACCOUNT_POSITION: &str = "outboundAccountPosition";
    pub const BALANCE_UPDATE: &str = "balanceUpdate";
    pub const EXTERNAL_LOCK_UPDATE: &str = "externalLockUpdate";
    pub const EXECUTION_REPORT: &str = "executionReport";
    pub const LIST_STATUS: &str = "listStatus";
    pub const EVENT_STREAM_TERMINATED: &str = "eventStreamTerminated";
    pub const SERVER_SHUTDOWN: &str = "serverShutdown";
    pub const LISTEN_KEY_EXPIRED: &str = "listenKeyExpired";

    pub const ACCOUNT_UPDATE: &str = "ACCOUNT_UPDATE";
    pub const ORDER_TRADE_UPDATE: &str = "ORDER_TRADE_UPDATE";
    pub const TRADE_LITE: &str = "TRADE_LITE";
    pub const ALGO_UPDATE: &str = "ALGO_UPDATE";
    pub const MARGIN_CALL: &str = "MARGIN_CALL";
    pub const ACCOUNT_CONFIG_UPDATE: &str = "ACCOUNT_CONFIG_UPDATE";
    pub const STRATEGY_UPDATE: &str = "STRATEGY_UPDATE";
    pub const GRID_UPDATE: &str = "GRID_UPDATE";
    pub const CONDITIONAL_ORDER_TRIGGER_REJECT: &str = "CONDITIONAL_ORDER_TRIGGER_REJECT";
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// One text frame of the Spot WS API user-data subscription: an event wrapped as
/// `{"subscriptionId":N,"event":{...}}` (or the unwrapped legacy form), or a WS API response.
pub fn parse_spot_frame(text: &str) -> Result<Frame, ParseError> {
    let mut obj = parse_object(text)?;
    if let Some(event) = obj.remove("event") {
        return spot_event(into_object(event, "`event`")?);
    }
    if obj.contains_key("e") {
        return spot_event(obj);
    }
    if obj.contains_key("status") {
        return response(obj);
    }
    Err(malformed(
        "neither an event (`e`/`event`) nor a response (`status`)",
    ))
}

/// One text frame of the USD-M user-data stream: a raw event, the combined-stream form
/// `{"stream":..,"data":{...}}`, or a WS API response.
pub fn parse_usdm_frame(text: &str) -> Result<Frame, ParseError> {
    let mut obj = parse_object(text)?;
    if obj.contains_key("stream")
        && let Some(data) = obj.remove("data")
    {
        obj = into_object(data, "`data`")?;
    }
    if obj.contains_key("e") {
        return usdm_event(obj);
    }
    if obj.contains_key("status") {
        return response(obj);
    }
    Err(malformed(
        "neither an event (`e`) nor a response (`status`)",
    ))
}

fn parse_object(text: &str) -> Result<Map<String, Value>, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    into_object(value, "frame")
}

fn into_object(value: Value, what: &str) -> Result<Map<String, Value>, ParseError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(malformed(format!("{what} is not a JSON object"))),
    }
}

/// Deserialize one event object into its wire type; the message names the event type.
fn event<T: DeserializeOwned>(obj: Map<String, Value>, event_type: &str) -> Result<T, ParseError> {
    serde_json::from_value(Value::Object(obj)).map_err(|e| malformed(format!("{event_type}: {e}")))
}

fn event_name(obj: &Map<String, Value>) -> Result<String, ParseError> {
    match obj.get("e") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(malformed("event type `e` is missing or not a string")),
    }
}

fn response(obj: Map<String, Value>) -> Result<Frame, ParseError> {
    let w: wire::WsApiResponse = event(obj, "WS API response")?;
    let id = match w.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok(Frame::Response {
        id,
        status: w.status,
        result: w.result,
        error: w.error,
    })
}

fn spot_event(obj: Map<String, Value>) -> Result<Frame, ParseError> {
    let name = event_name(&obj)?;
    match name.as_str() {
        ev::OUTBOUND_ACCOUNT_POSITION => {
            let w: wire::OutboundAccountPosition = event(obj, ev::OUTBOUND_ACCOUNT_POSITION)?;
            let at = w.last_update;
            let patches = w
                .balances
                .into_iter()
                .map(|b| BalancePatch {
                    asset: b.asset,
                    free: Some(b.free),
                    locked: Some(b.locked),
                    wallet_balance: None,
                    cross_wallet_balance: None,
                    updated_at: at,
                })
                .collect();
            Ok(Frame::Update {
                event_time: w.event_time,
                update: Update::Balances(patches),
                event_type: ev::OUTBOUND_ACCOUNT_POSITION,
            })
        }
        ev::EXECUTION_REPORT => {
            let w: wire::ExecutionReport = event(obj, ev::EXECUTION_REPORT)?;
            let event_time = w.event_time;
            let (order, fill) = execution_report(w)?;
            Ok(Frame::Update {
                event_time,
                update: Update::Order { order, fill },
                event_type: ev::EXECUTION_REPORT,
            })
        }
        ev::BALANCE_UPDATE => {
            let _: wire::BalanceDelta = event(obj, ev::BALANCE_UPDATE)?;
            Ok(Frame::Info {
                event_type: ev::BALANCE_UPDATE,
            })
        }
        ev::EXTERNAL_LOCK_UPDATE => {
            let _: wire::BalanceDelta = event(obj, ev::EXTERNAL_LOCK_UPDATE)?;
            Ok(Frame::Info {
                event_type: ev::EXTERNAL_LOCK_UPDATE,
            })
        }
        ev::LIST_STATUS => {
            let _: wire::ListStatus = event(obj, ev::LIST_STATUS)?;
            Ok(Frame::Info {
                event_type: ev::LIST_STATUS,
            })
        }
        ev::EVENT_STREAM_TERMINATED => {
            let _: wire::StreamEvent = event(obj, ev::EVENT_STREAM_TERMINATED)?;
            Ok(Frame::StreamTerminated)
        }
        ev::SERVER_SHUTDOWN => {
            let _: wire::StreamEvent = event(obj, ev::SERVER_SHUTDOWN)?;
            Ok(Frame::ServerShutdown)
        }
        ev::LISTEN_KEY_EXPIRED => {
            let _: wire::ListenKeyExpired = event(obj, ev::LISTEN_KEY_EXPIRED)?;
            Ok(Frame::ListenKeyExpired)
        }
        _ => Ok(Frame::Unknown { event_type: name }),
    }
}

fn usdm_event(obj: Map<String, Value>) -> Result<Frame, ParseError> {
    let name = event_name(&obj)?;
    let info = |event_type| Ok(Frame::Info { event_type });
    match name.as_str() {
        ev::ACCOUNT_UPDATE => {
            let w: wire::AccountUpdate = event(obj, ev::ACCOUNT_UPDATE)?;
            Ok(Frame::Updates {
                event_time: w.event_time,
                updates: account_update(w),
                event_type: ev::ACCOUNT_UPDATE,
            })
        }
        ev::ORDER_TRADE_UPDATE => {
            let w: wire::OrderTradeUpdate = event(obj, ev::ORDER_TRADE_UPDATE)?;
            let event_time = w.event_time;
            let (order, fill) = futures_order_update(w.order)?;
            Ok(Frame::Update {
                event_time,
                update: Update::Order { order, fill },
                event_type: ev::ORDER_TRADE_UPDATE,
            })
        }
        ev::ALGO_UPDATE => {
            let w: wire::AlgoUpdate = event(obj, ev::ALGO_UPDATE)?;
            let event_time = w.event_time;
            let order = algo_order_update(w.order, w.transaction_time)?;
            Ok(Frame::Update {
                event_time,
                update: Update::Order { order, fill: None },
                event_type: ev::ALGO_UPDATE,
            })
        }
        ev::TRADE_LITE => {
            let _: wire::TradeLite = event(obj, ev::TRADE_LITE)?;
            info(ev::TRADE_LITE)
        }
        ev::MARGIN_CALL => {
            let _: wire::MarginCall = event(obj, ev::MARGIN_CALL)?;
            info(ev::MARGIN_CALL)
        }
        ev::ACCOUNT_CONFIG_UPDATE => {
            let _: wire::AccountConfigUpdate = event(obj, ev::ACCOUNT_CONFIG_UPDATE)?;
            info(ev::ACCOUNT_CONFIG_UPDATE)
        }
        ev::STRATEGY_UPDATE => {
            let _: wire::StrategyUpdate = event(obj, ev::STRATEGY_UPDATE)?;
            info(ev::STRATEGY_UPDATE)
        }
        ev::GRID_UPDATE => {
            let _: wire::GridUpdate = event(obj, ev::GRID_UPDATE)?;
            info(ev::GRID_UPDATE)
        }
        ev::CONDITIONAL_ORDER_TRIGGER_REJECT => {
            let _: wire::ConditionalOrderTriggerReject =
                event(obj, ev::CONDITIONAL_ORDER_TRIGGER_REJECT)?;
            info(ev::CONDITIONAL_ORDER_TRIGGER_REJECT)
        }
        ev::LISTEN_KEY_EXPIRED => {
            let _: wire::ListenKeyExpired = event(obj, ev::LISTEN_KEY_EXPIRED)?;
            Ok(Frame::ListenKeyExpired)
        }
        _ => Ok(Frame::Unknown { event_type: name }),
    }
}

// ---------------------------------------------------------------------------------------------
// Event conversions
// ---------------------------------------------------------------------------------------------

const ORDER_STATUSES: [OrderStatus; 12] = [
    OrderStatus::New,
    OrderStatus::PendingNew,
    OrderStatus::PartiallyFilled,
    OrderStatus::Filled,
    OrderStatus::Canceled,
    OrderStatus::PendingCancel,
    OrderStatus::Rejected,
    OrderStatus::Expired,
    OrderStatus::ExpiredInMatch,
    OrderStatus::Triggering,
    OrderStatus::Triggered,
    OrderStatus::Finished,
];

/// Binance's status string → `OrderStatus`; an unknown status is an error (the order's state
/// would be unknowable).
fn order_status(s: &str) -> Result<OrderStatus, ParseError> {
    ORDER_STATUSES
        .iter()
        .copied()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| malformed(format!("unknown order status {s:?}")))
}

fn mul(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, ParseError> {
    a.checked_mul(b)
        .ok_or_else(|| malformed(format!("{what}: decimal overflow")))
}

/// `isolated` / `cross`, whatever the case; `CROSSED` is `cross`.
fn margin_type(mt: &str) -> String {
    let lower = mt.to_ascii_lowercase();
    if lower == "crossed" {
        "cross".to_owned()
    } else {
        lower
    }
}

fn execution_report(w: wire::ExecutionReport) -> Result<(Order, Option<Fill>), ParseError> {
    let status = order_status(&w.status)?;
    // On a cancel `c` is the cancel request's id and `C` the original client order id.
    let client_order_id = match w.orig_client_order_id {
        Some(orig) if !orig.is_empty() => orig,
        _ => w.client_order_id,
    };
    let fill = (w.execution_type == "TRADE" && w.trade_id >= 0).then(|| Fill {
        symbol: w.symbol.clone(),
        trade_id: w.trade_id,
        order_id: w.order_id,
        side: w.side.clone(),
        price: w.last_price,
        qty: w.last_qty,
        quote_qty: w.last_quote_qty,
        commission: w.commission,
        commission_asset: w.commission_asset,
        is_maker: w.is_maker,
        realized_pnl: None,
        traded_at: w.transaction_time,
    });
    let order = Order {
        symbol: w.symbol,
        order_id: w.order_id,
        client_order_id,
        side: w.side,
        order_type: w.order_type,
        time_in_force: w.time_in_force,
        status,
        price: w.price,
        stop_price: w.stop_price,
        orig_qty: w.orig_qty,
        executed_qty: w.cum_qty,
        cum_quote_qty: w.cum_quote_qty,
        created_at: w.created_at,
        updated_at: w.transaction_time,
    };
    Ok((order, fill))
}

/// Balances first (if any), then positions (if `P` is present and non-empty). A missing `P`
/// (cross funding fee) means "no position changed", never "no positions".
fn account_update(w: wire::AccountUpdate) -> Vec<Update> {
    let at = w.transaction_time;
    let mut updates = Vec::with_capacity(2);
    if !w.data.balances.is_empty() {
        updates.push(Update::Balances(
            w.data
                .balances
                .into_iter()
                .map(|b| BalancePatch {
                    asset: b.asset,
                    free: None,
                    locked: None,
                    wallet_balance: Some(b.wallet_balance),
                    cross_wallet_balance: Some(b.cross_wallet_balance),
                    updated_at: at,
                })
                .collect(),
        ));
    }
    if let Some(positions) = w.data.positions
        && !positions.is_empty()
    {
        updates.push(Update::Positions(
            positions
                .into_iter()
                .map(|p| Position {
                    symbol: p.symbol,
                    position_side: p.position_side,
                    amount: p.amount,
                    entry_price: p.entry_price,
                    breakeven_price: p.breakeven_price,
                    unrealized_pnl: p.unrealized_pnl,
                    realized_pnl: p.accumulated_realized,
                    margin_type: margin_type(&p.margin_type),
                    isolated_wallet: p.isolated_wallet,
                    updated_at: at,
                })
                .collect(),
        ));
    }
    updates
}

fn futures_order_update(o: wire::FuturesOrderUpdate) -> Result<(Order, Option<Fill>), ParseError> {
    let status = order_status(&o.status)?;
    // USD-M sends no cumulative quote quantity: average price × filled quantity.
    let cum_quote_qty = mul(o.avg_price, o.cum_qty, "ap × z")?;
    let fill = if o.execution_type == "TRADE" {
        Some(Fill {
            symbol: o.symbol.clone(),
            trade_id: o.trade_id,
            order_id: o.order_id,
            side: o.side.clone(),
            price: o.last_price,
            qty: o.last_qty,
            quote_qty: mul(o.last_price, o.last_qty, "L × l")?,
            commission: o.commission.unwrap_or(Decimal::ZERO),
            commission_asset: o.commission_asset,
            is_maker: o.is_maker,
            realized_pnl: Some(o.realized_profit),
            traded_at: o.trade_time,
        })
    } else {
        None
    };
    let order = Order {
        symbol: o.symbol,
        order_id: o.order_id,
        client_order_id: o.client_order_id,
        side: o.side,
        order_type: o.order_type,
        time_in_force: o.time_in_force,
        status,
        price: o.price,
        stop_price: o.stop_price,
        orig_qty: o.orig_qty,
        executed_qty: o.cum_qty,
        cum_quote_qty,
        // The event does not carry the creation time; the cache keeps its first-seen value.
        created_at: o.trade_time,
        updated_at: o.trade_time,
    };
    Ok((order, fill))
}

fn algo_order_update(o: wire::AlgoOrderUpdate, at: Millis) -> Result<Order, ParseError> {
    let executed_qty = o.executed_qty.unwrap_or(Decimal::ZERO);
    let avg_price = o.avg_price.unwrap_or(Decimal::ZERO);
    Ok(Order {
        symbol: o.symbol,
        order_id: Order::algo_order_id(o.algo_id),
        client_order_id: o.client_algo_id,
        side: o.side,
        order_type: o.order_type,
        time_in_force: o.time_in_force,
        status: order_status(&o.status)?,
        price: o.price.unwrap_or(Decimal::ZERO),
        stop_price: o.trigger_price.unwrap_or(Decimal::ZERO),
        orig_qty: o.quantity.unwrap_or(Decimal::ZERO),
        executed_qty,
        cum_quote_qty: mul(avg_price, executed_qty, "ap × aq")?,
        created_at: at,
        updated_at: at,
    })
}

// ---------------------------------------------------------------------------------------------
// REST bodies
// ---------------------------------------------------------------------------------------------

fn body<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, ParseError> {
    serde_json::from_str(text).map_err(|e| malformed(format!("{what}: {e}")))
}

/// `GET /api/v3/account` → (`updateTime`, non-zero balances).
pub fn spot_account(body_text: &str) -> Result<(Millis, Vec<Balance>), ParseError> {
    let w: wire::SpotAccount = body(body_text, "GET /api/v3/account")?;
    let at = w.update_time;
    let mut balances = Vec::with_capacity(w.balances.len());
    for b in w.balances {
        if b.free.is_zero() && b.locked.is_zero() {
            continue;
        }
        // `Balance::spot` adds the two: refuse amounts whose sum overflows.
        if b.free.checked_add(b.locked).is_none() {
            return Err(malformed(format!(
                "balance of {}: decimal overflow",
                b.asset
            )));
        }
        balances.push(Balance::spot(b.asset, b.free, b.locked, at));
    }
    Ok((at, balances))
}

fn spot_rest_order(o: wire::SpotRestOrder) -> Result<Order, ParseError> {
    Ok(Order {
        status: order_status(&o.status)?,
        symbol: o.symbol,
        order_id: o.order_id,
        client_order_id: o.client_order_id,
        side: o.side,
        order_type: o.order_type,
        time_in_force: o.time_in_force,
        price: o.price,
        stop_price: o.stop_price.unwrap_or(Decimal::ZERO),
        orig_qty: o.orig_qty,
        executed_qty: o.executed_qty,
        cum_quote_qty: o.cumulative_quote_qty,
        created_at: o.time,
        updated_at: o.update_time,
    })
}

/// `GET /api/v3/openOrders`.
pub fn spot_orders(body_text: &str) -> Result<Vec<Order>, ParseError> {
    let w: Vec<wire::SpotRestOrder> = body(body_text, "GET /api/v3/openOrders")?;
    w.into_iter().map(spot_rest_order).collect()
}

/// `GET /api/v3/order`.
pub fn spot_order(body_text: &str) -> Result<Order, ParseError> {
    spot_rest_order(body(body_text, "GET /api/v3/order")?)
}

/// `GET /api/v3/myTrades`: side = BUY if `isBuyer` else SELL; no realized PnL on Spot.
pub fn spot_trades(body_text: &str) -> Result<Vec<Fill>, ParseError> {
    let w: Vec<wire::SpotRestTrade> = body(body_text, "GET /api/v3/myTrades")?;
    Ok(w.into_iter()
        .map(|t| Fill {
            symbol: t.symbol,
            trade_id: t.id,
            order_id: t.order_id,
            side: if t.is_buyer { "BUY" } else { "SELL" }.to_owned(),
            price: t.price,
            qty: t.qty,
            quote_qty: t.quote_qty,
            commission: t.commission,
            commission_asset: t.commission_asset,
            is_maker: t.is_maker,
            realized_pnl: None,
            traded_at: t.time,
        })
        .collect())
}

/// `GET /fapi/v3/account` → one balance per asset with a non-zero wallet balance: `free` =
/// available balance, `locked` 0, `total` = wallet balance.
pub fn usdm_account(body_text: &str) -> Result<Vec<Balance>, ParseError> {
    let w: wire::UsdmAccount = body(body_text, "GET /fapi/v3/account")?;
    Ok(w.assets
        .into_iter()
        .filter(|a| !a.wallet_balance.is_zero())
        .map(|a| Balance {
            asset: a.asset,
            free: a.available_balance,
            locked: Decimal::ZERO,
            total: a.wallet_balance,
            wallet_balance: Some(a.wallet_balance),
            cross_wallet_balance: Some(a.cross_wallet_balance),
            updated_at: a.update_time,
        })
        .collect())
}

/// `GET /fapi/v3/positionRisk` → non-zero positions. REST reports neither the realized PnL nor
/// the margin type: they are 0 and `""` here, and the cache keeps its own.
pub fn usdm_positions(body_text: &str) -> Result<Vec<Position>, ParseError> {
    let w: Vec<wire::UsdmPositionRisk> = body(body_text, "GET /fapi/v3/positionRisk")?;
    Ok(w.into_iter()
        .filter(|p| !p.position_amt.is_zero())
        .map(|p| Position {
            symbol: p.symbol,
            position_side: p.position_side,
            amount: p.position_amt,
            entry_price: p.entry_price,
            breakeven_price: p.break_even_price,
            unrealized_pnl: p.unrealized_profit,
            realized_pnl: Decimal::ZERO,
            margin_type: String::new(),
            isolated_wallet: p.isolated_wallet,
            updated_at: p.update_time,
        })
        .collect())
}

fn usdm_rest_order(o: wire::UsdmRestOrder) -> Result<Order, ParseError> {
    Ok(Order {
        status: order_status(&o.status)?,
        symbol: o.symbol,
        order_id: o.order_id,
        client_order_id: o.client_order_id,
        side: o.side,
        order_type: o.order_type,
        time_in_force: o.time_in_force,
        price: o.price,
        stop_price: o.stop_price.unwrap_or(Decimal::ZERO),
        orig_qty: o.orig_qty,
        executed_qty: o.executed_qty,
        cum_quote_qty: o.cum_quote,
        created_at: o.time,
        updated_at: o.update_time,
    })
}

/// `GET /fapi/v1/openOrders`.
pub fn usdm_orders(body_text: &str) -> Result<Vec<Order>, ParseError> {
    let w: Vec<wire::UsdmRestOrder> = body(body_text, "GET /fapi/v1/openOrders")?;
    w.into_iter().map(usdm_rest_order).collect()
}

/// `GET /fapi/v1/order`.
pub fn usdm_order(body_text: &str) -> Result<Order, ParseError> {
    usdm_rest_order(body(body_text, "GET /fapi/v1/order")?)
}

/// `GET /fapi/v1/openAlgoOrders`: order id = `Order::algo_order_id(algoId)` (negative).
pub fn usdm_algo_orders(body_text: &str) -> Result<Vec<Order>, ParseError> {
    let w: Vec<wire::UsdmRestAlgoOrder> = body(body_text, "GET /fapi/v1/openAlgoOrders")?;
    w.into_iter()
        .map(|o| {
            Ok(Order {
                status: order_status(&o.algo_status)?,
                symbol: o.symbol,
                order_id: Order::algo_order_id(o.algo_id),
                client_order_id: o.client_algo_id,
                side: o.side,
                order_type: o.order_type,
                time_in_force: o.time_in_force,
                price: o.price.unwrap_or(Decimal::ZERO),
                stop_price: o.trigger_price.unwrap_or(Decimal::ZERO),
                orig_qty: o.quantity.unwrap_or(Decimal::ZERO),
                executed_qty: Decimal::ZERO,
                cum_quote_qty: Decimal::ZERO,
                created_at: o.create_time,
                updated_at: o.update_time,
            })
        })
        .collect()
}

/// `GET /fapi/v1/userTrades`.
pub fn usdm_trades(body_text: &str) -> Result<Vec<Fill>, ParseError> {
    let w: Vec<wire::UsdmRestTrade> = body(body_text, "GET /fapi/v1/userTrades")?;
    Ok(w.into_iter()
        .map(|t| Fill {
            symbol: t.symbol,
            trade_id: t.id,
            order_id: t.order_id,
            side: t.side,
            price: t.price,
            qty: t.qty,
            quote_qty: t.quote_qty,
            commission: t.commission,
            commission_asset: t.commission_asset,
            is_maker: t.maker,
            realized_pnl: Some(t.realized_pnl),
            traded_at: t.time,
        })
        .collect())
}

/// `GET /api/v3/time`, `GET /fapi/v1/time` → `serverTime`.
pub fn server_time(body_text: &str) -> Result<Millis, ParseError> {
    let w: wire::ServerTime = body(body_text, "server time")?;
    Ok(w.server_time)
}

/// `POST /fapi/v1/listenKey` → the key.
pub fn listen_key(body_text: &str) -> Result<String, ParseError> {
    let w: wire::ListenKey = body(body_text, "listenKey")?;
    Ok(w.listen_key)
}

/// Binance's error body `{"code":..,"msg":..}`, if the body is one.
pub fn api_error(body_text: &str) -> Option<ApiError> {
    serde_json::from_str(body_text).ok()
}
