//! Builds Binance's JSON payloads (user-data-stream events and REST responses) with the sim's
//! own code, key for key and type for type as in Binance's documented examples: decimals as
//! strings, ids and times as numbers.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::account::{Exec, Model, USDM_LEVERAGE, flat_position, maint_rate};
use super::{SimAlgoOrder, SimBalance, SimFill, SimOrder, SimPosition};

/// Spot style: fixed 8 decimals.
pub(crate) fn f8(d: Decimal) -> String {
    format!("{:.8}", d.round_dp(8))
}

/// USD-M style: shortest form.
pub(crate) fn fs(d: Decimal) -> String {
    d.normalize().to_string()
}

// ---------------------------------------------------------------- spot events

pub(crate) fn spot_account_position(e: i64, u: i64, bals: &[(String, Decimal, Decimal)]) -> Value {
    let b: Vec<Value> = bals
        .iter()
        .map(|(a, f, l)| json!({"a": a, "f": f8(*f), "l": f8(*l)}))
        .collect();
    json!({"e": "outboundAccountPosition", "E": e, "u": u, "B": b})
}

pub(crate) fn spot_balance_update(e: i64, asset: &str, delta: Decimal, t: i64) -> Value {
    json!({"e": "balanceUpdate", "E": e, "a": asset, "d": f8(delta), "T": t})
}

pub(crate) fn spot_execution_report(e: i64, exec_id: i64, o: &SimOrder, ex: &Exec) -> Value {
    let (c, orig_c) = match &ex.cancel_ids {
        Some((c, orig)) => (c.clone(), orig.clone()),
        None => (o.client_order_id.clone(), String::new()),
    };
    let open = o.status == "NEW" || o.status == "PARTIALLY_FILLED";
    let limit = o.order_type == "LIMIT" || o.order_type == "LIMIT_MAKER";
    let (l, lp, lq, n, nn, t, m) = match &ex.fill {
        Some(f) => (
            f.qty,
            f.price,
            f.quote_qty,
            f8(f.commission),
            Value::String(f.commission_asset.clone()),
            f.trade_id,
            f.is_maker,
        ),
        None => (
            Decimal::ZERO,
            Decimal::ZERO,
            Decimal::ZERO,
            "0".to_string(),
            Value::Null,
            -1,
            false,
        ),
    };
    let mut v = json!({
        "e": "executionReport",
        "E": e,
        "s": o.symbol,
        "c": c,
        "S": o.side,
        "o": o.order_type,
        "f": o.time_in_force,
        "q": f8(o.orig_qty),
        "p": f8(o.price),
        "P": f8(o.stop_price),
        "F": f8(Decimal::ZERO),
        "g": o.order_list_id,
        "C": orig_c,
        "x": ex.exec_type,
        "X": o.status,
        "r": "NONE",
        "i": o.order_id,
        "l": f8(l),
        "z": f8(o.executed_qty),
        "L": f8(lp),
        "n": n,
        "N": nn,
        "T": ex.transact_time,
        "t": t,
        "I": exec_id,
        "w": open && limit,
        "m": m,
        "M": false,
        "O": o.created_at,
        "Z": f8(o.cum_quote_qty),
        "Y": f8(lq),
        "Q": f8(o.quote_order_qty),
        "V": "NONE"
    });
    if limit && let Some(obj) = v.as_object_mut() {
        obj.insert("W".to_string(), json!(o.created_at));
    }
    v
}

pub(crate) fn spot_event_stream_terminated(e: i64) -> Value {
    json!({"e": "eventStreamTerminated", "E": e})
}

pub(crate) fn spot_server_shutdown(e: i64) -> Value {
    json!({"e": "serverShutdown", "E": e})
}

// ---------------------------------------------------------------- spot REST

pub(crate) fn spot_account(m: &Model, omit_zero: bool) -> Value {
    let balances: Vec<Value> =
        m.st.balances
            .iter()
            .filter(|(_, b)| !omit_zero || !(b.free + b.locked).is_zero())
            .map(|(a, b)| json!({"asset": a, "free": f8(b.free), "locked": f8(b.locked)}))
            .collect();
    json!({
        "makerCommission": 10,
        "takerCommission": 10,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": "0.00100000",
            "taker": "0.00100000",
            "buyer": "0.00000000",
            "seller": "0.00000000"
        },
        "canTrade": true,
        "canWithdraw": true,
        "canDeposit": true,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": m.update_time,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 354_937_868
    })
}

pub(crate) fn spot_order(o: &SimOrder) -> Value {
    json!({
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": o.order_list_id,
        "clientOrderId": o.client_order_id,
        "price": f8(o.price),
        "origQty": f8(o.orig_qty),
        "executedQty": f8(o.executed_qty),
        "cummulativeQuoteQty": f8(o.cum_quote_qty),
        "status": o.status,
        "timeInForce": o.time_in_force,
        "type": o.order_type,
        "side": o.side,
        "stopPrice": f8(o.stop_price),
        "icebergQty": f8(Decimal::ZERO),
        "time": o.created_at,
        "updateTime": o.updated_at,
        "isWorking": true,
        "origQuoteOrderQty": f8(o.quote_order_qty),
        "workingTime": o.created_at,
        "selfTradePreventionMode": "NONE"
    })
}

pub(crate) fn spot_trade(f: &SimFill) -> Value {
    json!({
        "symbol": f.symbol,
        "id": f.trade_id,
        "orderId": f.order_id,
        "orderListId": -1,
        "price": f8(f.price),
        "qty": f8(f.qty),
        "quoteQty": f8(f.quote_qty),
        "commission": f8(f.commission),
        "commissionAsset": f.commission_asset,
        "time": f.traded_at,
        "isBuyer": f.side == "BUY",
        "isMaker": f.is_maker,
        "isBestMatch": true
    })
}

// ---------------------------------------------------------------- USD-M events

fn avg_price(o: &SimOrder) -> Decimal {
    if o.executed_qty.is_zero() {
        Decimal::ZERO
    } else {
        (o.cum_quote_qty / o.executed_qty).round_dp(8)
    }
}

pub(crate) fn usdm_trade_lite(e: i64, o: &SimOrder, f: &SimFill) -> Value {
    json!({
        "e": "TRADE_LITE",
        "E": e,
        "T": f.traded_at,
        "s": o.symbol,
        "q": fs(o.orig_qty),
        "p": fs(o.price),
        "m": f.is_maker,
        "c": o.client_order_id,
        "S": o.side,
        "L": fs(f.price),
        "l": fs(f.qty),
        "t": f.trade_id,
        "i": o.order_id
    })
}

pub(crate) fn usdm_order_trade_update(
    e: i64,
    o: &SimOrder,
    ex: &Exec,
    bid: Decimal,
    ask: Decimal,
) -> Value {
    let (l, lp, t, m, rp) = match &ex.fill {
        Some(f) => (f.qty, f.price, f.trade_id, f.is_maker, f.realized_pnl),
        None => (Decimal::ZERO, Decimal::ZERO, 0, false, Decimal::ZERO),
    };
    let mut ord = json!({
        "s": o.symbol,
        "c": o.client_order_id,
        "S": o.side,
        "o": o.order_type,
        "f": o.time_in_force,
        "q": fs(o.orig_qty),
        "p": fs(o.price),
        "ap": fs(avg_price(o)),
        "sp": fs(o.stop_price),
        "x": ex.exec_type,
        "X": o.status,
        "i": o.order_id,
        "l": fs(l),
        "z": fs(o.executed_qty),
        "L": fs(lp),
        "T": ex.transact_time,
        "t": t,
        "b": fs(bid),
        "a": fs(ask),
        "m": m,
        "R": o.reduce_only,
        "wt": "CONTRACT_PRICE",
        "ot": o.order_type,
        "ps": "BOTH",
        "cp": false,
        "pP": false,
        "si": 0,
        "ss": 0,
        "rp": fs(rp),
        "V": "EXPIRE_MAKER",
        "pm": "NONE",
        "gtd": 0,
        "er": "0"
    });
    if let (Some(f), Some(obj)) = (&ex.fill, ord.as_object_mut()) {
        obj.insert("N".to_string(), json!(f.commission_asset));
        obj.insert("n".to_string(), json!(fs(f.commission)));
    }
    json!({"e": "ORDER_TRADE_UPDATE", "E": e, "T": ex.transact_time, "o": ord})
}

pub(crate) fn usdm_position_event(p: &SimPosition) -> Value {
    json!({
        "s": p.symbol,
        "pa": fs(p.amount),
        "ep": fs(p.entry_price),
        "bep": fs(p.breakeven_price),
        "cr": fs(p.realized_pnl),
        "up": fs(p.unrealized_pnl),
        "mt": p.margin_type,
        "iw": fs(p.isolated_wallet),
        "ps": p.position_side
    })
}

pub(crate) fn usdm_account_update(
    e: i64,
    t: i64,
    reason: &str,
    bals: &[(String, SimBalance, Decimal)],
    positions: Option<&[SimPosition]>,
) -> Value {
    let b: Vec<Value> = bals
        .iter()
        .map(|(a, b, bc)| {
            json!({"a": a, "wb": fs(b.wallet_balance), "cw": fs(b.cross_wallet_balance), "bc": fs(*bc)})
        })
        .collect();
    let mut a = json!({"m": reason, "B": b});
    if let (Some(ps), Some(obj)) = (positions, a.as_object_mut()) {
        let p: Vec<Value> = ps.iter().map(usdm_position_event).collect();
        obj.insert("P".to_string(), Value::Array(p));
    }
    json!({"e": "ACCOUNT_UPDATE", "E": e, "T": t, "a": a})
}

pub(crate) fn usdm_algo_update(
    e: i64,
    t: i64,
    a: &SimAlgoOrder,
    triggered_order: Option<i64>,
    trigger_time: i64,
) -> Value {
    json!({
        "e": "ALGO_UPDATE",
        "T": t,
        "E": e,
        "o": {
            "caid": a.client_algo_id,
            "aid": a.algo_id,
            "at": "CONDITIONAL",
            "o": a.order_type,
            "s": a.symbol,
            "S": a.side,
            "ps": "BOTH",
            "f": "GTC",
            "q": fs(a.quantity),
            "X": a.status,
            "ai": triggered_order.map(|i| i.to_string()).unwrap_or_default(),
            "ap": "0.00000",
            "aq": "0.00000",
            "act": if triggered_order.is_some() { "LIMIT" } else { "0" },
            "tp": fs(a.trigger_price),
            "p": fs(a.price),
            "V": "EXPIRE_MAKER",
            "wt": "CONTRACT_PRICE",
            "pm": "NONE",
            "cp": false,
            "pP": false,
            "R": a.reduce_only,
            "tt": trigger_time,
            "gtd": 0,
            "rm": ""
        }
    })
}

pub(crate) fn usdm_listen_key_expired(e: i64, key: &str) -> Value {
    json!({"e": "listenKeyExpired", "E": e, "listenKey": key})
}

// ---------------------------------------------------------------- USD-M REST

fn lev() -> Decimal {
    Decimal::from(USDM_LEVERAGE)
}

/// Per-symbol margin numbers: (notional, position IM, open-order IM, maint margin).
fn symbol_margins(m: &Model, p: &SimPosition) -> (Decimal, Decimal, Decimal, Decimal) {
    let mark = m.mark(&p.symbol);
    let notional = (p.amount * mark).round_dp(8);
    let pos_im = (notional.abs() / lev()).round_dp(8);
    let ord_im: Decimal =
        m.st.open_orders
            .values()
            .filter(|o| o.symbol == p.symbol)
            .map(|o| ((o.orig_qty - o.executed_qty) * o.price / lev()).round_dp(8))
            .sum();
    let mm = (notional.abs() * maint_rate()).round_dp(8);
    (notional, pos_im, ord_im, mm)
}

/// Every position row REST can show: the model's positions, plus a flat row for each symbol
/// that has open orders but no position (production's `/fapi/v3/positionRisk` and
/// `/fapi/v3/account` list such symbols with zero amounts, SPEC §5a).
fn position_rows(m: &Model) -> Vec<(SimPosition, bool)> {
    let mut rows: std::collections::BTreeMap<String, SimPosition> =
        m.st.positions
            .values()
            .map(|p| (p.symbol.clone(), p.clone()))
            .collect();
    for o in m.st.open_orders.values() {
        rows.entry(o.symbol.clone())
            .or_insert_with(|| flat_position(&o.symbol));
    }
    rows.into_values()
        .map(|p| {
            let has_orders = m.st.open_orders.values().any(|o| o.symbol == p.symbol);
            (p, has_orders)
        })
        .collect()
}

pub(crate) fn usdm_account(m: &Model) -> Value {
    let mut total_up = Decimal::ZERO;
    let mut total_pos_im = Decimal::ZERO;
    let mut total_mm = Decimal::ZERO;
    let mut positions = Vec::new();
    for (p, has_orders) in position_rows(m) {
        let p = &p;
        let (notional, pos_im, ord_im, mm) = symbol_margins(m, p);
        total_up += p.unrealized_pnl;
        total_pos_im += pos_im;
        total_mm += mm;
        if p.amount.is_zero() && !has_orders {
            continue;
        }
        positions.push(json!({
            "symbol": p.symbol,
            "positionSide": p.position_side,
            "positionAmt": fs(p.amount),
            "unrealizedProfit": f8(p.unrealized_pnl),
            "isolatedMargin": "0",
            "notional": f8(notional),
            "isolatedWallet": fs(p.isolated_wallet),
            "initialMargin": f8(pos_im + ord_im),
            "maintMargin": f8(mm),
            "updateTime": m.pos_update.get(&p.symbol).copied().unwrap_or(0)
        }));
    }
    let ord_im = m.open_order_initial_margin();
    let mut assets = Vec::new();
    let mut total_wallet = Decimal::ZERO;
    let mut total_cross = Decimal::ZERO;
    let mut avail_usdt = Decimal::ZERO;
    for (a, b) in &m.st.balances {
        let usdt = a == "USDT";
        let (up, pim, oim, mm) = if usdt {
            (total_up, total_pos_im, ord_im, total_mm)
        } else {
            Default::default()
        };
        if usdt {
            total_wallet = b.wallet_balance;
            total_cross = b.cross_wallet_balance;
            avail_usdt = b.available_balance;
        }
        assets.push(json!({
            "asset": a,
            "walletBalance": f8(b.wallet_balance),
            "unrealizedProfit": f8(up),
            "marginBalance": f8(b.wallet_balance + up),
            "maintMargin": f8(mm),
            "initialMargin": f8(pim + oim),
            "positionInitialMargin": f8(pim),
            "openOrderInitialMargin": f8(oim),
            "crossWalletBalance": f8(b.cross_wallet_balance),
            "crossUnPnl": f8(up),
            "availableBalance": f8(b.available_balance),
            "maxWithdrawAmount": f8(b.available_balance.max(Decimal::ZERO).min(b.wallet_balance)),
            "updateTime": m.asset_update.get(a).copied().unwrap_or(0)
        }));
    }
    json!({
        "totalInitialMargin": f8(total_pos_im + ord_im),
        "totalMaintMargin": f8(total_mm),
        "totalWalletBalance": f8(total_wallet),
        "totalUnrealizedProfit": f8(total_up),
        "totalMarginBalance": f8(total_wallet + total_up),
        "totalPositionInitialMargin": f8(total_pos_im),
        "totalOpenOrderInitialMargin": f8(ord_im),
        "totalCrossWalletBalance": f8(total_cross),
        "totalCrossUnPnl": f8(total_up),
        "availableBalance": f8(avail_usdt),
        "maxWithdrawAmount": f8(avail_usdt.max(Decimal::ZERO).min(total_wallet)),
        "assets": assets,
        "positions": positions
    })
}

/// `GET /fapi/v2/account`: v3's body plus the account's flags.
pub(crate) fn usdm_account_v2(m: &Model) -> Value {
    let mut v = usdm_account(m);
    if let Some(o) = v.as_object_mut() {
        for (k, x) in [
            ("feeTier", json!(0)),
            ("feeBurn", json!(false)),
            ("canTrade", json!(true)),
            ("canDeposit", json!(true)),
            ("canWithdraw", json!(true)),
            ("updateTime", json!(0)),
            ("multiAssetsMargin", json!(false)),
            ("tradeGroupId", json!(-1)),
        ] {
            o.insert(k.to_owned(), x);
        }
    }
    v
}

/// `GET /fapi/v3/balance` (and v2): one row per asset.
pub(crate) fn usdm_balances(m: &Model) -> Value {
    let account = usdm_account(m);
    let rows: Vec<Value> = account["assets"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|a| {
            json!({
                "accountAlias": "SgsR",
                "asset": a["asset"],
                "balance": a["walletBalance"],
                "crossWalletBalance": a["crossWalletBalance"],
                "crossUnPnl": a["crossUnPnl"],
                "availableBalance": a["availableBalance"],
                "maxWithdrawAmount": a["maxWithdrawAmount"],
                "marginAvailable": true,
                "updateTime": a["updateTime"]
            })
        })
        .collect();
    Value::Array(rows)
}

/// `GET /fapi/v1/leverageBracket`: the notional brackets per symbol (numbers, as Binance sends
/// them), for `symbol` or every symbol.
pub(crate) fn usdm_leverage_brackets(m: &Model, symbol: Option<&str>) -> Value {
    let rows: Vec<Value> = m
        .symbols
        .iter()
        .filter(|s| symbol.is_none_or(|x| x == s.name))
        .map(|s| {
            json!({
                "symbol": s.name,
                "notionalCoef": 1.0,
                "brackets": [
                    {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0},
                    {"bracket": 2, "initialLeverage": 100, "notionalCap": 500000, "notionalFloor": 50000, "maintMarginRatio": 0.005, "cum": 50.0},
                    {"bracket": 3, "initialLeverage": 50, "notionalCap": 10000000, "notionalFloor": 500000, "maintMarginRatio": 0.01, "cum": 2550.0}
                ]
            })
        })
        .collect();
    Value::Array(rows)
}

pub(crate) fn usdm_position_risk(m: &Model, symbol: Option<&str>) -> Value {
    let rows: Vec<Value> = position_rows(m)
        .iter()
        .filter(|(p, has_orders)| {
            (!p.amount.is_zero() || *has_orders) && symbol.is_none_or(|s| s == p.symbol)
        })
        .map(|(p, _)| {
            let (notional, pos_im, ord_im, mm) = symbol_margins(m, p);
            let (bid, ask) = m.open_notional(&p.symbol);
            json!({
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "positionAmt": fs(p.amount),
                "entryPrice": fs(p.entry_price),
                "breakEvenPrice": fs(p.breakeven_price),
                "markPrice": f8(m.mark(&p.symbol)),
                "unRealizedProfit": f8(p.unrealized_pnl),
                "liquidationPrice": "0",
                "isolatedMargin": "0",
                "notional": f8(notional),
                "marginAsset": "USDT",
                "isolatedWallet": fs(p.isolated_wallet),
                "initialMargin": f8(pos_im + ord_im),
                "maintMargin": f8(mm),
                "positionInitialMargin": f8(pos_im),
                "openOrderInitialMargin": f8(ord_im),
                "adl": 0,
                "bidNotional": fs(bid),
                "askNotional": fs(ask),
                "updateTime": m.pos_update.get(&p.symbol).copied().unwrap_or(0)
            })
        })
        .collect();
    Value::Array(rows)
}

pub(crate) fn usdm_order(o: &SimOrder) -> Value {
    json!({
        "avgPrice": fs(avg_price(o)),
        "clientOrderId": o.client_order_id,
        "cumQuote": fs(o.cum_quote_qty),
        "executedQty": fs(o.executed_qty),
        "orderId": o.order_id,
        "origQty": fs(o.orig_qty),
        "origType": o.order_type,
        "price": fs(o.price),
        "reduceOnly": o.reduce_only,
        "side": o.side,
        "positionSide": "BOTH",
        "status": o.status,
        "stopPrice": fs(o.stop_price),
        "closePosition": false,
        "symbol": o.symbol,
        "time": o.created_at,
        "timeInForce": o.time_in_force,
        "type": o.order_type,
        "updateTime": o.updated_at,
        "workingType": "CONTRACT_PRICE",
        "priceProtect": false,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0
    })
}

pub(crate) fn usdm_trade(f: &SimFill) -> Value {
    json!({
        "buyer": f.side == "BUY",
        "commission": fs(f.commission),
        "commissionAsset": f.commission_asset,
        "id": f.trade_id,
        "maker": f.is_maker,
        "orderId": f.order_id,
        "price": fs(f.price),
        "qty": fs(f.qty),
        "quoteQty": fs(f.quote_qty),
        "realizedPnl": fs(f.realized_pnl),
        "side": f.side,
        "positionSide": "BOTH",
        "symbol": f.symbol,
        "time": f.traded_at
    })
}

pub(crate) fn usdm_algo_order(a: &SimAlgoOrder) -> Value {
    json!({
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": fs(a.quantity),
        "algoStatus": a.status,
        "triggerPrice": fs(a.trigger_price),
        "price": fs(a.price),
        "icebergQuantity": null,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": "CONTRACT_PRICE",
        "priceMatch": "NONE",
        "closePosition": false,
        "priceProtect": false,
        "reduceOnly": a.reduce_only,
        "createTime": a.created_at,
        "updateTime": a.updated_at,
        "triggerTime": 0,
        "goodTillDate": 0
    })
}
