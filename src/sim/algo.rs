//! USD-M conditional (algo) orders through the REST API: `POST /fapi/v1/algoOrder` and
//! `DELETE /fapi/v1/algoOrder` (`algoType=CONDITIONAL`; `STOP_MARKET`, `TAKE_PROFIT_MARKET`,
//! `STOP`, `TAKE_PROFIT` with `triggerPrice`), triggered by the sim's price path.
//!
//! What Binance does, and so what this does (F-CL 2025-11-06 "conditional orders migrate to the
//! Algo Service", USD-M "New Algo Order" / "Event Algo Order Update" pages, SPEC §2.2, §4.5):
//! - placing answers the algo order (`algoId`, `clientAlgoId`, `algoStatus` NEW, …) and pushes
//!   `ALGO_UPDATE` X=NEW; the order is listed by `GET /fapi/v1/openAlgoOrders`, not by
//!   `/fapi/v1/openOrders`;
//! - when the price reaches `triggerPrice` (STOP: buy at or above / sell at or below;
//!   TAKE_PROFIT: buy at or below / sell at or above): `ALGO_UPDATE` X=TRIGGERING (production
//!   sends it without `ap`/`aq`/`act`, SPEC §5a), X=TRIGGERED with `ai` = the new order's id,
//!   then the order's own `ORDER_TRADE_UPDATE` NEW (`i` = `ai`, `ot` = the algo's type, `sp` =
//!   the trigger price) and, as it fills, TRADE_LITE / ORDER_TRADE_UPDATE TRADE /
//!   ACCOUNT_UPDATE; a *_MARKET algo then ends with X=FINISHED carrying `ap`/`aq`;
//! - cancelling pushes `ALGO_UPDATE` X=CANCELED and answers `{"algoId","clientAlgoId",
//!   "code":"200","msg":"success"}`; an unknown algo: -2011;
//! - a trigger price already reached: -2021 "Order would immediately trigger.".
//!
//! Inference: a triggered STOP / TAKE_PROFIT (limit) algo stays TRIGGERED while its limit order
//! works (as the random session's do); an order refused at trigger time (margin, reduce-only)
//! ends the algo as CANCELED with the refusal in `rm`.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::SimAlgoOrder;
use super::account::Model;
use super::auth::ApiError;
use super::exchange_info::Filters;
use super::orders::{Params, Placed, err, need, need_dec};
use super::payloads::{self, fs};

/// Whether the mark has reached the algo's trigger price.
fn reached(a: &SimAlgoOrder, mark: Decimal) -> bool {
    let stop = a.order_type.starts_with("STOP");
    match (stop, a.side == "BUY") {
        (true, true) | (false, false) => mark >= a.trigger_price,
        (true, false) | (false, true) => mark <= a.trigger_price,
    }
}

impl Model {
    /// `POST /fapi/v1/algoOrder`.
    pub fn api_algo_place(&mut self, params: &Params, now: i64) -> Result<Placed, ApiError> {
        if need(params, "algoType")? != "CONDITIONAL" {
            return Err(ApiError::illegal_value("algoType"));
        }
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
        let order_type = need(params, "type")?.to_string();
        let market = match order_type.as_str() {
            "STOP_MARKET" | "TAKE_PROFIT_MARKET" => true,
            "STOP" | "TAKE_PROFIT" => false,
            _ => return Err(err(-1116, "Invalid orderType.")),
        };
        if params.get("positionSide").is_some_and(|p| p != "BOTH") {
            return Err(err(
                -4061,
                "Order's position side does not match user's setting.",
            ));
        }
        let quantity = need_dec(params, "quantity")?;
        let trigger_price = need_dec(params, "triggerPrice")?;
        let price = if market {
            Decimal::ZERO
        } else {
            need_dec(params, "price")?
        };
        for p in [trigger_price, price].into_iter().filter(|p| !p.is_zero()) {
            if p < f.min_price || !(p % f.tick).is_zero() {
                return Err(err(-4014, "Price not increased by tick size."));
            }
        }
        if quantity <= Decimal::ZERO || !(quantity % f.step).is_zero() {
            return Err(err(
                -1111,
                "Precision is over the maximum defined for this asset.",
            ));
        }
        let reduce_only = params.get("reduceOnly").is_some_and(|v| v == "true");
        let id = self.next_algo_id;
        self.next_algo_id += 1;
        let client_algo_id = match params.get("clientAlgoId").filter(|c| !c.is_empty()) {
            Some(c) => c.clone(),
            None => self.client_id(""),
        };
        let a = SimAlgoOrder {
            symbol,
            algo_id: id,
            client_algo_id,
            side,
            order_type,
            status: "NEW".to_string(),
            quantity,
            trigger_price,
            price,
            reduce_only,
            created_at: now,
            updated_at: now,
        };
        if reached(&a, self.mark(&a.symbol)) {
            return Err(err(-2021, "Order would immediately trigger."));
        }
        let key = format!("{}:{id}", a.symbol);
        self.st.open_algo_orders.insert(key.clone(), a.clone());
        self.api_algos.insert(key);
        let e = self.event_time(now);
        let events = vec![payloads::usdm_algo_update(e, now, &a, None, 0)];
        Ok(Placed {
            body: payloads::usdm_algo_order(&a),
            events,
        })
    }

    /// `DELETE /fapi/v1/algoOrder` (`algoId` or `clientAlgoId`).
    pub fn api_algo_cancel(&mut self, params: &Params, now: i64) -> Result<Placed, ApiError> {
        let unknown = || err(-2011, "Unknown order sent.");
        let key = if let Some(id) = params.get("algoId") {
            let id: i64 = id.parse().map_err(|_| ApiError::illegal("algoId"))?;
            self.st
                .open_algo_orders
                .iter()
                .find(|(_, a)| a.algo_id == id)
                .map(|(k, _)| k.clone())
        } else if let Some(cid) = params.get("clientAlgoId") {
            self.st
                .open_algo_orders
                .iter()
                .find(|(_, a)| &a.client_algo_id == cid)
                .map(|(k, _)| k.clone())
        } else {
            return Err(ApiError::mandatory("algoId"));
        }
        .ok_or_else(unknown)?;
        let mut a = self.st.open_algo_orders.remove(&key).ok_or_else(unknown)?;
        self.api_algos.remove(&key);
        a.status = "CANCELED".to_string();
        a.updated_at = now;
        let e = self.event_time(now);
        Ok(Placed {
            body: json!({"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}),
            events: vec![payloads::usdm_algo_update(e, now, &a, None, 0)],
        })
    }

    /// Trigger every API algo order whose trigger price the path has reached.
    pub fn trigger_algos(&mut self, now: i64) -> Vec<Value> {
        let keys: Vec<String> = self.api_algos.iter().cloned().collect();
        let mut evs = Vec::new();
        for k in keys {
            let Some(a) = self.st.open_algo_orders.get(&k).cloned() else {
                continue;
            };
            let mark = self.mark(&a.symbol);
            if mark > Decimal::ZERO && reached(&a, mark) {
                evs.extend(self.trigger(&k, a, now));
            }
        }
        evs
    }

    fn trigger(&mut self, key: &str, mut a: SimAlgoOrder, now: i64) -> Vec<Value> {
        self.st.open_algo_orders.remove(key);
        self.api_algos.remove(key);
        a.status = "TRIGGERING".to_string();
        a.updated_at = now;
        let e = self.event_time(now);
        let mut triggering = payloads::usdm_algo_update(e, now, &a, None, now);
        if let Some(o) = triggering["o"].as_object_mut() {
            for k in ["ap", "aq", "act"] {
                o.remove(k);
            }
        }
        let mut evs = vec![triggering];
        let market = a.order_type.ends_with("_MARKET");
        let mut params = Params::new();
        for (k, v) in [
            ("symbol", a.symbol.clone()),
            ("side", a.side.clone()),
            ("quantity", a.quantity.to_string()),
            ("newClientOrderId", a.client_algo_id.clone()),
            ("newOrderRespType", "RESULT".to_string()),
            ("reduceOnly", a.reduce_only.to_string()),
        ] {
            params.insert(k.to_string(), v);
        }
        if market {
            params.insert("type".into(), "MARKET".into());
        } else {
            params.insert("type".into(), "LIMIT".into());
            params.insert("timeInForce".into(), "GTC".into());
            params.insert("price".into(), a.price.to_string());
        }
        // The triggered order must not be refused as a duplicate of its own algo id.
        let placed = self.api_place(&params, now);
        let placed = match placed {
            Ok(p) => p,
            Err(e) => {
                a.status = "CANCELED".to_string();
                let ev = self.event_time(now);
                let mut v = payloads::usdm_algo_update(ev, now, &a, None, now);
                v["o"]["rm"] = json!(e.msg);
                evs.push(v);
                return evs;
            }
        };
        let order_id = placed.body["orderId"].as_i64().unwrap_or_default();
        a.status = "TRIGGERED".to_string();
        let ev = self.event_time(now);
        let act = if market { "MARKET" } else { "LIMIT" };
        let mut triggered = payloads::usdm_algo_update(ev, now, &a, Some(order_id), now);
        triggered["o"]["act"] = json!(act);
        // The algo's update comes first, so its events are renumbered after it (E increases).
        let shift = |v: &mut Value, model: &mut Model| {
            if let Some(t) = v.get("E").and_then(Value::as_i64) {
                v["E"] = json!(model.event_time(t));
            }
        };
        evs.push(triggered);
        for mut v in placed.events {
            shift(&mut v, self);
            if v["e"] == "ORDER_TRADE_UPDATE" && v["o"]["i"] == order_id {
                v["o"]["ot"] = json!(a.order_type);
                v["o"]["sp"] = json!(fs(a.trigger_price));
            }
            evs.push(v);
        }
        if market {
            let done = self
                .st
                .orders
                .get(&format!("{}:{order_id}", a.symbol))
                .cloned();
            a.status = "FINISHED".to_string();
            let ev = self.event_time(now);
            let mut finished = payloads::usdm_algo_update(ev, now, &a, Some(order_id), now);
            if let Some(o) = done {
                let ap = if o.executed_qty.is_zero() {
                    Decimal::ZERO
                } else {
                    (o.cum_quote_qty / o.executed_qty).round_dp(8)
                };
                finished["o"]["ap"] = json!(fs(ap));
                finished["o"]["aq"] = json!(fs(o.executed_qty));
            }
            finished["o"]["act"] = json!(act);
            evs.push(finished);
        }
        evs
    }
}
