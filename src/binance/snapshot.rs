//! REST snapshots of the whole account, in domain terms, for the resync after every (re)connect
//! and the periodic reconciliation.
//!
//! Besides balances, positions and open orders it learns what a gap hid: the final state of
//! orders that left the open set, and trades the stream did not deliver (per symbol, from the
//! last trade id seen, and per order whose filled quantity grew), and — after a gap — the orders
//! that were created and ended while nobody listened (`allOrders` since the gap began).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::Context;

use super::convert;
use super::rest::RestClient;
use crate::account::{AccountView, Fill, Market, Millis, Order, Snapshot};

/// The highest trade id seen per symbol: where trade backfill starts.
pub type TradeCursors = BTreeMap<String, i64>;

/// Takes a snapshot and resolves what the cache holds that the snapshot does not explain.
/// `gap_since` is the exchange time from which the stream may have missed events (`None` for a
/// reconciliation while connected).
pub async fn fetch(
    rest: &RestClient,
    view: &AccountView,
    cursors: &TradeCursors,
    gap_since: Option<Millis>,
) -> anyhow::Result<Snapshot> {
    let as_of = rest.server_now();
    let mut snap = Snapshot {
        as_of,
        ..Snapshot::default()
    };
    match rest.market() {
        Market::Spot => {
            let omit_zero = [("omitZeroBalances", "true".to_owned())];
            let (account, orders) = tokio::join!(
                rest.signed_get("/api/v3/account", &omit_zero),
                rest.signed_get("/api/v3/openOrders", &[]),
            );
            let (_, balances) = convert::spot_account(&account.context("GET /api/v3/account")?)?;
            snap.balances = balances;
            snap.orders = convert::spot_orders(&orders.context("GET /api/v3/openOrders")?)?;
        }
        Market::Usdm => {
            let (account, positions, orders, algos) = tokio::join!(
                rest.signed_get("/fapi/v3/account", &[]),
                rest.signed_get("/fapi/v3/positionRisk", &[]),
                rest.signed_get("/fapi/v1/openOrders", &[]),
                rest.signed_get("/fapi/v1/openAlgoOrders", &[]),
            );
            snap.balances = convert::usdm_account(&account.context("GET /fapi/v3/account")?)?;
            snap.positions = Some(convert::usdm_positions(
                &positions.context("GET /fapi/v3/positionRisk")?,
            )?);
            snap.orders = convert::usdm_orders(&orders.context("GET /fapi/v1/openOrders")?)?;
            snap.orders.extend(convert::usdm_algo_orders(
                &algos.context("GET /fapi/v1/openAlgoOrders")?,
            )?);
        }
    }
    snap.checked_orders = Some(view.open_orders.keys().cloned().collect());
    if let Some(since) = gap_since {
        let symbols: BTreeSet<String> = cursors
            .keys()
            .cloned()
            .chain(view.open_orders.values().map(|o| o.symbol.clone()))
            .chain(snap.orders.iter().map(|o| o.symbol.clone()))
            .collect();
        let known: HashSet<String> = snap
            .orders
            .iter()
            .map(Order::key)
            .chain(view.open_orders.keys().cloned())
            .collect();
        for symbol in symbols {
            let created = orders_created_since(rest, &symbol, since).await;
            snap.orders
                .extend(created.into_iter().filter(|o| !known.contains(&o.key())));
        }
    }
    resolve_gaps(rest, view, cursors, &mut snap).await;
    Ok(snap)
}

/// Every order of `symbol` created at or after `since` (pages of 1000 by order id).
async fn orders_created_since(rest: &RestClient, symbol: &str, since: Millis) -> Vec<Order> {
    let path = match rest.market() {
        Market::Spot => "/api/v3/allOrders",
        Market::Usdm => "/fapi/v1/allOrders",
    };
    let mut out: Vec<Order> = Vec::new();
    let mut from: Option<i64> = None;
    loop {
        let mut params = vec![
            ("symbol", symbol.to_owned()),
            ("startTime", since.to_string()),
            ("limit", "1000".to_owned()),
        ];
        if let Some(id) = from {
            params.push(("orderId", id.to_string()));
        }
        let page = match rest.signed_get(path, &params).await {
            Ok(body) => match rest.market() {
                Market::Spot => convert::spot_orders(&body),
                Market::Usdm => convert::usdm_orders(&body),
            },
            Err(e) => {
                tracing::warn!(symbol, error = %e, "could not list the orders of the gap");
                return out;
            }
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(symbol, error = %e, "unreadable order list");
                return out;
            }
        };
        let n = page.len();
        from = page.iter().map(|o| o.order_id + 1).max().or(from);
        out.extend(page);
        if n < 1000 {
            return out;
        }
    }
}

fn paths(market: Market) -> (&'static str, &'static str) {
    match market {
        Market::Spot => ("/api/v3/order", "/api/v3/myTrades"),
        Market::Usdm => ("/fapi/v1/order", "/fapi/v1/userTrades"),
    }
}

async fn get_order(rest: &RestClient, symbol: &str, order_id: i64) -> anyhow::Result<Order> {
    let (order_path, _) = paths(rest.market());
    let body = rest
        .signed_get(
            order_path,
            &[
                ("symbol", symbol.to_owned()),
                ("orderId", order_id.to_string()),
            ],
        )
        .await?;
    Ok(match rest.market() {
        Market::Spot => convert::spot_order(&body)?,
        Market::Usdm => convert::usdm_order(&body)?,
    })
}

async fn get_trades(
    rest: &RestClient,
    symbol: &str,
    filter: (&'static str, i64),
) -> anyhow::Result<Vec<Fill>> {
    let (_, trades_path) = paths(rest.market());
    let body = rest
        .signed_get(
            trades_path,
            &[
                ("symbol", symbol.to_owned()),
                (filter.0, filter.1.to_string()),
                ("limit", "1000".into()),
            ],
        )
        .await?;
    Ok(match rest.market() {
        Market::Spot => convert::spot_trades(&body)?,
        Market::Usdm => convert::usdm_trades(&body)?,
    })
}

/// Adds to the snapshot the final state of vanished orders and the trades the stream missed.
async fn resolve_gaps(
    rest: &RestClient,
    view: &AccountView,
    cursors: &TradeCursors,
    snap: &mut Snapshot,
) {
    let listed: HashSet<String> = snap.orders.iter().map(Order::key).collect();

    // Trades: per known symbol from the last trade id seen; per order whose fill grew otherwise.
    let mut fills: Vec<Fill> = Vec::new();
    for (symbol, last) in cursors {
        // Pages of 1000 until a short page.
        let mut from = last + 1;
        loop {
            match get_trades(rest, symbol, ("fromId", from)).await {
                Ok(page) => {
                    let n = page.len();
                    from = page.iter().map(|f| f.trade_id + 1).max().unwrap_or(from);
                    fills.extend(page);
                    if n < 1000 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(symbol, error = %format!("{e:#}"), "trade backfill failed");
                    break;
                }
            }
        }
    }
    let grew: Vec<(String, i64)> = snap
        .orders
        .iter()
        .filter(|o| !cursors.contains_key(&o.symbol) && o.order_id > 0)
        .filter(|o| {
            let held = view
                .open_orders
                .get(&o.key())
                .map(|h| h.executed_qty)
                .unwrap_or_default();
            o.executed_qty > held
        })
        .map(|o| (o.symbol.clone(), o.order_id))
        .collect();
    for (symbol, order_id) in grew {
        match get_trades(rest, &symbol, ("orderId", order_id)).await {
            Ok(page) => fills.extend(page),
            Err(e) => {
                tracing::warn!(symbol, order_id, error = %format!("{e:#}"), "trade backfill failed")
            }
        }
    }

    // Orders: cached open ones that vanished (the view was taken before the REST calls, so an
    // order open in it and absent from their open list has ended — whatever the timestamps
    // say), and the ones the backfilled trades belong to.
    let mut wanted: BTreeSet<(String, i64)> = view
        .open_orders
        .values()
        .filter(|o| !listed.contains(&o.key()))
        .map(|o| (o.symbol.clone(), o.order_id))
        .collect();
    for f in &fills {
        let key = crate::account::model::order_key(&f.symbol, f.order_id);
        if !listed.contains(&key) && !view.open_orders.contains_key(&key) {
            wanted.insert((f.symbol.clone(), f.order_id));
        }
    }
    for (symbol, order_id) in wanted {
        let key = crate::account::model::order_key(&symbol, order_id);
        if order_id < 0 {
            // An algo order left the open set while we were away; REST has no single-algo
            // query here, so the cache closes it (logged) rather than keep a phantom order.
            continue;
        }
        match get_order(rest, &symbol, order_id).await {
            Ok(o) => snap.orders.push(o),
            Err(e) => {
                tracing::warn!(order = %key, error = %format!("{e:#}"), "could not learn the final state of an order");
                snap.unresolved_orders.push(key);
            }
        }
    }
    fills.sort_by_key(|f| (f.traded_at, f.trade_id));
    snap.fills = fills;
}
