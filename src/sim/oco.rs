//! Spot OCO order lists through the REST API: `POST /api/v3/orderList/oco` with one
//! `LIMIT_MAKER` leg and one `STOP_LOSS` / `STOP_LOSS_LIMIT` leg, the `listStatus` events, and
//! the legs' lives on the sim's price path (the maker leg fills when the path reaches it, the
//! stop leg triggers when the path reaches its stop price; either ends the other).
//!
//! What Binance does, and so what this does ([S-REST] "New Order list - OCO", [S-UDS]
//! "listStatus", SPEC §2.1, §4.4):
//! - SELL: the above leg takes profit (LIMIT_MAKER above the price), the below leg stops
//!   (STOP_LOSS[_LIMIT] below); BUY the mirror image. The list locks its quantity once.
//! - Placing answers `orderListId`, `contingencyType` OCO, `listStatusType` EXEC_STARTED,
//!   `listOrderStatus` EXECUTING, `listClientOrderId`, `transactionTime`, `symbol`, `orders`
//!   [{symbol, orderId, clientOrderId}] and `orderReports` (each leg's state), and pushes an
//!   `executionReport` NEW per leg (`g` = the list id), `listStatus` EXEC_STARTED and
//!   `outboundAccountPosition`.
//! - When one leg fills or triggers, the other expires (`x`=EXPIRED) and `listStatus`
//!   ALL_DONE / ALL_DONE follows; cancelling either leg (`DELETE /api/v3/order`) cancels the
//!   whole list (both legs CANCELED, then ALL_DONE).
//! - Errors: -1102 mandatory parameters, -1013 filter failures, -2010 insufficient balance,
//!   -2010 "The relationship of the prices for the orders is not correct." for prices on the
//!   wrong side of the market.
//!
//! Inference: the order of the events within one step (legs, then `listStatus`, then the
//! balance); a triggered stop leg sends no event of its own until it trades (a triggered
//! STOP_LOSS_LIMIT that does not cross rests and fills later as maker); TAKE_PROFIT leg types
//! are not simulated (-1116).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::SimOrder;
use super::account::{Exec, Model};
use super::auth::ApiError;
use super::exchange_info::Filters;
use super::orders::{Params, Placed, err, need, need_dec};
use super::payloads::f8;

/// One OCO list: its legs' order keys.
#[derive(Debug, Clone)]
pub(crate) struct OcoList {
    pub symbol: String,
    pub client_id: String,
    pub maker: String,
    pub stop: String,
}

fn list_status(e: i64, id: i64, l: &OcoList, legs: &[&SimOrder], done: bool, t: i64) -> Value {
    let o: Vec<Value> = legs
        .iter()
        .map(|o| json!({"s": o.symbol, "i": o.order_id, "c": o.client_order_id}))
        .collect();
    let (status, order_status) = if done {
        ("ALL_DONE", "ALL_DONE")
    } else {
        ("EXEC_STARTED", "EXECUTING")
    };
    json!({"e": "listStatus", "E": e, "s": l.symbol, "g": id, "c": "OCO", "l": status,
        "L": order_status, "r": "NONE", "C": l.client_id, "T": t, "O": o})
}

fn report(o: &SimOrder, now: i64) -> Value {
    json!({
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": o.order_list_id,
        "clientOrderId": o.client_order_id, "transactTime": now, "price": f8(o.price),
        "origQty": f8(o.orig_qty), "executedQty": f8(o.executed_qty),
        "origQuoteOrderQty": f8(o.quote_order_qty), "cummulativeQuoteQty": f8(o.cum_quote_qty),
        "status": o.status, "timeInForce": o.time_in_force, "type": o.order_type, "side": o.side,
        "stopPrice": f8(o.stop_price), "workingTime": if o.order_type == "LIMIT_MAKER" { o.created_at } else { -1 },
        "selfTradePreventionMode": "NONE"
    })
}

impl Model {
    /// `POST /api/v3/orderList/oco`.
    pub fn api_oco_place(&mut self, params: &Params, now: i64) -> Result<Placed, ApiError> {
        self.refresh(now);
        let symbol = need(params, "symbol")?.to_string();
        let spec = self
            .spec(&symbol)
            .cloned()
            .ok_or_else(|| err(-1121, "Invalid symbol."))?;
        let f = Filters::of(&spec);
        let side = need(params, "side")?.to_string();
        if side != "BUY" && side != "SELL" {
            return Err(err(-1117, "Invalid side."));
        }
        let qty = need_dec(params, "quantity")?;
        let (above, below) = (need(params, "aboveType")?, need(params, "belowType")?);
        // SELL: above takes profit, below stops; BUY: above stops, below takes profit.
        let (maker_side, stop_side) = if side == "SELL" {
            ("above", "below")
        } else {
            ("below", "above")
        };
        let (maker_type, stop_type) = if side == "SELL" {
            (above, below)
        } else {
            (below, above)
        };
        if maker_type != "LIMIT_MAKER" || !matches!(stop_type, "STOP_LOSS" | "STOP_LOSS_LIMIT") {
            return Err(err(-1116, "Invalid orderType."));
        }
        let maker_price = need_dec(params, &format!("{maker_side}Price"))?;
        let stop_price = need_dec(params, &format!("{stop_side}StopPrice"))?;
        let stop_limit = if stop_type == "STOP_LOSS_LIMIT" {
            need(params, &format!("{stop_side}TimeInForce"))?;
            need_dec(params, &format!("{stop_side}Price"))?
        } else {
            Decimal::ZERO
        };
        for p in [maker_price, stop_price, stop_limit]
            .into_iter()
            .filter(|p| !p.is_zero())
        {
            if p < f.min_price || p > f.max_price || !(p % f.tick).is_zero() {
                return Err(err(-1013, "Filter failure: PRICE_FILTER"));
            }
        }
        if qty < f.min_qty || qty > f.max_qty || !(qty % f.step).is_zero() {
            return Err(err(-1013, "Filter failure: LOT_SIZE"));
        }
        if maker_price * qty < f.min_notional || stop_price * qty < f.min_notional {
            return Err(err(-1013, "Filter failure: NOTIONAL"));
        }
        let mark = self.mark(&symbol);
        let ordered = if side == "SELL" {
            maker_price > mark && stop_price < mark
        } else {
            maker_price < mark && stop_price > mark
        };
        if !ordered {
            return Err(err(
                -2010,
                "The relationship of the prices for the orders is not correct.",
            ));
        }
        let (asset, need_amt) = if side == "SELL" {
            (spec.base.clone(), qty)
        } else {
            let stop_cost = if stop_limit.is_zero() {
                stop_price
            } else {
                stop_limit
            };
            (spec.quote.clone(), maker_price.max(stop_cost) * qty)
        };
        if self.free(&asset) < need_amt {
            return Err(err(
                -2010,
                "Account has insufficient balance for requested action.",
            ));
        }
        let list_id = self.next_list_id;
        self.next_list_id += 1;
        let list_cid = match params.get("listClientOrderId").filter(|c| !c.is_empty()) {
            Some(c) => c.clone(),
            None => self.client_id(""),
        };
        let mut stop = self.new_order(&spec, &side, stop_type, stop_limit, qty, now);
        stop.stop_price = stop_price;
        stop.order_list_id = list_id;
        let mut maker = self.new_order(&spec, &side, "LIMIT_MAKER", maker_price, qty, now);
        maker.order_list_id = list_id;
        for (o, k) in [(&mut stop, stop_side), (&mut maker, maker_side)] {
            if let Some(c) = params
                .get(&format!("{k}ClientOrderId"))
                .filter(|c| !c.is_empty())
            {
                o.client_order_id = c.clone();
            }
        }
        let key = |o: &SimOrder| format!("{}:{}", o.symbol, o.order_id);
        let list = OcoList {
            symbol: symbol.clone(),
            client_id: list_cid.clone(),
            maker: key(&maker),
            stop: key(&stop),
        };
        self.oco_pending.insert(list.stop.clone());
        self.oco_lists.insert(list_id, list.clone());
        // The maker leg holds the list's lock.
        if let Some((a, amt)) = self.spot_lock(&maker) {
            let b = self.balance_mut(&a);
            b.free -= amt;
            b.locked += amt;
            self.update_time = now;
        }
        let mut evs = Vec::new();
        let new_ex = Exec {
            exec_type: "NEW",
            fill: None,
            transact_time: now,
            cancel_ids: None,
        };
        for o in [&stop, &maker] {
            self.insert_open(o.clone());
            self.api_orders.insert(key(o));
            evs.extend(self.order_event(o, &new_ex, now));
        }
        let e = self.event_time(now);
        evs.push(list_status(e, list_id, &list, &[&stop, &maker], false, now));
        evs.push(self.spot_position_event(&[asset], now));
        self.refresh(now);
        let body = json!({
            "orderListId": list_id,
            "contingencyType": "OCO",
            "listStatusType": "EXEC_STARTED",
            "listOrderStatus": "EXECUTING",
            "listClientOrderId": list_cid,
            "transactionTime": now,
            "symbol": symbol,
            "orders": [
                {"symbol": stop.symbol, "orderId": stop.order_id, "clientOrderId": stop.client_order_id},
                {"symbol": maker.symbol, "orderId": maker.order_id, "clientOrderId": maker.client_order_id}
            ],
            "orderReports": [report(&stop, now), report(&maker, now)]
        });
        Ok(Placed { body, events: evs })
    }

    fn list_of(&self, key: &str) -> Option<(i64, OcoList)> {
        self.oco_lists
            .iter()
            .find(|(_, l)| l.maker == key || l.stop == key)
            .map(|(id, l)| (*id, l.clone()))
    }

    /// End the list of `key`: the other leg expires (or, `cancel`, both legs are cancelled);
    /// then `listStatus` ALL_DONE. Returns the events.
    pub fn oco_finish(&mut self, key: &str, cancel: bool, now: i64) -> Vec<Value> {
        let Some((id, list)) = self.list_of(key) else {
            return Vec::new();
        };
        self.oco_lists.remove(&id);
        let mut evs = Vec::new();
        let mut balances_changed = false;
        for leg in [&list.stop, &list.maker] {
            if !cancel && leg == key {
                continue;
            }
            let locked = self
                .st
                .open_orders
                .get(leg)
                .cloned()
                .and_then(|o| self.spot_lock(&o));
            let cid = cancel.then(|| self.client_id(""));
            // Still pending here, so an untriggered stop leg unlocks nothing.
            let mut leg_evs = self.cancel_order_as(leg, now, !cancel, true, cid);
            self.oco_pending.remove(leg);
            if locked.is_some() {
                // Keep the balance event for the end of the list's events.
                leg_evs.retain(|v| v["e"] != "outboundAccountPosition");
                balances_changed = true;
            }
            evs.extend(leg_evs);
        }
        let legs: Vec<SimOrder> = [&list.stop, &list.maker]
            .iter()
            .filter_map(|k| self.st.orders.get(*k).cloned())
            .collect();
        let refs: Vec<&SimOrder> = legs.iter().collect();
        let e = self.event_time(now);
        evs.push(list_status(e, id, &list, &refs, true, now));
        if balances_changed && let Some(spec) = self.spec(&list.symbol).cloned() {
            evs.push(self.spot_position_event(&[spec.base, spec.quote], now));
        }
        evs
    }

    /// Trigger the stop legs the path has reached: the maker leg expires, the list is done,
    /// and the stop leg works (STOP_LOSS fills at the mark; STOP_LOSS_LIMIT fills if its
    /// price crosses the mark, else rests).
    pub fn oco_trigger(&mut self, now: i64) -> Vec<Value> {
        let stops: Vec<String> = self.oco_pending.iter().cloned().collect();
        let mut evs = Vec::new();
        for k in stops {
            let Some(o) = self.st.open_orders.get(&k).cloned() else {
                self.oco_pending.remove(&k);
                continue;
            };
            let mark = self.mark(&o.symbol);
            let reached = if o.side == "SELL" {
                mark <= o.stop_price
            } else {
                mark >= o.stop_price
            };
            if !reached || mark <= Decimal::ZERO {
                continue;
            }
            evs.extend(self.oco_finish(&k, false, now));
            self.oco_pending.remove(&k);
            // Now working: it holds its own lock.
            if let Some((a, amt)) = self.spot_lock(&o) {
                let b = self.balance_mut(&a);
                b.free -= amt;
                b.locked += amt;
            }
            let crosses = o.order_type == "STOP_LOSS"
                || if o.side == "SELL" {
                    o.price <= mark
                } else {
                    o.price >= mark
                };
            if crosses {
                let rem = o.orig_qty - o.executed_qty;
                evs.extend(self.apply_fill(&k, o, rem, mark, false, now));
            }
        }
        evs
    }
}

/// The model's OCO bookkeeping (fields of `Model`).
pub(crate) type OcoLists = BTreeMap<i64, OcoList>;
