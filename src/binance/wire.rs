//! Serde types for Binance's JSON, exactly as sent (SPEC.md §2–3).
//!
//! Single-letter keys are renamed to readable field names; amounts are `Decimal`s read from
//! JSON strings only (a JSON number is an error, never an `f64`); ids and times are `i64`.
//! Unknown fields are ignored, and conditional fields are `Option`s (absent, `null` and `""`
//! read as `None`), so a new field or a missing optional one never breaks a frame.
//!
//! These types mirror the whole payload, including fields the conversion does not read yet
//! (they document the wire format and are checked for type on every frame): hence the
//! `dead_code` allowance below.
#![allow(dead_code)]

use rust_decimal::Decimal;
use serde::Deserialize;

use super::convert::ApiError;

/// Required decimal: a JSON string holding a decimal number.
use rust_decimal::serde::str as dec;

/// Optional decimal: absent, `null` or `""` is `None`; any other value must be a decimal string.
mod dec_opt {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Decimal>, D::Error> {
        // Decimal strings never hold escapes, so they are borrowed, not allocated.
        let s: Option<&'de str> = Option::deserialize(d)?;
        match s {
            None | Some("") => Ok(None),
            Some(s) => Decimal::from_str(s)
                .or_else(|_| Decimal::from_scientific(s))
                .map(Some)
                .map_err(|e| D::Error::custom(format!("invalid decimal {s:?}: {e}"))),
        }
    }
}

/// An event time Binance sends as an integer — or, in some real frames, as a numeric string
/// (SPEC §5a). A visitor rather than an untagged enum: this runs for every event.
pub(crate) fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("milliseconds as an integer or a numeric string")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i64, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// A value Binance sends sometimes as an integer, sometimes as a string (USD-M
/// `listenKeyExpired.E`, `ALGO_UPDATE.o.ai`, `ORDER_TRADE_UPDATE.o.er`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    /// The integer, parsing a string form; `None` for a non-numeric string.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::Str(s) => s.parse().ok(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Spot user-data events (§2.1)
// ---------------------------------------------------------------------------------------------

/// `outboundAccountPosition`: absolute balances of the assets possibly changed.
#[derive(Debug, Deserialize)]
pub(crate) struct OutboundAccountPosition {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    /// Time of the last account update.
    #[serde(rename = "u")]
    pub(crate) last_update: i64,
    #[serde(rename = "B")]
    pub(crate) balances: Vec<SpotStreamBalance>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SpotStreamBalance {
    #[serde(rename = "a")]
    pub(crate) asset: String,
    #[serde(rename = "f", with = "dec")]
    pub(crate) free: Decimal,
    #[serde(rename = "l", with = "dec")]
    pub(crate) locked: Decimal,
}

/// `balanceUpdate` and `externalLockUpdate`: a balance delta (not applied; see `Frame::Info`).
#[derive(Debug, Deserialize)]
pub(crate) struct BalanceDelta {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "a")]
    pub(crate) asset: String,
    #[serde(rename = "d", with = "dec")]
    pub(crate) delta: Decimal,
    /// Clear time / transaction time.
    #[serde(rename = "T")]
    pub(crate) time: i64,
}

/// `executionReport`: every update of a spot order.
#[derive(Debug, Deserialize)]
pub(crate) struct ExecutionReport {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "c")]
    pub(crate) client_order_id: String,
    #[serde(rename = "S")]
    pub(crate) side: String,
    #[serde(rename = "o")]
    pub(crate) order_type: String,
    #[serde(rename = "f")]
    pub(crate) time_in_force: String,
    #[serde(rename = "q", with = "dec")]
    pub(crate) orig_qty: Decimal,
    #[serde(rename = "p", with = "dec")]
    pub(crate) price: Decimal,
    #[serde(rename = "P", with = "dec")]
    pub(crate) stop_price: Decimal,
    #[serde(rename = "F", default, with = "dec_opt")]
    pub(crate) iceberg_qty: Option<Decimal>,
    /// Order list id, -1 if none.
    #[serde(rename = "g", default)]
    pub(crate) order_list_id: Option<i64>,
    /// Original client order id (of the order being canceled), `""` otherwise.
    #[serde(rename = "C", default)]
    pub(crate) orig_client_order_id: Option<String>,
    #[serde(rename = "x")]
    pub(crate) execution_type: String,
    #[serde(rename = "X")]
    pub(crate) status: String,
    #[serde(rename = "r", default)]
    pub(crate) reject_reason: Option<String>,
    #[serde(rename = "i")]
    pub(crate) order_id: i64,
    #[serde(rename = "l", with = "dec")]
    pub(crate) last_qty: Decimal,
    #[serde(rename = "z", with = "dec")]
    pub(crate) cum_qty: Decimal,
    #[serde(rename = "L", with = "dec")]
    pub(crate) last_price: Decimal,
    #[serde(rename = "n", with = "dec")]
    pub(crate) commission: Decimal,
    /// `null` when there is no commission.
    #[serde(rename = "N", default)]
    pub(crate) commission_asset: Option<String>,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    /// -1 when not a trade.
    #[serde(rename = "t")]
    pub(crate) trade_id: i64,
    /// Prevented match id (STP).
    #[serde(rename = "v", default)]
    pub(crate) prevented_match_id: Option<i64>,
    #[serde(rename = "I", default)]
    pub(crate) execution_id: Option<i64>,
    #[serde(rename = "w", default)]
    pub(crate) is_working: Option<bool>,
    #[serde(rename = "m")]
    pub(crate) is_maker: bool,
    #[serde(rename = "M", default)]
    pub(crate) ignore: Option<bool>,
    #[serde(rename = "O")]
    pub(crate) created_at: i64,
    #[serde(rename = "Z", with = "dec")]
    pub(crate) cum_quote_qty: Decimal,
    /// Last quote quantity (`L * l`).
    #[serde(rename = "Y", with = "dec")]
    pub(crate) last_quote_qty: Decimal,
    #[serde(rename = "Q", default, with = "dec_opt")]
    pub(crate) quote_order_qty: Option<Decimal>,
    #[serde(rename = "W", default)]
    pub(crate) working_time: Option<i64>,
    #[serde(rename = "V", default)]
    pub(crate) self_trade_prevention_mode: Option<String>,
    #[serde(rename = "d", default)]
    pub(crate) trailing_delta: Option<i64>,
    #[serde(rename = "D", default)]
    pub(crate) trailing_time: Option<i64>,
    #[serde(rename = "j", default)]
    pub(crate) strategy_id: Option<i64>,
    #[serde(rename = "J", default)]
    pub(crate) strategy_type: Option<i64>,
    /// STP: prevented quantity (cumulative).
    #[serde(rename = "A", default, with = "dec_opt")]
    pub(crate) prevented_qty: Option<Decimal>,
    /// STP: last prevented quantity (`x=TRADE_PREVENTION`).
    #[serde(rename = "B", default, with = "dec_opt")]
    pub(crate) last_prevented_qty: Option<Decimal>,
    #[serde(rename = "u", default)]
    pub(crate) trade_group_id: Option<i64>,
    #[serde(rename = "U", default)]
    pub(crate) counter_order_id: Option<i64>,
    #[serde(rename = "Cs", default)]
    pub(crate) counter_symbol: Option<String>,
    #[serde(rename = "pl", default, with = "dec_opt")]
    pub(crate) prevented_execution_qty: Option<Decimal>,
    #[serde(rename = "pL", default, with = "dec_opt")]
    pub(crate) prevented_execution_price: Option<Decimal>,
    #[serde(rename = "pY", default, with = "dec_opt")]
    pub(crate) prevented_execution_quote_qty: Option<Decimal>,
    #[serde(rename = "b", default)]
    pub(crate) match_type: Option<String>,
    #[serde(rename = "a", default)]
    pub(crate) allocation_id: Option<i64>,
    #[serde(rename = "k", default)]
    pub(crate) working_floor: Option<String>,
    #[serde(rename = "uS", default)]
    pub(crate) used_sor: Option<bool>,
    #[serde(rename = "gP", default)]
    pub(crate) peg_price_type: Option<String>,
    #[serde(rename = "gOT", default)]
    pub(crate) peg_offset_type: Option<String>,
    #[serde(rename = "gOV", default)]
    pub(crate) peg_offset_value: Option<IntOrString>,
    #[serde(rename = "gp", default, with = "dec_opt")]
    pub(crate) pegged_price: Option<Decimal>,
    /// Expiry reason (since 2026-03-26).
    #[serde(rename = "eR", default)]
    pub(crate) expiry_reason: Option<String>,
}

/// `listStatus`: order list lifecycle (not applied; see `Frame::Info`).
#[derive(Debug, Deserialize)]
pub(crate) struct ListStatus {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "g")]
    pub(crate) order_list_id: i64,
    #[serde(rename = "c")]
    pub(crate) contingency_type: String,
    #[serde(rename = "l")]
    pub(crate) list_status_type: String,
    #[serde(rename = "L")]
    pub(crate) list_order_status: String,
    #[serde(rename = "r", default)]
    pub(crate) reject_reason: Option<String>,
    #[serde(rename = "C")]
    pub(crate) list_client_order_id: String,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "O", default)]
    pub(crate) orders: Vec<ListStatusOrder>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListStatusOrder {
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "i")]
    pub(crate) order_id: i64,
    #[serde(rename = "c")]
    pub(crate) client_order_id: String,
}

/// `eventStreamTerminated` and `serverShutdown`: only the event time.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamEvent {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
}

/// `listenKeyExpired` (Spot legacy and USD-M); `E` is an integer or a string.
#[derive(Debug, Deserialize)]
pub(crate) struct ListenKeyExpired {
    #[serde(rename = "E")]
    pub(crate) event_time: IntOrString,
    #[serde(rename = "listenKey", default)]
    pub(crate) listen_key: Option<String>,
}

/// A WS API response: `{"id":..,"status":..,"result":..}` or `{..,"error":{"code","msg"}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WsApiResponse {
    /// The request id we sent: a string, a number or `null`.
    #[serde(default)]
    pub(crate) id: Option<serde_json::Value>,
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) result: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) error: Option<ApiError>,
    #[serde(rename = "rateLimits", default)]
    pub(crate) rate_limits: Option<serde_json::Value>,
}

/// `GET /api/v3/exchangeInfo`, `GET /fapi/v1/exchangeInfo`: only the limits are read.
#[derive(Debug, Deserialize)]
pub(crate) struct ExchangeLimits {
    #[serde(rename = "rateLimits", default)]
    pub(crate) rate_limits: Vec<RateLimit>,
}

/// `{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000}`
#[derive(Debug, Deserialize)]
pub(crate) struct RateLimit {
    #[serde(rename = "rateLimitType")]
    pub(crate) kind: String,
    pub(crate) interval: String,
    #[serde(rename = "intervalNum")]
    pub(crate) interval_num: u32,
    pub(crate) limit: u32,
}

// ---------------------------------------------------------------------------------------------
// USD-M user-data events (§2.2; COIN-M shares the shapes, §2.3)
// ---------------------------------------------------------------------------------------------

/// `ACCOUNT_UPDATE`: balances and (changed) positions.
#[derive(Debug, Deserialize)]
pub(crate) struct AccountUpdate {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    /// COIN-M: account alias.
    #[serde(rename = "i", default)]
    pub(crate) account_alias: Option<String>,
    #[serde(rename = "a")]
    pub(crate) data: AccountUpdateData,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountUpdateData {
    /// Reason: `ORDER`, `FUNDING_FEE`, `DEPOSIT`, ...
    #[serde(rename = "m")]
    pub(crate) reason: String,
    #[serde(rename = "B", default)]
    pub(crate) balances: Vec<AccountUpdateBalance>,
    /// Absent on a cross funding-fee update: that does NOT mean "no positions".
    #[serde(rename = "P", default)]
    pub(crate) positions: Option<Vec<AccountUpdatePosition>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountUpdateBalance {
    #[serde(rename = "a")]
    pub(crate) asset: String,
    #[serde(rename = "wb", with = "dec")]
    pub(crate) wallet_balance: Decimal,
    #[serde(rename = "cw", with = "dec")]
    pub(crate) cross_wallet_balance: Decimal,
    /// Balance change except PnL and commission.
    #[serde(rename = "bc", default, with = "dec_opt")]
    pub(crate) balance_change: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountUpdatePosition {
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "pa", with = "dec")]
    pub(crate) amount: Decimal,
    #[serde(rename = "ep", with = "dec")]
    pub(crate) entry_price: Decimal,
    /// Missing in older accounts' payloads (SPEC §5a).
    #[serde(rename = "bep", default, with = "dec_opt")]
    pub(crate) breakeven_price: Option<Decimal>,
    /// (Pre-fee) accumulated realized PnL.
    #[serde(rename = "cr", with = "dec")]
    pub(crate) accumulated_realized: Decimal,
    #[serde(rename = "up", with = "dec")]
    pub(crate) unrealized_pnl: Decimal,
    /// `isolated` / `cross` (compare case-insensitively; `MARGIN_CALL` sends `CROSSED`).
    #[serde(rename = "mt")]
    pub(crate) margin_type: String,
    #[serde(rename = "iw", with = "dec")]
    pub(crate) isolated_wallet: Decimal,
    #[serde(rename = "ps")]
    pub(crate) position_side: String,
}

/// `ORDER_TRADE_UPDATE`.
#[derive(Debug, Deserialize)]
pub(crate) struct OrderTradeUpdate {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "i", default)]
    pub(crate) account_alias: Option<String>,
    #[serde(rename = "o")]
    pub(crate) order: FuturesOrderUpdate,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FuturesOrderUpdate {
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "c")]
    pub(crate) client_order_id: String,
    #[serde(rename = "S")]
    pub(crate) side: String,
    #[serde(rename = "o")]
    pub(crate) order_type: String,
    #[serde(rename = "f")]
    pub(crate) time_in_force: String,
    #[serde(rename = "q", with = "dec")]
    pub(crate) orig_qty: Decimal,
    #[serde(rename = "p", with = "dec")]
    pub(crate) price: Decimal,
    #[serde(rename = "ap", with = "dec")]
    pub(crate) avg_price: Decimal,
    #[serde(rename = "sp", with = "dec")]
    pub(crate) stop_price: Decimal,
    #[serde(rename = "x")]
    pub(crate) execution_type: String,
    #[serde(rename = "X")]
    pub(crate) status: String,
    #[serde(rename = "i")]
    pub(crate) order_id: i64,
    #[serde(rename = "l", with = "dec")]
    pub(crate) last_qty: Decimal,
    #[serde(rename = "z", with = "dec")]
    pub(crate) cum_qty: Decimal,
    #[serde(rename = "L", with = "dec")]
    pub(crate) last_price: Decimal,
    /// Commission asset: "will not push if no commission".
    #[serde(rename = "N", default)]
    pub(crate) commission_asset: Option<String>,
    #[serde(rename = "n", default, with = "dec_opt")]
    pub(crate) commission: Option<Decimal>,
    #[serde(rename = "T")]
    pub(crate) trade_time: i64,
    #[serde(rename = "t")]
    pub(crate) trade_id: i64,
    #[serde(rename = "b", default, with = "dec_opt")]
    pub(crate) bids_notional: Option<Decimal>,
    #[serde(rename = "a", default, with = "dec_opt")]
    pub(crate) asks_notional: Option<Decimal>,
    #[serde(rename = "m")]
    pub(crate) is_maker: bool,
    #[serde(rename = "R", default)]
    pub(crate) reduce_only: Option<bool>,
    #[serde(rename = "wt", default)]
    pub(crate) working_type: Option<String>,
    #[serde(rename = "ot", default)]
    pub(crate) orig_order_type: Option<String>,
    #[serde(rename = "ps", default)]
    pub(crate) position_side: Option<String>,
    #[serde(rename = "cp", default)]
    pub(crate) close_all: Option<bool>,
    #[serde(rename = "AP", default, with = "dec_opt")]
    pub(crate) activation_price: Option<Decimal>,
    #[serde(rename = "cr", default, with = "dec_opt")]
    pub(crate) callback_rate: Option<Decimal>,
    #[serde(rename = "pP", default)]
    pub(crate) price_protect: Option<bool>,
    #[serde(rename = "si", default)]
    pub(crate) si: Option<i64>,
    #[serde(rename = "ss", default)]
    pub(crate) ss: Option<i64>,
    /// Realized profit of the trade.
    #[serde(rename = "rp", with = "dec")]
    pub(crate) realized_profit: Decimal,
    #[serde(rename = "V", default)]
    pub(crate) self_trade_prevention_mode: Option<String>,
    #[serde(rename = "pm", default)]
    pub(crate) price_match: Option<String>,
    #[serde(rename = "gtd", default)]
    pub(crate) good_till_date: Option<i64>,
    #[serde(rename = "er", default)]
    pub(crate) expiry_reason: Option<IntOrString>,
    /// COIN-M: margin asset.
    #[serde(rename = "ma", default)]
    pub(crate) margin_asset: Option<String>,
}

/// `TRADE_LITE`: the low-latency copy of a fill (not recorded; see `Frame::Info`).
#[derive(Debug, Deserialize)]
pub(crate) struct TradeLite {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "q", with = "dec")]
    pub(crate) orig_qty: Decimal,
    #[serde(rename = "p", with = "dec")]
    pub(crate) price: Decimal,
    #[serde(rename = "m")]
    pub(crate) is_maker: bool,
    #[serde(rename = "c")]
    pub(crate) client_order_id: String,
    #[serde(rename = "S")]
    pub(crate) side: String,
    #[serde(rename = "L", with = "dec")]
    pub(crate) last_price: Decimal,
    #[serde(rename = "l", with = "dec")]
    pub(crate) last_qty: Decimal,
    #[serde(rename = "t")]
    pub(crate) trade_id: i64,
    #[serde(rename = "i")]
    pub(crate) order_id: i64,
}

/// `ALGO_UPDATE`: a conditional (algo service) order.
#[derive(Debug, Deserialize)]
pub(crate) struct AlgoUpdate {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "o")]
    pub(crate) order: AlgoOrderUpdate,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AlgoOrderUpdate {
    #[serde(rename = "caid")]
    pub(crate) client_algo_id: String,
    #[serde(rename = "aid")]
    pub(crate) algo_id: i64,
    #[serde(rename = "at", default)]
    pub(crate) algo_type: Option<String>,
    #[serde(rename = "o")]
    pub(crate) order_type: String,
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "S")]
    pub(crate) side: String,
    #[serde(rename = "ps", default)]
    pub(crate) position_side: Option<String>,
    #[serde(rename = "f")]
    pub(crate) time_in_force: String,
    #[serde(rename = "q", default, with = "dec_opt")]
    pub(crate) quantity: Option<Decimal>,
    #[serde(rename = "X")]
    pub(crate) status: String,
    /// Order id in the matching engine after trigger (`""` before).
    #[serde(rename = "ai", default)]
    pub(crate) matching_order_id: Option<IntOrString>,
    #[serde(rename = "ap", default, with = "dec_opt")]
    pub(crate) avg_price: Option<Decimal>,
    #[serde(rename = "aq", default, with = "dec_opt")]
    pub(crate) executed_qty: Option<Decimal>,
    #[serde(rename = "act", default)]
    pub(crate) actual_order_type: Option<String>,
    #[serde(rename = "tp", default, with = "dec_opt")]
    pub(crate) trigger_price: Option<Decimal>,
    #[serde(rename = "p", default, with = "dec_opt")]
    pub(crate) price: Option<Decimal>,
    #[serde(rename = "V", default)]
    pub(crate) self_trade_prevention_mode: Option<String>,
    #[serde(rename = "wt", default)]
    pub(crate) working_type: Option<String>,
    #[serde(rename = "pm", default)]
    pub(crate) price_match: Option<String>,
    #[serde(rename = "cp", default)]
    pub(crate) close_position: Option<bool>,
    #[serde(rename = "pP", default)]
    pub(crate) price_protect: Option<bool>,
    #[serde(rename = "R", default)]
    pub(crate) reduce_only: Option<bool>,
    #[serde(rename = "tt", default)]
    pub(crate) trigger_time: Option<i64>,
    #[serde(rename = "gtd", default)]
    pub(crate) good_till_date: Option<i64>,
    /// Failure reason.
    #[serde(rename = "rm", default)]
    pub(crate) reason: Option<String>,
}

/// `MARGIN_CALL`: risk guidance only.
#[derive(Debug, Deserialize)]
pub(crate) struct MarginCall {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "cw", default, with = "dec_opt")]
    pub(crate) cross_wallet_balance: Option<Decimal>,
    #[serde(rename = "p", default)]
    pub(crate) positions: Vec<MarginCallPosition>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MarginCallPosition {
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "ps")]
    pub(crate) position_side: String,
    #[serde(rename = "pa", with = "dec")]
    pub(crate) amount: Decimal,
    #[serde(rename = "mt")]
    pub(crate) margin_type: String,
    #[serde(rename = "iw", default, with = "dec_opt")]
    pub(crate) isolated_wallet: Option<Decimal>,
    #[serde(rename = "mp", with = "dec")]
    pub(crate) mark_price: Decimal,
    #[serde(rename = "up", with = "dec")]
    pub(crate) unrealized_pnl: Decimal,
    #[serde(rename = "mm", with = "dec")]
    pub(crate) maintenance_margin: Decimal,
}

/// `ACCOUNT_CONFIG_UPDATE`: either `ac` (leverage) or `ai` (multi-assets mode).
#[derive(Debug, Deserialize)]
pub(crate) struct AccountConfigUpdate {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "ac", default)]
    pub(crate) leverage: Option<LeverageConfig>,
    #[serde(rename = "ai", default)]
    pub(crate) multi_assets: Option<MultiAssetsConfig>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LeverageConfig {
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "l")]
    pub(crate) leverage: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MultiAssetsConfig {
    #[serde(rename = "j")]
    pub(crate) multi_assets_mode: bool,
}

/// `STRATEGY_UPDATE`.
#[derive(Debug, Deserialize)]
pub(crate) struct StrategyUpdate {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "su")]
    pub(crate) strategy: StrategyUpdateData,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StrategyUpdateData {
    #[serde(rename = "si")]
    pub(crate) strategy_id: i64,
    #[serde(rename = "st")]
    pub(crate) strategy_type: String,
    #[serde(rename = "ss")]
    pub(crate) status: String,
    #[serde(rename = "s", default)]
    pub(crate) symbol: Option<String>,
    #[serde(rename = "ut", default)]
    pub(crate) updated_at: Option<i64>,
    #[serde(rename = "c", default)]
    pub(crate) op_code: Option<i64>,
}

/// `GRID_UPDATE` (deprecated).
#[derive(Debug, Deserialize)]
pub(crate) struct GridUpdate {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "gu")]
    pub(crate) grid: GridUpdateData,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GridUpdateData {
    #[serde(rename = "si")]
    pub(crate) strategy_id: i64,
    #[serde(rename = "st")]
    pub(crate) strategy_type: String,
    #[serde(rename = "ss")]
    pub(crate) status: String,
    #[serde(rename = "s", default)]
    pub(crate) symbol: Option<String>,
    #[serde(rename = "r", default, with = "dec_opt")]
    pub(crate) realized_pnl: Option<Decimal>,
    #[serde(rename = "up", default, with = "dec_opt")]
    pub(crate) unmatched_avg_price: Option<Decimal>,
    #[serde(rename = "uq", default, with = "dec_opt")]
    pub(crate) unmatched_qty: Option<Decimal>,
    #[serde(rename = "uf", default, with = "dec_opt")]
    pub(crate) unmatched_fee: Option<Decimal>,
    #[serde(rename = "mp", default, with = "dec_opt")]
    pub(crate) matched_pnl: Option<Decimal>,
    #[serde(rename = "ut", default)]
    pub(crate) updated_at: Option<i64>,
}

/// `CONDITIONAL_ORDER_TRIGGER_REJECT` (deprecated 2025-12-15).
#[derive(Debug, Deserialize)]
pub(crate) struct ConditionalOrderTriggerReject {
    #[serde(rename = "E", deserialize_with = "millis")]
    pub(crate) event_time: i64,
    #[serde(rename = "T")]
    pub(crate) transaction_time: i64,
    #[serde(rename = "or")]
    pub(crate) reject: TriggerReject,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TriggerReject {
    #[serde(rename = "s")]
    pub(crate) symbol: String,
    #[serde(rename = "i")]
    pub(crate) order_id: i64,
    #[serde(rename = "r")]
    pub(crate) reason: String,
}

// ---------------------------------------------------------------------------------------------
// REST (§3)
// ---------------------------------------------------------------------------------------------

/// Spot `GET /api/v3/account`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpotAccount {
    pub(crate) update_time: i64,
    pub(crate) balances: Vec<SpotRestBalance>,
    #[serde(default)]
    pub(crate) account_type: Option<String>,
    #[serde(default)]
    pub(crate) can_trade: Option<bool>,
    #[serde(default)]
    pub(crate) uid: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SpotRestBalance {
    pub(crate) asset: String,
    #[serde(with = "dec")]
    pub(crate) free: Decimal,
    #[serde(with = "dec")]
    pub(crate) locked: Decimal,
}

/// A REST order: Spot `GET /api/v3/openOrders` / `order` / `allOrders` elements and USD-M
/// `GET /fapi/v1/openOrders` / `order` / `allOrders` elements (the same shape but for the
/// cumulative quote's name and each market's extra fields).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RestOrder {
    pub(crate) symbol: String,
    pub(crate) order_id: i64,
    pub(crate) client_order_id: String,
    #[serde(with = "dec")]
    pub(crate) price: Decimal,
    #[serde(with = "dec")]
    pub(crate) orig_qty: Decimal,
    #[serde(with = "dec")]
    pub(crate) executed_qty: Decimal,
    /// Spot's spelling `cummulativeQuoteQty`; USD-M's `cumQuote`.
    #[serde(rename = "cummulativeQuoteQty", alias = "cumQuote", with = "dec")]
    pub(crate) cumulative_quote_qty: Decimal,
    pub(crate) status: String,
    pub(crate) time_in_force: String,
    #[serde(rename = "type")]
    pub(crate) order_type: String,
    pub(crate) side: String,
    #[serde(default, with = "dec_opt")]
    pub(crate) stop_price: Option<Decimal>,
    /// Creation time.
    pub(crate) time: i64,
    pub(crate) update_time: i64,
    #[serde(default)]
    pub(crate) self_trade_prevention_mode: Option<String>,
    // Spot only.
    #[serde(default)]
    pub(crate) order_list_id: Option<i64>,
    #[serde(default, with = "dec_opt")]
    pub(crate) iceberg_qty: Option<Decimal>,
    #[serde(default)]
    pub(crate) is_working: Option<bool>,
    #[serde(default)]
    pub(crate) working_time: Option<i64>,
    #[serde(default, with = "dec_opt")]
    pub(crate) orig_quote_order_qty: Option<Decimal>,
    // USD-M only.
    #[serde(default, with = "dec_opt")]
    pub(crate) avg_price: Option<Decimal>,
    #[serde(default)]
    pub(crate) orig_type: Option<String>,
    #[serde(default)]
    pub(crate) position_side: Option<String>,
    #[serde(default)]
    pub(crate) reduce_only: Option<bool>,
    #[serde(default)]
    pub(crate) close_position: Option<bool>,
    #[serde(default, with = "dec_opt")]
    pub(crate) activate_price: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) price_rate: Option<Decimal>,
    #[serde(default)]
    pub(crate) working_type: Option<String>,
    #[serde(default)]
    pub(crate) price_protect: Option<bool>,
    #[serde(default)]
    pub(crate) price_match: Option<String>,
    #[serde(default)]
    pub(crate) good_till_date: Option<i64>,
}

/// Spot `GET /api/v3/myTrades` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpotRestTrade {
    pub(crate) symbol: String,
    pub(crate) id: i64,
    pub(crate) order_id: i64,
    #[serde(default)]
    pub(crate) order_list_id: Option<i64>,
    #[serde(with = "dec")]
    pub(crate) price: Decimal,
    #[serde(with = "dec")]
    pub(crate) qty: Decimal,
    #[serde(with = "dec")]
    pub(crate) quote_qty: Decimal,
    #[serde(with = "dec")]
    pub(crate) commission: Decimal,
    #[serde(default)]
    pub(crate) commission_asset: Option<String>,
    pub(crate) time: i64,
    pub(crate) is_buyer: bool,
    pub(crate) is_maker: bool,
    #[serde(default)]
    pub(crate) is_best_match: Option<bool>,
}

/// `GET /api/v3/time`, `GET /fapi/v1/time`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerTime {
    pub(crate) server_time: i64,
}

/// `POST /fapi/v1/listenKey`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenKey {
    pub(crate) listen_key: String,
}

/// USD-M `GET /fapi/v3/account`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsdmAccount {
    pub(crate) assets: Vec<UsdmAccountAsset>,
    #[serde(default)]
    pub(crate) positions: Vec<UsdmAccountPosition>,
    #[serde(default, with = "dec_opt")]
    pub(crate) total_wallet_balance: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) available_balance: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsdmAccountAsset {
    pub(crate) asset: String,
    #[serde(with = "dec")]
    pub(crate) wallet_balance: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) unrealized_profit: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) margin_balance: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) maint_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) initial_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) position_initial_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) open_order_initial_margin: Option<Decimal>,
    #[serde(with = "dec")]
    pub(crate) cross_wallet_balance: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) cross_un_pnl: Option<Decimal>,
    #[serde(with = "dec")]
    pub(crate) available_balance: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) max_withdraw_amount: Option<Decimal>,
    pub(crate) update_time: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsdmAccountPosition {
    pub(crate) symbol: String,
    pub(crate) position_side: String,
    #[serde(with = "dec")]
    pub(crate) position_amt: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) unrealized_profit: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) isolated_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) notional: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) isolated_wallet: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) initial_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) maint_margin: Option<Decimal>,
    #[serde(default)]
    pub(crate) update_time: Option<i64>,
}

/// USD-M `GET /fapi/v3/positionRisk` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsdmPositionRisk {
    pub(crate) symbol: String,
    pub(crate) position_side: String,
    #[serde(with = "dec")]
    pub(crate) position_amt: Decimal,
    #[serde(with = "dec")]
    pub(crate) entry_price: Decimal,
    #[serde(with = "dec")]
    pub(crate) break_even_price: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) mark_price: Option<Decimal>,
    #[serde(rename = "unRealizedProfit", with = "dec")]
    pub(crate) unrealized_profit: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) liquidation_price: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) isolated_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) notional: Option<Decimal>,
    #[serde(default)]
    pub(crate) margin_asset: Option<String>,
    #[serde(with = "dec")]
    pub(crate) isolated_wallet: Decimal,
    #[serde(default, with = "dec_opt")]
    pub(crate) initial_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) maint_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) position_initial_margin: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) open_order_initial_margin: Option<Decimal>,
    #[serde(default)]
    pub(crate) adl: Option<i64>,
    #[serde(default, with = "dec_opt")]
    pub(crate) bid_notional: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) ask_notional: Option<Decimal>,
    pub(crate) update_time: i64,
}

/// USD-M `GET /fapi/v1/openAlgoOrders` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsdmRestAlgoOrder {
    pub(crate) algo_id: i64,
    pub(crate) client_algo_id: String,
    #[serde(default)]
    pub(crate) algo_type: Option<String>,
    pub(crate) order_type: String,
    pub(crate) symbol: String,
    pub(crate) side: String,
    #[serde(default)]
    pub(crate) position_side: Option<String>,
    pub(crate) time_in_force: String,
    #[serde(default, with = "dec_opt")]
    pub(crate) quantity: Option<Decimal>,
    pub(crate) algo_status: String,
    #[serde(default, with = "dec_opt")]
    pub(crate) trigger_price: Option<Decimal>,
    #[serde(default, with = "dec_opt")]
    pub(crate) price: Option<Decimal>,
    pub(crate) create_time: i64,
    pub(crate) update_time: i64,
}

/// USD-M `GET /fapi/v1/userTrades` element.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsdmRestTrade {
    pub(crate) buyer: bool,
    #[serde(with = "dec")]
    pub(crate) commission: Decimal,
    #[serde(default)]
    pub(crate) commission_asset: Option<String>,
    pub(crate) id: i64,
    pub(crate) maker: bool,
    pub(crate) order_id: i64,
    #[serde(with = "dec")]
    pub(crate) price: Decimal,
    #[serde(with = "dec")]
    pub(crate) qty: Decimal,
    #[serde(with = "dec")]
    pub(crate) quote_qty: Decimal,
    #[serde(with = "dec")]
    pub(crate) realized_pnl: Decimal,
    pub(crate) side: String,
    #[serde(default)]
    pub(crate) position_side: Option<String>,
    pub(crate) symbol: String,
    pub(crate) time: i64,
}
