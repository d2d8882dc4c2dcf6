//! Order entry through the REST API, so a trading engine's tests can trade against the sim:
//! Spot `POST /api/v3/order`, `DELETE /api/v3/order`, `DELETE /api/v3/openOrders`; USD-M
//! `POST /fapi/v1/order`, `DELETE /fapi/v1/order`. Orders fill against the sim's own price
//! path (the marks of the random session): MARKET at once at the mark, a LIMIT that crosses the
//! mark at once at the mark (taker), any other LIMIT rests and fills in full at its price
//! (maker) when the path crosses it (`Model::match_resting`, run by every session step and by
//! `Sim::set_price`). The random session never fills or cancels an API order.
//!
//! What Binance does, and so what this does ([S-REST] "New order", "Cancel order", "Cancel
//! all open orders on a symbol", [S-ERR]; USD-M "New Order", "Cancel Order", error codes):
//! - Spot responses: `ACK` = symbol, orderId, orderListId, clientOrderId, transactTime;
//!   `RESULT` adds the order's state; `FULL` adds `fills` [{price, qty, commission,
//!   commissionAsset, tradeId}]. LIMIT and MARKET default to FULL, others to ACK.
//! - Spot events: `executionReport` NEW, then TRADE (and `outboundAccountPosition`) per fill;
//!   a resting order locks its funds (an `outboundAccountPosition` follows NEW); IOC/FOK that
//!   do not cross: NEW then EXPIRED.
//! - Spot errors: -1102 mandatory parameter, -1013 "Filter failure: PRICE_FILTER / LOT_SIZE /
//!   NOTIONAL", -2010 "Account has insufficient balance for requested action.", -2010 "Order
//!   would immediately match and take." (LIMIT_MAKER), -2010 "Duplicate order sent." (a
//!   clientOrderId already open), -2011 "Unknown order sent." on cancel, -1115/-1116/-1117 for
//!   an unknown timeInForce / type / side, -1106 for a parameter not required.
//! - USD-M responses: the order (`ACK` as placed, `RESULT` after its fills; default ACK).
//!   Events: ORDER_TRADE_UPDATE NEW, then per fill TRADE_LITE, ORDER_TRADE_UPDATE TRADE and
//!   ACCOUNT_UPDATE (reason ORDER).
//! - USD-M errors: -1111 quantity precision, -4014 "Price not increased by tick size.", -4164
//!   minimum notional, -2019 "Margin is insufficient.", -2022 "ReduceOnly Order is rejected.",
//!   -5022 GTX (post-only) that would take, -4061 positionSide other than BOTH (one-way
//!   mode), -2011 on cancel.
//!
//! Inference: fills see unlimited liquidity at the mark, so a crossing order fills in full in
//! one trade; a reduce-only order larger than the position is rejected (-2022) rather than cut.

use std::str::FromStr;

use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::SimMarket;
use super::SimOrder;
use super::account::{Exec, Model, USDM_LEVERAGE};
use super::auth::ApiError;
use super::exchange_info::Filters;
use super::payloads::{self, f8, fs};

pub(crate) type Params = std::collections::BTreeMap<String, String>;

pub(super) fn err(code: i64, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, msg)
}

fn unknown_order() -> ApiError {
    err(-2011, "Unknown order sent.")
}

fn okey(symbol: &str, id: i64) -> String {
    format!("{symbol}:{id}")
}

fn decimal(params: &Params, k: &str) -> Result<Option<Decimal>, ApiError> {
    match params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Decimal::from_str(v).map(Some).map_err(|_| {
            err(
                -1100,
                format!("Illegal characters found in parameter '{k}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'."),
            )
        }),
    }
}

pub(super) fn need<'a>(params: &'a Params, k: &str) -> Result<&'a str, ApiError> {
    params
        .get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::mandatory(k))
}

pub(super) fn need_dec(params: &Params, k: &str) -> Result<Decimal, ApiError> {
    decimal(params, k)?.ok_or_else(|| ApiError::mandatory(k))
}

fn is_multiple(v: Decimal, step: Decimal) -> bool {
    step.is_zero() || (v % step).is_zero()
}

/// A validated new order.
struct NewOrder {
    symbol: String,
    side: String,
    order_type: String,
    tif: String,
    qty: Decimal,
    quote_qty: Decimal,
    price: Decimal,
    client_id: Option<String>,
    reduce_only: bool,
}

fn parse_new(m: &Model, params: &Params) -> Result<(NewOrder, Filters), ApiError> {
    let symbol = need(params, "symbol")?.to_string();
    let spec = m
        .symbols
        .iter()
        .find(|s| s.name == symbol)
        .ok_or_else(|| err(-1121, "Invalid symbol."))?;
    let side = need(params, "side")?.to_string();
    if side != "BUY" && side != "SELL" {
        return Err(err(-1117, "Invalid side."));
    }
    let order_type = need(params, "type")?.to_string();
    let types: &[&str] = match m.market {
        SimMarket::Spot => &["LIMIT", "MARKET", "LIMIT_MAKER"],
        SimMarket::Usdm => &["LIMIT", "MARKET"],
    };
    if !types.contains(&order_type.as_str()) {
        return Err(err(-1116, "Invalid orderType."));
    }
    let limit = order_type != "MARKET";
    let tif = if order_type == "LIMIT" {
        let t = need(params, "timeInForce")?;
        let tifs: &[&str] = match m.market {
            SimMarket::Spot => &["GTC", "IOC", "FOK"],
            SimMarket::Usdm => &["GTC", "IOC", "FOK", "GTX"],
        };
        if !tifs.contains(&t) {
            return Err(err(-1115, "Invalid timeInForce."));
        }
        t.to_string()
    } else {
        "GTC".to_string()
    };
    let price = if limit {
        need_dec(params, "price")?
    } else {
        if params.contains_key("price") {
            return Err(err(-1106, "Parameter 'price' sent when not required."));
        }
        Decimal::ZERO
    };
    let qty = decimal(params, "quantity")?;
    let quote = match m.market {
        SimMarket::Spot => decimal(params, "quoteOrderQty")?,
        SimMarket::Usdm => None,
    };
    let (qty, quote_qty) = match (qty, quote) {
        (Some(_), Some(_)) => {
            return Err(err(
                -1106,
                "Parameter 'quoteOrderQty' sent when not required.",
            ));
        }
        (None, Some(_)) if limit => return Err(ApiError::mandatory("quantity")),
        (None, Some(q)) => (Decimal::ZERO, q),
        (Some(q), None) => (q, Decimal::ZERO),
        (None, None) if !limit && m.market == SimMarket::Spot => {
            return Err(err(
                -1102,
                "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
            ));
        }
        (None, None) => return Err(ApiError::mandatory("quantity")),
    };
    if m.market == SimMarket::Usdm {
        match params.get("positionSide").map(String::as_str) {
            None | Some("BOTH") => {}
            Some(_) => {
                return Err(err(
                    -4061,
                    "Order's position side does not match user's setting.",
                ));
            }
        }
    }
    let reduce_only = match params.get("reduceOnly").map(String::as_str) {
        None | Some("false") => false,
        Some("true") if m.market == SimMarket::Usdm => true,
        Some(_) => return Err(ApiError::illegal_value("reduceOnly")),
    };
    let client_id = params
        .get("newClientOrderId")
        .filter(|c| !c.is_empty())
        .cloned();
    Ok((
        NewOrder {
            symbol,
            side,
            order_type,
            tif,
            qty,
            quote_qty,
            price,
            client_id,
            reduce_only,
        },
        Filters::of(spec),
    ))
}

/// Binance's filter checks for the order at `price` (the mark for MARKET).
fn check_filters(
    market: SimMarket,
    o: &NewOrder,
    f: &Filters,
    price: Decimal,
    qty: Decimal,
) -> Result<(), ApiError> {
    let limit = o.order_type != "MARKET";
    match market {
        SimMarket::Spot => {
            if limit
                && (o.price < f.min_price || o.price > f.max_price || !is_multiple(o.price, f.tick))
            {
                return Err(err(-1013, "Filter failure: PRICE_FILTER"));
            }
            if qty < f.min_qty || qty > f.max_qty || !is_multiple(qty, f.step) {
                return Err(err(-1013, "Filter failure: LOT_SIZE"));
            }
            if price * qty < f.min_notional {
                return Err(err(-1013, "Filter failure: NOTIONAL"));
            }
        }
        SimMarket::Usdm => {
            if limit {
                if o.price < f.min_price {
                    return Err(err(-4013, "Price less than min price."));
                }
                if o.price > f.max_price {
                    return Err(err(-4016, "Limit price can't be higher than max price."));
                }
                if !is_multiple(o.price, f.tick) {
                    return Err(err(-4014, "Price not increased by tick size."));
                }
            }
            if qty <= Decimal::ZERO {
                return Err(err(-4003, "Quantity less than or equal to zero."));
            }
            if qty > f.max_qty {
                return Err(err(-4005, "Quantity greater than max quantity."));
            }
            if !is_multiple(qty, f.step) {
                return Err(err(
                    -1111,
                    "Precision is over the maximum defined for this asset.",
                ));
            }
            if !o.reduce_only && price * qty < f.min_notional {
                return Err(err(
                    -4164,
                    format!(
                        "Order's notional must be no smaller than {} (unless you choose reduce only).",
                        fs(f.min_notional)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A placed order: the response body and the events.
pub(crate) struct Placed {
    pub body: Value,
    pub events: Vec<Value>,
}

impl Model {
    /// Fill every resting API order the price path has crossed, at its own price (maker).
    pub fn match_resting(&mut self, now: i64) -> Vec<Value> {
        let keys: Vec<String> = self.api_orders.iter().cloned().collect();
        let mut evs = Vec::new();
        for k in keys {
            if self.oco_pending.contains(&k) {
                continue;
            }
            let Some(o) = self.st.open_orders.get(&k).cloned() else {
                continue;
            };
            let mark = self.mark(&o.symbol);
            let crossed = if o.side == "BUY" {
                mark <= o.price
            } else {
                mark >= o.price
            };
            if crossed && mark > Decimal::ZERO {
                let rem = o.orig_qty - o.executed_qty;
                let price = o.price;
                let in_list = o.order_list_id >= 0;
                evs.extend(self.apply_fill(&k, o, rem, price, true, now));
                if in_list {
                    evs.extend(self.oco_finish(&k, false, now));
                }
            }
        }
        if !self.oco_pending.is_empty() {
            evs.extend(self.oco_trigger(now));
        }
        if !evs.is_empty() {
            self.refresh(now);
        }
        evs
    }

    /// Set a symbol's mark (rounded to its tick) and fill what it crosses.
    pub fn set_mark(&mut self, symbol: &str, price: Decimal, now: i64) -> Option<Vec<Value>> {
        let dp = self.spec(symbol)?.price_dp;
        *self.marks.get_mut(symbol)? = price.round_dp(dp);
        let mut evs = self.match_resting(now);
        evs.extend(self.trigger_algos(now));
        self.refresh(now);
        Some(evs)
    }

    fn find_open(&self, symbol: &str, params: &Params) -> Result<String, ApiError> {
        if let Some(id) = params.get("orderId") {
            let id: i64 = id.parse().map_err(|_| ApiError::illegal("orderId"))?;
            let k = okey(symbol, id);
            return if self.st.open_orders.contains_key(&k) {
                Ok(k)
            } else {
                Err(unknown_order())
            };
        }
        let Some(cid) = params.get("origClientOrderId") else {
            return Err(match self.market {
                SimMarket::Spot => err(
                    -1102,
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
                ),
                SimMarket::Usdm => ApiError::mandatory("orderId"),
            });
        };
        self.st
            .open_orders
            .iter()
            .find(|(_, o)| o.symbol == symbol && &o.client_order_id == cid)
            .map(|(k, _)| k.clone())
            .ok_or_else(unknown_order)
    }

    /// `POST /api/v3/order` / `POST /fapi/v1/order`.
    pub fn api_place(&mut self, params: &Params, now: i64) -> Result<Placed, ApiError> {
        self.refresh(now);
        let (req, filters) = parse_new(self, params)?;
        let mark = self.mark(&req.symbol);
        if mark <= Decimal::ZERO {
            return Err(err(-1013, "Market is closed."));
        }
        let market_order = req.order_type == "MARKET";
        let crosses = market_order
            || if req.side == "BUY" {
                req.price >= mark
            } else {
                req.price <= mark
            };
        // Spot MARKET by quote amount: the quantity the quote buys at the mark.
        let qty = if req.quote_qty > Decimal::ZERO {
            (req.quote_qty / mark).round_dp_with_strategy(
                filters.step.scale(),
                rust_decimal::RoundingStrategy::ToZero,
            )
        } else {
            req.qty
        };
        let check_price = if market_order { mark } else { req.price };
        check_filters(self.market, &req, &filters, check_price, qty)?;
        if let Some(cid) = &req.client_id
            && self
                .st
                .open_orders
                .values()
                .any(|o| o.symbol == req.symbol && &o.client_order_id == cid)
        {
            return Err(err(-2010, "Duplicate order sent."));
        }
        if crosses && (req.order_type == "LIMIT_MAKER" || req.tif == "GTX") {
            return Err(match self.market {
                SimMarket::Spot => err(-2010, "Order would immediately match and take."),
                SimMarket::Usdm => err(
                    -5022,
                    "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history",
                ),
            });
        }
        let spec = self
            .spec(&req.symbol)
            .cloned()
            .ok_or_else(|| err(-1121, "Invalid symbol."))?;
        let fill_price = if crosses { mark } else { req.price };
        // Funds: Spot balances; USD-M initial margin.
        match self.market {
            SimMarket::Spot => {
                let (asset, need) = if req.side == "BUY" {
                    (&spec.quote, check_price * qty)
                } else {
                    (&spec.base, qty)
                };
                if self.free(asset) < need {
                    return Err(err(
                        -2010,
                        "Account has insufficient balance for requested action.",
                    ));
                }
            }
            SimMarket::Usdm => {
                let pos = self
                    .st
                    .positions
                    .get(&format!("{}:BOTH", req.symbol))
                    .map(|p| p.amount)
                    .unwrap_or_default();
                if req.reduce_only {
                    let reduces = if req.side == "BUY" {
                        pos < Decimal::ZERO
                    } else {
                        pos > Decimal::ZERO
                    };
                    if !reduces || qty > pos.abs() {
                        return Err(err(-2022, "ReduceOnly Order is rejected."));
                    }
                } else {
                    let im = check_price * qty / Decimal::from(USDM_LEVERAGE);
                    if self.usdt_available(now) < im {
                        return Err(err(-2019, "Margin is insufficient."));
                    }
                }
            }
        }
        let mut o = self.new_order(&spec, &req.side, &req.order_type, req.price, qty, now);
        o.time_in_force = req.tif.clone();
        o.quote_order_qty = req.quote_qty;
        o.reduce_only = req.reduce_only;
        if let Some(c) = &req.client_id {
            o.client_order_id = c.clone();
        }
        let key = okey(&o.symbol, o.order_id);
        let new_ex = Exec {
            exec_type: "NEW",
            fill: None,
            transact_time: now,
            cancel_ids: None,
        };
        let mut evs;
        let ack = o.clone();
        if crosses {
            self.st.orders.insert(key.clone(), o.clone());
            evs = self.order_event(&o, &new_ex, now);
            evs.extend(self.apply_fill(&key, o, qty, fill_price, false, now));
        } else if req.tif == "IOC" || req.tif == "FOK" {
            self.st.orders.insert(key.clone(), o.clone());
            evs = self.order_event(&o, &new_ex, now);
            o.status = "EXPIRED".to_string();
            self.finish(&key, &o);
            let ex = Exec {
                exec_type: "EXPIRED",
                ..new_ex
            };
            evs.extend(self.order_event(&o, &ex, now));
        } else {
            if self.market == SimMarket::Spot
                && let Some((asset, amt)) = self.spot_lock(&o)
            {
                let b = self.balance_mut(&asset);
                b.free -= amt;
                b.locked += amt;
                self.update_time = now;
                self.insert_open(o.clone());
                self.api_orders.insert(key.clone());
                evs = self.order_event(&o, &new_ex, now);
                evs.push(self.spot_position_event(&[asset], now));
            } else {
                self.insert_open(o.clone());
                self.api_orders.insert(key.clone());
                evs = self.order_event(&o, &new_ex, now);
            }
        }
        self.refresh(now);
        let done = self.st.orders.get(&key).cloned().unwrap_or(ack.clone());
        let resp_type = params.get("newOrderRespType").map(String::as_str);
        let body = match self.market {
            SimMarket::Spot => {
                let default = if matches!(req.order_type.as_str(), "LIMIT" | "MARKET") {
                    "FULL"
                } else {
                    "ACK"
                };
                let fills = self.fills_of(&key);
                spot_new_response(&done, resp_type.unwrap_or(default), now, &fills)
            }
            SimMarket::Usdm => match resp_type.unwrap_or("ACK") {
                "RESULT" => usdm_response(&done),
                _ => usdm_response(&ack),
            },
        };
        Ok(Placed { body, events: evs })
    }

    fn fills_of(&self, key: &str) -> Vec<super::SimFill> {
        self.order_fills
            .get(key)
            .map(|fs| {
                fs.iter()
                    .filter_map(|f| self.st.fills.get(f).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `DELETE /api/v3/order` / `DELETE /fapi/v1/order`.
    pub fn api_cancel(&mut self, params: &Params, now: i64) -> Result<Placed, ApiError> {
        let symbol = need(params, "symbol")?.to_string();
        if self.spec(&symbol).is_none() {
            return Err(err(-1121, "Invalid symbol."));
        }
        let key = self.find_open(&symbol, params)?;
        let (body, events) = self.cancel_one(&key, params.get("newClientOrderId").cloned(), now);
        Ok(Placed { body, events })
    }

    fn cancel_one(&mut self, key: &str, new_cid: Option<String>, now: i64) -> (Value, Vec<Value>) {
        let cid = match self.market {
            SimMarket::Spot => Some(new_cid.unwrap_or_else(|| self.client_id(""))),
            SimMarket::Usdm => None,
        };
        let in_list = self
            .st
            .open_orders
            .get(key)
            .is_some_and(|o| o.order_list_id >= 0);
        let (events, cid) = if in_list {
            // Cancelling one leg cancels the whole list.
            let evs = self.oco_finish(key, true, now);
            let id = self.st.orders.get(key).map(|o| o.order_id);
            let c = evs
                .iter()
                .find(|v| v["e"] == "executionReport" && v["i"].as_i64() == id)
                .and_then(|v| v["c"].as_str())
                .map(str::to_string);
            (evs, c)
        } else {
            (
                self.cancel_order_as(key, now, false, true, cid.clone()),
                cid,
            )
        };
        self.refresh(now);
        let o = self.st.orders.get(key).cloned();
        let body = match (self.market, o) {
            (SimMarket::Spot, Some(o)) => {
                spot_cancel_response(&o, cid.as_deref().unwrap_or(""), now)
            }
            (SimMarket::Usdm, Some(o)) => usdm_response(&o),
            (_, None) => json!({}),
        };
        (body, events)
    }

    /// `DELETE /api/v3/openOrders`: every open order of the symbol.
    pub fn api_cancel_all(&mut self, params: &Params, now: i64) -> Result<Placed, ApiError> {
        let symbol = need(params, "symbol")?.to_string();
        if self.spec(&symbol).is_none() {
            return Err(err(-1121, "Invalid symbol."));
        }
        let keys: Vec<String> = self
            .st
            .open_orders
            .iter()
            .filter(|(_, o)| o.symbol == symbol)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return Err(unknown_order());
        }
        let mut bodies = Vec::new();
        let mut events = Vec::new();
        for k in keys {
            if !self.st.open_orders.contains_key(&k) {
                continue; // the other leg of a list already cancelled
            }
            let (b, e) = self.cancel_one(&k, None, now);
            bodies.push(b);
            events.extend(e);
        }
        Ok(Placed {
            body: Value::Array(bodies),
            events,
        })
    }
}

fn spot_state(o: &SimOrder) -> serde_json::Map<String, Value> {
    let v = json!({
        "price": f8(o.price),
        "origQty": f8(o.orig_qty),
        "executedQty": f8(o.executed_qty),
        "origQuoteOrderQty": f8(o.quote_order_qty),
        "cummulativeQuoteQty": f8(o.cum_quote_qty),
        "status": o.status,
        "timeInForce": o.time_in_force,
        "type": o.order_type,
        "side": o.side,
    });
    v.as_object().cloned().unwrap_or_default()
}

fn spot_new_response(o: &SimOrder, resp_type: &str, now: i64, fills: &[super::SimFill]) -> Value {
    let mut v = json!({
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": o.order_list_id,
        "clientOrderId": o.client_order_id,
        "transactTime": now
    });
    if resp_type == "ACK" {
        return v;
    }
    if let Some(obj) = v.as_object_mut() {
        obj.extend(spot_state(o));
        obj.insert("workingTime".into(), json!(o.created_at));
        obj.insert("selfTradePreventionMode".into(), json!("NONE"));
        if resp_type == "FULL" {
            let fills: Vec<Value> = fills
                .iter()
                .map(|f| {
                    json!({"price": f8(f.price), "qty": f8(f.qty), "commission": f8(f.commission),
                        "commissionAsset": f.commission_asset, "tradeId": f.trade_id})
                })
                .collect();
            obj.insert("fills".into(), Value::Array(fills));
        }
    }
    v
}

fn spot_cancel_response(o: &SimOrder, new_cid: &str, now: i64) -> Value {
    let mut v = json!({
        "symbol": o.symbol,
        "origClientOrderId": o.client_order_id,
        "orderId": o.order_id,
        "orderListId": o.order_list_id,
        "clientOrderId": new_cid,
        "transactTime": now
    });
    if let Some(obj) = v.as_object_mut() {
        obj.extend(spot_state(o));
        obj.insert("selfTradePreventionMode".into(), json!("NONE"));
    }
    v
}

/// USD-M new/cancel order response: the order without `time`, with `cumQty`.
fn usdm_response(o: &SimOrder) -> Value {
    let mut v = payloads::usdm_order(o);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("time");
        obj.insert("cumQty".into(), json!(fs(o.executed_qty)));
    }
    v
}
