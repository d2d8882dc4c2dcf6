//! Binance frames and REST bodies → domain values (`account::Update`, `Order`, `Fill`, ...).
//!
//! The stream task hands every text frame to `parse_spot_frame` / `parse_usdm_frame` and every
//! REST body to the matching function here. Nothing in this module can panic on input: every
//! access is checked, every arithmetic is `checked_*`, and every failure is a `ParseError`
//! whose message is serde's (never the frame itself, which the caller may log truncated).

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::wire;
use crate::account::{Balance, BalancePatch, Fill, Millis, Order, OrderStatus, Position, Update};

/// What one text frame contained.
// Order updates are the common case and are kept inline, as in `Update` (boxing would allocate
// per event).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Frame {
    /// A state update for the cache, with the exchange event time `E`.
    Update {
        event_time: Millis,
        update: Update,
        event_type: &'static str,
    },
    /// Several state updates from one event (USD-M `ACCOUNT_UPDATE`: balances first, then
    /// positions), all with the event time `E`. Apply them in order. Empty lists are left out,
    /// so `updates` itself is empty for an `ACCOUNT_UPDATE` with no balance and no position.
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

/// Every USD-M user-data event type the daemon handles, spelled as in the events' `e` field
/// (SPEC §2.2): the default of `binance.usdm_events`, Binance's allow list for the stream.
pub const USDM_EVENT_TYPES: [&str; 10] = [
    ev::ACCOUNT_UPDATE,
    ev::ORDER_TRADE_UPDATE,
    ev::TRADE_LITE,
    ev::ALGO_UPDATE,
    ev::MARGIN_CALL,
    ev::ACCOUNT_CONFIG_UPDATE,
    ev::STRATEGY_UPDATE,
    ev::GRID_UPDATE,
    ev::CONDITIONAL_ORDER_TRIGGER_REJECT,
    ev::LISTEN_KEY_EXPIRED,
];

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// One text frame of the Spot WS API user-data subscription: an event wrapped as
/// `{"subscriptionId":N,"event":{...}}` (or the unwrapped legacy form), or a WS API response.
pub fn parse_spot_frame(text: &str) -> Result<Frame, ParseError> {
    if let Some(name) = leading_event_type(text) {
        return spot_event(name, text);
    }
    // Fast path for the WS API wrapper as Binance lays it out; anything else (or an error,
    // reported by the full path) goes through the envelope.
    if let Some(inner) = wrapped_event(text)
        && let Some(name) = leading_event_type(inner)
        && let Ok(frame) = spot_event(name, inner)
    {
        return Ok(frame);
    }
    let outer = envelope(text)?;
    // `{"event":…}` (the WS API wrapper, `subscriptionId` or not) or the legacy stream envelope
    // `{"stream":…,"data":…}` (SPEC §5a).
    let inner = outer
        .event
        .or_else(|| outer.data.filter(|_| outer.stream.is_some()));
    if let Some(event) = inner {
        return match event_type(event.get())? {
            Some(name) => spot_event(&name, event.get()),
            None => Err(malformed("the wrapped event has no event type `e`")),
        };
    }
    if let Some(name) = outer.e {
        return spot_event(&name, text);
    }
    if outer.status.is_some() {
        return response(text);
    }
    Err(malformed(
        "neither an event (`e`/`event`) nor a response (`status`)",
    ))
}

/// Where a Spot WebSocket API frame goes: to a subscription's session (which parses it), or to
/// the connection itself (answers to its requests, `serverShutdown`, events without an id).
#[derive(Debug)]
pub enum SpotRoute {
    Subscription(u64),
    Frame(Box<Frame>),
    Malformed,
}

/// Routes a Spot frame, reading only the envelope when `subscriptionId` leads it (Binance's
/// layout).
pub fn spot_route(text: &str) -> SpotRoute {
    if let Some(id) = leading_subscription_id(text) {
        return SpotRoute::Subscription(id);
    }
    if let Ok(outer) = envelope(text)
        && let (Some(id), Some(_)) = (outer.subscription_id, outer.event)
    {
        return SpotRoute::Subscription(id);
    }
    match parse_spot_frame(text) {
        Ok(f) => SpotRoute::Frame(Box::new(f)),
        Err(_) => SpotRoute::Malformed,
    }
}

/// `N` of a frame that starts `{"subscriptionId":N,`.
fn leading_subscription_id(text: &str) -> Option<u64> {
    let rest = text.trim_start().strip_prefix(r#"{"subscriptionId":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    if !rest[end..].starts_with(',') {
        return None;
    }
    rest[..end].parse().ok()
}

/// One text frame of the USD-M user-data stream: a raw event, the combined-stream form
/// `{"stream":..,"data":{...}}`, or a WS API response.
pub fn parse_usdm_frame(text: &str) -> Result<Frame, ParseError> {
    if let Some(name) = leading_event_type(text) {
        return usdm_event(name, text);
    }
    let outer = envelope(text)?;
    if outer.stream.is_some()
        && let Some(data) = outer.data
    {
        return match event_type(data.get())? {
            Some(name) => usdm_event(&name, data.get()),
            None => Err(malformed("`data` has no event type `e`")),
        };
    }
    if let Some(name) = outer.e {
        return usdm_event(&name, text);
    }
    if outer.status.is_some() {
        return response(text);
    }
    Err(malformed(
        "neither an event (`e`) nor a response (`status`)",
    ))
}

/// The few keys that say what a frame is; everything else is skipped without being built,
/// so a frame is tokenized here and deserialized once, straight into its wire type.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "subscriptionId", default)]
    subscription_id: Option<u64>,
    #[serde(borrow, default)]
    e: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    stream: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    status: Option<serde::de::IgnoredAny>,
}

fn envelope(text: &str) -> Result<Envelope<'_>, ParseError> {
    serde_json::from_str(text).map_err(|e| malformed(e.to_string()))
}

/// The event type of an event object. Binance puts `"e"` first, so that case is read without
/// scanning the object; any other layout takes the full envelope parse.
fn event_type(raw: &str) -> Result<Option<std::borrow::Cow<'_, str>>, ParseError> {
    match leading_event_type(raw) {
        Some(name) => Ok(Some(std::borrow::Cow::Borrowed(name))),
        None => Ok(envelope(raw)?.e),
    }
}

/// The `{...}` of `{"subscriptionId":N,"event":{...}}` when the frame has exactly that layout.
fn wrapped_event(text: &str) -> Option<&str> {
    let rest = text.trim().strip_prefix(r#"{"subscriptionId":"#)?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let inner = rest.strip_prefix(r#","event":"#)?.strip_suffix('}')?;
    inner.starts_with('{').then_some(inner)
}

/// `"e"` when it is the object's first key (Binance's layout), without scanning further.
fn leading_event_type(raw: &str) -> Option<&str> {
    let rest = raw.trim_start().strip_prefix(r#"{"e":""#)?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    (!name.contains('\\')).then_some(name)
}

/// Deserialize one event into its wire type; the message names the event type.
fn event<T: DeserializeOwned>(raw: &str, event_type: &str) -> Result<T, ParseError> {
    serde_json::from_str(raw).map_err(|e| malformed(format!("{event_type}: {e}")))
}

fn response(raw: &str) -> Result<Frame, ParseError> {
    let w: wire::WsApiResponse = event(raw, "WS API response")?;
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

fn spot_event(name: &str, obj: &str) -> Result<Frame, ParseError> {
    match name {
        ev::OUTBOUND_ACCOUNT_POSITION => {
            let w: wire::OutboundAccountPosition = event(obj, ev::OUTBOUND_ACCOUNT_POSITION)?;
            let at = w.last_update;
            // A spot balance is never negative: such a frame is malformed, not a state.
            if let Some(b) = w
                .balances
                .iter()
                .find(|b| b.free.is_sign_negative() || b.locked.is_sign_negative())
            {
                return Err(malformed(format!("balance of {}: negative", b.asset)));
            }
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
        _ => Ok(Frame::Unknown {
            event_type: name.to_owned(),
        }),
    }
}

fn usdm_event(name: &str, obj: &str) -> Result<Frame, ParseError> {
    let info = |event_type| Ok(Frame::Info { event_type });
    match name {
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
        _ => Ok(Frame::Unknown {
            event_type: name.to_owned(),
        }),
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
                    // Without `bep` (older payloads) the entry price is the best value known
                    // until the next REST snapshot brings Binance's own.
                    breakeven_price: p.breakeven_price.unwrap_or(p.entry_price),
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

fn rest_order(o: wire::RestOrder) -> Result<Order, ParseError> {
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

fn rest_orders(body_text: &str, what: &str) -> Result<Vec<Order>, ParseError> {
    let w: Vec<wire::RestOrder> = body(body_text, what)?;
    w.into_iter().map(rest_order).collect()
}

/// `GET /api/v3/openOrders` (and `allOrders`).
pub fn spot_orders(body_text: &str) -> Result<Vec<Order>, ParseError> {
    rest_orders(body_text, "GET /api/v3/openOrders")
}

/// `GET /api/v3/order`.
pub fn spot_order(body_text: &str) -> Result<Order, ParseError> {
    rest_order(body(body_text, "GET /api/v3/order")?)
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
        // An asset can have no wallet balance and still an available one (multi-assets mode,
        // credits such as BNFCR: SPEC §5a): keep it, or its `free` would be zeroed.
        .filter(|a| {
            !(a.wallet_balance.is_zero()
                && a.available_balance.is_zero()
                && a.cross_wallet_balance.is_zero())
        })
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

/// `GET /fapi/v1/openOrders` (and `allOrders`).
pub fn usdm_orders(body_text: &str) -> Result<Vec<Order>, ParseError> {
    rest_orders(body_text, "GET /fapi/v1/openOrders")
}

/// `GET /fapi/v1/order`.
pub fn usdm_order(body_text: &str) -> Result<Order, ParseError> {
    rest_order(body(body_text, "GET /fapi/v1/order")?)
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

/// exchangeInfo → the REQUEST_WEIGHT limit per minute, if it publishes one (other symbols and
/// fields are skipped unread).
pub fn request_weight_limit(body_text: &str) -> Option<u32> {
    let w: wire::ExchangeLimits = serde_json::from_str(body_text).ok()?;
    w.rate_limits
        .iter()
        .find(|l| l.kind == "REQUEST_WEIGHT" && l.interval == "MINUTE" && l.interval_num == 1)
        .map(|l| l.limit)
}

/// Binance's error body `{"code":..,"msg":..}`, if the body is one.
pub fn api_error(body_text: &str) -> Option<ApiError> {
    serde_json::from_str(body_text).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::Map;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/binance")
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(fixture_dir().join(name)).expect("read fixture")
    }

    /// The WS API request we send to subscribe (only checked for shape).
    #[derive(Debug, serde::Deserialize)]
    struct WsApiRequest {
        id: String,
        method: String,
        params: Map<String, Value>,
    }

    /// What a fixture parsed into.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug)]
    enum Parsed {
        Frame(Frame),
        Balances(Millis, Vec<Balance>),
        Orders(Vec<Order>),
        Positions(Vec<Position>),
        Request(WsApiRequest),
    }

    fn parse_fixture(name: &str, text: &str) -> Result<Parsed, String> {
        let e = |e: ParseError| format!("{name}: {e}");
        let frame = |f: Frame| match f {
            Frame::Unknown { event_type } => Err(format!("{name}: unknown event {event_type}")),
            f => Ok(Parsed::Frame(f)),
        };
        if name.starts_with("spot_rest_GET_api_v3_account") {
            let (at, b) = spot_account(text).map_err(e)?;
            Ok(Parsed::Balances(at, b))
        } else if name.starts_with("spot_rest_GET_api_v3_openOrders") {
            Ok(Parsed::Orders(spot_orders(text).map_err(e)?))
        } else if name.starts_with("usdm_rest_GET_fapi_v1_openOrders") {
            Ok(Parsed::Orders(usdm_orders(text).map_err(e)?))
        } else if name.starts_with("usdm_rest_GET_fapi_v3_positionRisk") {
            Ok(Parsed::Positions(usdm_positions(text).map_err(e)?))
        } else if name.contains("_rest_") {
            Err(format!("{name}: REST fixture with no matching function"))
        } else if name.starts_with("spot_wsapi_") && name.contains("request") {
            serde_json::from_str::<WsApiRequest>(text)
                .map(Parsed::Request)
                .map_err(|err| format!("{name}: {err}"))
        } else if name.starts_with("spot_") {
            frame(parse_spot_frame(text).map_err(e)?)
        } else if name.starts_with("usdm_") || name.starts_with("coinm_") {
            frame(parse_usdm_frame(text).map_err(e)?)
        } else {
            Err(format!("{name}: fixture not handled"))
        }
    }

    fn all_fixtures() -> BTreeMap<String, Parsed> {
        let mut out = BTreeMap::new();
        let mut failures = Vec::new();
        for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            if !path.is_file() {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned();
            let text = std::fs::read_to_string(&path).expect("read fixture");
            match parse_fixture(&name, &text) {
                Ok(p) => {
                    out.insert(name, p);
                }
                Err(msg) => failures.push(msg),
            }
        }
        assert!(failures.is_empty(), "fixtures not handled: {failures:#?}");
        assert!(out.len() >= 28, "expected every fixture, got {}", out.len());
        out
    }

    fn frame<'a>(all: &'a BTreeMap<String, Parsed>, name: &str) -> &'a Frame {
        match all.get(name) {
            Some(Parsed::Frame(f)) => f,
            other => panic!("{name}: not a frame: {other:?}"),
        }
    }

    fn info(all: &BTreeMap<String, Parsed>, name: &str) -> &'static str {
        match frame(all, name) {
            Frame::Info { event_type } => event_type,
            other => panic!("{name}: expected Info, got {other:?}"),
        }
    }

    #[test]
    fn fast_paths_parse_exactly_like_the_full_path() {
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let parse = if name.starts_with("spot_") {
                parse_spot_frame
            } else if name.starts_with("usdm_") || name.starts_with("coinm_") {
                parse_usdm_frame
            } else {
                continue;
            };
            if name.contains("_rest_") || name.contains("request") {
                continue;
            }
            let pretty = std::fs::read_to_string(&path).unwrap();
            // The compact form (Binance's layout) takes the fast paths, the pretty one the envelope.
            let compact =
                serde_json::to_string(&serde_json::from_str::<Value>(&pretty).unwrap()).unwrap();
            let a = format!("{:?}", parse(&pretty));
            let b = format!("{:?}", parse(&compact));
            assert_eq!(a, b, "{name}");
        }
        // A wrapper with an extra key still parses (through the envelope).
        let extra = r#"{"subscriptionId":3,"event":{"e":"serverShutdown","E":1},"x":1}"#;
        assert!(matches!(parse_spot_frame(extra), Ok(Frame::ServerShutdown)));
        let escaped = r#"{"e":"server\u0053hutdown","E":1}"#;
        assert!(matches!(
            parse_spot_frame(escaped),
            Ok(Frame::ServerShutdown)
        ));
    }

    #[test]
    fn every_fixture_parses_into_the_right_domain_values() {
        let all = all_fixtures();

        // Spot executionReport (wrapped and legacy): order 4293153 NEW, no fill.
        for name in [
            "spot_executionReport.json",
            "spot_executionReport_legacy_unwrapped.json",
        ] {
            let Frame::Update {
                event_time,
                update: Update::Order { order, fill },
                event_type,
            } = frame(&all, name)
            else {
                panic!("{name}: expected an order update");
            };
            assert_eq!(*event_time, 1499405658658);
            assert_eq!(*event_type, "executionReport");
            assert_eq!(
                *order,
                Order {
                    symbol: "ETHBTC".into(),
                    order_id: 4293153,
                    client_order_id: "mUvoqJxFIILMdfAW5iGSOW".into(),
                    side: "BUY".into(),
                    order_type: "LIMIT".into(),
                    time_in_force: "GTC".into(),
                    status: OrderStatus::New,
                    price: d("0.10264410"),
                    stop_price: Decimal::ZERO,
                    orig_qty: d("1"),
                    executed_qty: Decimal::ZERO,
                    cum_quote_qty: Decimal::ZERO,
                    created_at: 1499405658657,
                    updated_at: 1499405658657,
                }
            );
            assert!(fill.is_none());
        }

        // outboundAccountPosition: absolute free/locked, updated_at = `u`.
        let Frame::Update {
            event_time,
            update: Update::Balances(patches),
            ..
        } = frame(&all, "spot_outboundAccountPosition_wsapi_event_format.json")
        else {
            panic!("expected balances");
        };
        assert_eq!(*event_time, 1728972148778);
        assert_eq!(
            patches[1],
            BalancePatch {
                asset: "USDT".into(),
                free: Some(d("10580")),
                locked: Some(d("70")),
                wallet_balance: None,
                cross_wallet_balance: None,
                updated_at: 1728972148778,
            }
        );
        let Frame::Update {
            update: Update::Balances(patches),
            ..
        } = frame(&all, "spot_outboundAccountPosition.json")
        else {
            panic!("expected balances");
        };
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].updated_at, 1564034571073);

        assert_eq!(info(&all, "spot_balanceUpdate.json"), "balanceUpdate");
        assert_eq!(
            info(&all, "spot_externalLockUpdate.json"),
            "externalLockUpdate"
        );
        assert_eq!(info(&all, "spot_listStatus.json"), "listStatus");
        assert!(matches!(
            frame(&all, "spot_eventStreamTerminated.json"),
            Frame::StreamTerminated
        ));
        assert!(matches!(
            frame(&all, "spot_serverShutdown.json"),
            Frame::ServerShutdown
        ));
        assert!(matches!(
            frame(&all, "spot_listenKeyExpired.json"),
            Frame::ListenKeyExpired
        ));
        assert!(matches!(
            frame(&all, "usdm_listenKeyExpired.json"),
            Frame::ListenKeyExpired
        ));

        // USD-M ACCOUNT_UPDATE: 2 balance patches, then 3 positions.
        let Frame::Updates {
            event_time,
            updates,
            event_type,
        } = frame(&all, "usdm_ACCOUNT_UPDATE.json")
        else {
            panic!("expected Updates");
        };
        assert_eq!(
            (*event_time, *event_type),
            (1564745798939, "ACCOUNT_UPDATE")
        );
        let [Update::Balances(b), Update::Positions(p)] = updates.as_slice() else {
            panic!("expected balances then positions: {updates:?}");
        };
        assert_eq!(
            *b,
            vec![
                BalancePatch {
                    asset: "USDT".into(),
                    free: None,
                    locked: None,
                    wallet_balance: Some(d("122624.12345678")),
                    cross_wallet_balance: Some(d("100.12345678")),
                    updated_at: 1564745798938,
                },
                BalancePatch {
                    asset: "BUSD".into(),
                    free: None,
                    locked: None,
                    wallet_balance: Some(d("1.00000000")),
                    cross_wallet_balance: Some(Decimal::ZERO),
                    updated_at: 1564745798938,
                },
            ]
        );
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2],
            Position {
                symbol: "BTCUSDT".into(),
                position_side: "SHORT".into(),
                amount: d("-10"),
                entry_price: d("6563.86000"),
                breakeven_price: d("6563.6"),
                unrealized_pnl: d("-1423.15600"),
                realized_pnl: d("-45.04000000"),
                margin_type: "isolated".into(),
                isolated_wallet: d("6570.42511771"),
                updated_at: 1564745798938,
            }
        );
        assert_eq!(p[0].realized_pnl, d("200"));
        assert_eq!(p[1].entry_price.to_string(), "6563.66500");

        // COIN-M ACCOUNT_UPDATE has the same shape (+ account alias).
        let Frame::Updates { updates, .. } = frame(&all, "coinm_ACCOUNT_UPDATE.json") else {
            panic!("expected Updates");
        };
        assert_eq!(updates.len(), 2);

        // ORDER_TRADE_UPDATE NEW: no fill, cum quote = ap × z = 0, times = o.T.
        for name in [
            "usdm_ORDER_TRADE_UPDATE.json",
            "coinm_ORDER_TRADE_UPDATE.json",
        ] {
            let Frame::Update {
                update: Update::Order { order, fill },
                ..
            } = frame(&all, name)
            else {
                panic!("{name}: expected an order update");
            };
            assert!(fill.is_none());
            assert_eq!(order.status, OrderStatus::New);
            assert_eq!(order.order_type, "TRAILING_STOP_MARKET");
            assert_eq!(order.cum_quote_qty, Decimal::ZERO);
            assert_eq!(order.created_at, order.updated_at);
        }
        let Frame::Update {
            update: Update::Order { order, .. },
            ..
        } = frame(&all, "usdm_ORDER_TRADE_UPDATE.json")
        else {
            unreachable!()
        };
        assert_eq!(
            (
                order.order_id,
                order.stop_price,
                order.orig_qty,
                order.updated_at
            ),
            (8886774, d("7103.04"), d("0.001"), 1568879465650)
        );

        // ALGO_UPDATE: negative order id, client algo id, trigger price as stop price.
        let Frame::Update {
            event_time,
            update: Update::Order { order, fill },
            event_type,
        } = frame(&all, "usdm_ALGO_UPDATE.json")
        else {
            panic!("expected an algo order update");
        };
        assert_eq!((*event_time, *event_type), (1750515742303, "ALGO_UPDATE"));
        assert!(fill.is_none());
        assert_eq!(order.order_id, -2148719);
        assert_eq!(order.client_order_id, "Q5xaq5EGKgXXa0fD7fs0Ip");
        assert_eq!(order.status, OrderStatus::Canceled);
        assert_eq!((order.stop_price, order.price), (d("750"), d("750")));
        assert_eq!(
            (order.orig_qty, order.executed_qty),
            (d("0.01"), Decimal::ZERO)
        );
        assert_eq!(
            (order.created_at, order.updated_at),
            (1750515742297, 1750515742297)
        );

        assert_eq!(info(&all, "usdm_TRADE_LITE.json"), "TRADE_LITE");
        assert_eq!(info(&all, "usdm_MARGIN_CALL.json"), "MARGIN_CALL");
        assert_eq!(
            info(&all, "usdm_ACCOUNT_CONFIG_UPDATE.json"),
            "ACCOUNT_CONFIG_UPDATE"
        );
        assert_eq!(
            info(&all, "usdm_ACCOUNT_CONFIG_UPDATE_ai.json"),
            "ACCOUNT_CONFIG_UPDATE"
        );
        assert_eq!(info(&all, "usdm_STRATEGY_UPDATE.json"), "STRATEGY_UPDATE");
        assert_eq!(info(&all, "usdm_GRID_UPDATE.json"), "GRID_UPDATE");
        assert_eq!(
            info(&all, "usdm_CONDITIONAL_ORDER_TRIGGER_REJECT.json"),
            "CONDITIONAL_ORDER_TRIGGER_REJECT"
        );

        // REST.
        let Some(Parsed::Balances(at, balances)) = all.get("spot_rest_GET_api_v3_account.json")
        else {
            panic!("spot account");
        };
        assert_eq!(*at, 123456789);
        assert_eq!(
            balances[0],
            Balance::spot("BTC", d("4723846.89208129"), Decimal::ZERO, 123456789)
        );
        assert_eq!(balances.len(), 2);
        let Some(Parsed::Orders(orders)) = all.get("spot_rest_GET_api_v3_openOrders.json") else {
            panic!("spot orders");
        };
        assert_eq!(
            orders[0],
            Order {
                symbol: "LTCBTC".into(),
                order_id: 1,
                client_order_id: "myOrder1".into(),
                side: "BUY".into(),
                order_type: "LIMIT".into(),
                time_in_force: "GTC".into(),
                status: OrderStatus::New,
                price: d("0.1"),
                stop_price: Decimal::ZERO,
                orig_qty: d("1.0"),
                executed_qty: Decimal::ZERO,
                cum_quote_qty: Decimal::ZERO,
                created_at: 1499827319559,
                updated_at: 1499827319559,
            }
        );
        let Some(Parsed::Orders(orders)) = all.get("usdm_rest_GET_fapi_v1_openOrders.json") else {
            panic!("usdm orders");
        };
        assert_eq!(
            (orders[0].order_id, orders[0].stop_price, orders[0].orig_qty),
            (1917641, d("9300"), d("0.40"))
        );
        assert_eq!(orders[0].order_type, "TRAILING_STOP_MARKET");
        let Some(Parsed::Positions(positions)) =
            all.get("usdm_rest_GET_fapi_v3_positionRisk_oneway.json")
        else {
            panic!("usdm positions");
        };
        assert_eq!(
            positions[0],
            Position {
                symbol: "ADAUSDT".into(),
                position_side: "BOTH".into(),
                amount: d("30"),
                entry_price: d("0.385"),
                breakeven_price: d("0.385077"),
                unrealized_pnl: d("0.76427700"),
                realized_pnl: Decimal::ZERO,
                margin_type: String::new(),
                isolated_wallet: Decimal::ZERO,
                updated_at: 1720736417660,
            }
        );
        let Some(Parsed::Request(req)) =
            all.get("spot_wsapi_userDataStream.subscribe.signature_request.json")
        else {
            panic!("request");
        };
        assert_eq!(req.method, "userDataStream.subscribe.signature");
        assert!(!req.id.is_empty() && req.params.contains_key("signature"));
    }

    fn with_event(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut v: Value = serde_json::from_str(&fixture(name)).expect("fixture json");
        let target = match v.get_mut("event") {
            Some(Value::Object(_)) => v.get_mut("event"),
            _ => Some(&mut v),
        };
        let Some(Value::Object(obj)) = target else {
            panic!("{name}: not an object")
        };
        edit(obj);
        v.to_string()
    }

    fn set(obj: &mut Map<String, Value>, pairs: &[(&str, Value)]) {
        for (k, v) in pairs {
            obj.insert((*k).to_owned(), v.clone());
        }
    }

    #[test]
    fn spot_trade_yields_an_exact_fill() {
        let text = with_event("spot_executionReport.json", |o| {
            set(
                o,
                &[
                    ("x", "TRADE".into()),
                    ("X", "PARTIALLY_FILLED".into()),
                    ("l", "0.30000000".into()),
                    ("z", "0.40000000".into()),
                    ("L", "0.10264410".into()),
                    ("Y", "0.03079323".into()),
                    ("Z", "0.04105764".into()),
                    ("n", "0.00030000".into()),
                    ("N", "ETH".into()),
                    ("t", 77.into()),
                    ("m", true.into()),
                    ("T", 1499405658700_i64.into()),
                ],
            )
        });
        let Frame::Update {
            update: Update::Order { order, fill },
            ..
        } = parse_spot_frame(&text).expect("parse")
        else {
            panic!("expected an order update");
        };
        assert_eq!(order.status, OrderStatus::PartiallyFilled);
        assert_eq!(order.executed_qty, d("0.4"));
        assert_eq!(order.cum_quote_qty, d("0.04105764"));
        assert_eq!(order.updated_at, 1499405658700);
        assert_eq!(
            fill,
            Some(Fill {
                symbol: "ETHBTC".into(),
                trade_id: 77,
                order_id: 4293153,
                side: "BUY".into(),
                price: d("0.10264410"),
                qty: d("0.3"),
                quote_qty: d("0.03079323"),
                commission: d("0.0003"),
                commission_asset: Some("ETH".into()),
                is_maker: true,
                realized_pnl: None,
                traded_at: 1499405658700,
            })
        );

        // A TRADE with t = -1 carries no fill.
        let text = with_event("spot_executionReport.json", |o| {
            set(o, &[("x", "TRADE".into()), ("t", (-1).into())])
        });
        let Frame::Update {
            update: Update::Order { fill, .. },
            ..
        } = parse_spot_frame(&text).expect("parse")
        else {
            panic!("expected an order update");
        };
        assert!(fill.is_none());
    }

    #[test]
    fn spot_cancel_uses_the_original_client_order_id() {
        let text = with_event("spot_executionReport.json", |o| {
            set(
                o,
                &[
                    ("x", "CANCELED".into()),
                    ("X", "CANCELED".into()),
                    ("c", "cancelRequest42".into()),
                    ("C", "myOriginalId".into()),
                ],
            )
        });
        let Frame::Update {
            update: Update::Order { order, fill },
            ..
        } = parse_spot_frame(&text).expect("parse")
        else {
            panic!("expected an order update");
        };
        assert_eq!(order.client_order_id, "myOriginalId");
        assert_eq!(order.status, OrderStatus::Canceled);
        assert!(fill.is_none());
    }

    #[test]
    fn usdm_trade_yields_a_fill_with_pnl_and_products() {
        let mut v: Value =
            serde_json::from_str(&fixture("usdm_ORDER_TRADE_UPDATE.json")).expect("json");
        let o = v.get_mut("o").and_then(Value::as_object_mut).expect("o");
        set(
            o,
            &[
                ("x", "TRADE".into()),
                ("X", "PARTIALLY_FILLED".into()),
                ("o", "LIMIT".into()),
                ("ap", "7100.50".into()),
                ("z", "0.003".into()),
                ("l", "0.002".into()),
                ("L", "7100.25".into()),
                ("n", "0.00568020".into()),
                ("t", 991.into()),
                ("rp", "1.25".into()),
                ("m", true.into()),
            ],
        );
        o.remove("N");
        // Combined-stream wrapping.
        let text = serde_json::json!({"stream": "abc", "data": v}).to_string();
        let Frame::Update {
            update: Update::Order { order, fill },
            ..
        } = parse_usdm_frame(&text).expect("parse")
        else {
            panic!("expected an order update");
        };
        assert_eq!(order.cum_quote_qty, d("21.3015"));
        let fill = fill.expect("fill");
        assert_eq!(fill.quote_qty, d("14.2005"));
        assert_eq!(fill.commission, d("0.0056802"));
        assert_eq!(fill.commission_asset, None);
        assert_eq!(fill.realized_pnl, Some(d("1.25")));
        assert_eq!((fill.trade_id, fill.traded_at), (991, 1568879465650));

        // No `n` at all: commission 0.
        let o = v.get_mut("o").and_then(Value::as_object_mut).expect("o");
        o.remove("n");
        let Frame::Update {
            update: Update::Order { fill, .. },
            ..
        } = parse_usdm_frame(&v.to_string()).expect("parse")
        else {
            panic!("expected an order update");
        };
        assert_eq!(fill.expect("fill").commission, Decimal::ZERO);
    }

    #[test]
    fn usdm_account_update_without_positions_and_crossed_margin() {
        let text = r#"{"e":"ACCOUNT_UPDATE","E":2,"T":1,"a":{"m":"FUNDING_FEE",
            "B":[{"a":"USDT","wb":"10","cw":"9","bc":"0"}]}}"#;
        let Frame::Updates { updates, .. } = parse_usdm_frame(text).expect("parse") else {
            panic!("expected Updates");
        };
        assert!(matches!(updates.as_slice(), [Update::Balances(_)]));

        let text = r#"{"e":"ACCOUNT_UPDATE","E":2,"T":1,"a":{"m":"ORDER","B":[],
            "P":[{"s":"X","pa":"1","ep":"2","bep":"2","cr":"0","up":"0","mt":"CROSSED",
            "iw":"0","ps":"BOTH"}]}}"#;
        let Frame::Updates { updates, .. } = parse_usdm_frame(text).expect("parse") else {
            panic!("expected Updates");
        };
        let [Update::Positions(p)] = updates.as_slice() else {
            panic!("expected positions only: {updates:?}");
        };
        assert_eq!(p[0].margin_type, "cross");
    }

    #[test]
    fn listen_key_expired_accepts_string_event_time() {
        let text = r#"{"e":"listenKeyExpired","E":"1736996475556","listenKey":"k"}"#;
        assert!(matches!(
            parse_usdm_frame(text),
            Ok(Frame::ListenKeyExpired)
        ));
    }

    #[test]
    fn ws_api_responses() {
        let ok = r#"{"id":"abc","status":200,"result":{"subscriptionId":0},"rateLimits":[]}"#;
        let Frame::Response {
            id,
            status,
            result,
            error,
        } = parse_spot_frame(ok).expect("parse")
        else {
            panic!("expected a response");
        };
        assert_eq!((id.as_deref(), status), (Some("abc"), 200));
        assert_eq!(result, Some(serde_json::json!({"subscriptionId": 0})));
        assert!(error.is_none());

        let err = r#"{"id":7,"status":400,"error":{"code":-1022,"msg":"Signature invalid."}}"#;
        let Frame::Response {
            id, status, error, ..
        } = parse_spot_frame(err).expect("parse")
        else {
            panic!("expected a response");
        };
        assert_eq!((id.as_deref(), status), (Some("7"), 400));
        assert_eq!(
            error,
            Some(ApiError {
                code: -1022,
                msg: "Signature invalid.".into()
            })
        );
    }

    #[test]
    fn rest_bodies_without_fixtures() {
        let trades = r#"[{"symbol":"BNBBTC","id":28457,"orderId":100234,"orderListId":-1,
            "price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
            "commission":"10.10000000","commissionAsset":"BNB","time":1499865549590,
            "isBuyer":true,"isMaker":false,"isBestMatch":true}]"#;
        let f = spot_trades(trades).expect("spot trades");
        assert_eq!(f[0].side, "BUY");
        assert_eq!(f[0].quote_qty, d("48.000012"));
        assert_eq!(f[0].realized_pnl, None);

        let trades = r#"[{"buyer":false,"commission":"-0.07819010","commissionAsset":"USDT",
            "id":698759,"maker":false,"orderId":25851813,"price":"7819.01","qty":"0.002",
            "quoteQty":"15.63802","realizedPnl":"-0.91539999","side":"SELL",
            "positionSide":"SHORT","symbol":"BTCUSDT","time":1569514978020}]"#;
        let f = usdm_trades(trades).expect("usdm trades");
        assert_eq!(f[0].realized_pnl, Some(d("-0.91539999")));
        assert_eq!(f[0].commission, d("-0.0781901"));

        let account = r#"{"totalWalletBalance":"103.1","assets":[
            {"asset":"USDT","walletBalance":"103.12345678","unrealizedProfit":"0",
             "marginBalance":"103.12345678","maintMargin":"0","initialMargin":"0",
             "positionInitialMargin":"0","openOrderInitialMargin":"0",
             "crossWalletBalance":"103.12345678","crossUnPnl":"0",
             "availableBalance":"100.5","maxWithdrawAmount":"100.5","updateTime":1625474304765},
            {"asset":"BUSD","walletBalance":"0.00000000","crossWalletBalance":"0",
             "availableBalance":"0","updateTime":0}],
            "positions":[{"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"1.000",
             "unrealizedProfit":"0","isolatedMargin":"0","notional":"0","isolatedWallet":"0",
             "initialMargin":"0","maintMargin":"0","updateTime":0}]}"#;
        let b = usdm_account(account).expect("usdm account");
        assert_eq!(
            b,
            vec![Balance {
                asset: "USDT".into(),
                free: d("100.5"),
                locked: Decimal::ZERO,
                total: d("103.12345678"),
                wallet_balance: Some(d("103.12345678")),
                cross_wallet_balance: Some(d("103.12345678")),
                updated_at: 1625474304765,
            }]
        );

        let algo = r#"[{"algoId":2146760,"clientAlgoId":"6B2I9XVcJpCjqPAJ4YoFX7",
            "algoType":"CONDITIONAL","orderType":"TAKE_PROFIT","symbol":"BNBUSDT","side":"SELL",
            "positionSide":"BOTH","timeInForce":"GTC","quantity":"0.01","algoStatus":"NEW",
            "triggerPrice":"750.000","price":"750.000","icebergQuantity":null,
            "selfTradePreventionMode":"EXPIRE_MAKER","workingType":"CONTRACT_PRICE",
            "priceMatch":"NONE","closePosition":false,"priceProtect":false,"reduceOnly":false,
            "createTime":1750485492076,"updateTime":1750485492076,"triggerTime":0,
            "goodTillDate":0}]"#;
        let o = usdm_algo_orders(algo).expect("algo orders");
        assert_eq!(o[0].order_id, -2146760);
        assert_eq!(o[0].client_order_id, "6B2I9XVcJpCjqPAJ4YoFX7");
        assert_eq!((o[0].stop_price, o[0].orig_qty), (d("750"), d("0.01")));
        assert_eq!(o[0].status, OrderStatus::New);

        let one = fixture("usdm_rest_GET_fapi_v1_openOrders.json");
        let one = one.trim().trim_start_matches('[').trim_end_matches(']');
        assert_eq!(usdm_order(one).expect("usdm order").order_id, 1917641);
        let one = fixture("spot_rest_GET_api_v3_openOrders.json");
        let one = one.trim().trim_start_matches('[').trim_end_matches(']');
        assert_eq!(spot_order(one).expect("spot order").order_id, 1);

        assert_eq!(
            server_time(r#"{"serverTime":1499827319559}"#).ok(),
            Some(1499827319559)
        );
        assert_eq!(
            listen_key(r#"{"listenKey":"pqia91ma"}"#).ok().as_deref(),
            Some("pqia91ma")
        );
        assert_eq!(
            api_error(r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#),
            Some(ApiError {
                code: -1022,
                msg: "Signature for this request is not valid.".into()
            })
        );
        assert_eq!(api_error("<html>502</html>"), None);
        assert_eq!(api_error(r#"{"serverTime":1}"#), None);

        // Zero balances and zero positions are dropped.
        let (_, b) = spot_account(
            r#"{"updateTime":1,"balances":[
            {"asset":"X","free":"0.000","locked":"0"},{"asset":"Y","free":"0","locked":"1"}]}"#,
        )
        .expect("spot account");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].total, d("1"));
        let p = usdm_positions(
            r#"[{"symbol":"A","positionSide":"BOTH","positionAmt":"0","entryPrice":"0",
            "breakEvenPrice":"0","unRealizedProfit":"0","isolatedWallet":"0","updateTime":1}]"#,
        )
        .expect("positions");
        assert!(p.is_empty());
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let er = fixture("spot_executionReport.json");
        let bad = [
            // Malformed JSON, non-object JSON.
            "".to_owned(),
            "{".to_owned(),
            "not json".to_owned(),
            "[1,2]".to_owned(),
            "42".to_owned(),
            "\"executionReport\"".to_owned(),
            "null".to_owned(),
            "{}".to_owned(),
            r#"{"event":[1]}"#.to_owned(),
            r#"{"e":5}"#.to_owned(),
            // A known event with a missing required field.
            with_event("spot_executionReport.json", |o| {
                o.remove("i");
            }),
            // A decimal that is not one, and one sent as a JSON number.
            with_event("spot_executionReport.json", |o| {
                set(o, &[("p", "abc".into())])
            }),
            with_event("spot_executionReport.json", |o| {
                set(o, &[("p", serde_json::json!(0.1))])
            }),
            // A number out of i64 range.
            er.replacen("4293153", "99999999999999999999", 1),
            er.replacen("4293153", "-99999999999999999999", 1),
            // An unknown order status.
            with_event("spot_executionReport.json", |o| {
                set(o, &[("X", "WHATEVER".into())])
            }),
            // Decimal overflow in Balance::spot's sum.
            r#"{"updateTime":1,"balances":[{"asset":"X","free":"79228162514264337593543950335",
                "locked":"79228162514264337593543950335"}]}"#
                .to_owned(),
        ];
        for text in &bad {
            assert!(parse_spot_frame(text).is_err(), "spot accepted {text}");
            assert!(parse_usdm_frame(text).is_err(), "usdm accepted {text}");
            // Every REST function on every bad input: an error, no panic.
            assert!(spot_account(text).is_err(), "{text}");
            assert!(spot_orders(text).is_err());
            assert!(spot_order(text).is_err());
            assert!(spot_trades(text).is_err());
            assert!(usdm_account(text).is_err());
            assert!(usdm_positions(text).is_err());
            assert!(usdm_orders(text).is_err());
            assert!(usdm_order(text).is_err());
            assert!(usdm_algo_orders(text).is_err());
            assert!(usdm_trades(text).is_err());
            assert!(server_time(text).is_err());
            assert!(listen_key(text).is_err());
            let _ = api_error(text);
        }

        // USD-M: overflow in ap × z, unknown status in ALGO_UPDATE.
        let mut v: Value =
            serde_json::from_str(&fixture("usdm_ORDER_TRADE_UPDATE.json")).expect("json");
        let o = v.get_mut("o").and_then(Value::as_object_mut).expect("o");
        set(
            o,
            &[
                ("ap", "79228162514264337593543950335".into()),
                ("z", "2".into()),
            ],
        );
        assert!(parse_usdm_frame(&v.to_string()).is_err());
        let algo = fixture("usdm_ALGO_UPDATE.json").replacen("\"CANCELED\"", "\"NOPE\"", 1);
        assert!(parse_usdm_frame(&algo).is_err());

        // The error message is serde's, not the frame.
        let secretish = with_event("spot_executionReport.json", |o| {
            set(o, &[("c", "SECRET-ish".into())]);
            o.remove("i");
        });
        let msg = parse_spot_frame(&secretish)
            .expect_err("missing i")
            .to_string();
        assert!(msg.contains("missing field `i`"), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");

        // An unknown event type is not an error.
        for text in [
            r#"{"subscriptionId":1,"event":{"e":"somethingNew","E":1}}"#,
            r#"{"e":"somethingNew"}"#,
        ] {
            assert!(matches!(
                parse_spot_frame(text),
                Ok(Frame::Unknown { event_type }) if event_type == "somethingNew"
            ));
            assert!(matches!(
                parse_usdm_frame(text),
                Ok(Frame::Unknown { .. }) | Err(_)
            ));
        }
        assert!(matches!(
            parse_usdm_frame(r#"{"e":"PM_PRO_ACCOUNT_UPDATE","E":1}"#),
            Ok(Frame::Unknown { event_type }) if event_type == "PM_PRO_ACCOUNT_UPDATE"
        ));
    }

    #[test]
    fn arbitrary_prefixes_of_every_fixture_do_not_panic() {
        for entry in std::fs::read_dir(fixture_dir()).expect("dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            for (i, _) in text.char_indices() {
                let t = text.get(..i).unwrap_or_default();
                let _ = parse_spot_frame(t);
                let _ = parse_usdm_frame(t);
                let _ = spot_account(t);
                let _ = usdm_orders(t);
                let _ = usdm_positions(t);
                let _ = api_error(t);
            }
        }
    }
}
