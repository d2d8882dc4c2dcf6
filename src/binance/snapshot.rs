//! REST snapshots of the whole account, in domain terms, for the resync after every (re)connect
//! and the periodic reconciliation.
//!
//! Besides balances, positions and open orders it recovers what the stream did not deliver —
//! after a gap, and while connected too (Binance does not promise that a live stream carries
//! every event): the final state of orders that left the open set, and, per known symbol, every
//! trade and every order created in a time window that reaches back over the last recovery
//! (`RECOVERY_OVERLAP_MS` before it; inserts are idempotent, so asking again is safe). The
//! highest trade id is not trusted: an unannounced trade with a lower id than a later announced
//! one is still inside the window. Only a symbol whose history is older than the window (a long
//! downtime) is read from its last trade id instead.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::Context;

use super::convert;
use super::rest::RestClient;
use crate::account::{Fill, Market, Millis, Order, Snapshot, ViewRef};

/// The highest trade id seen in a symbol, and when it traded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub trade_id: i64,
    pub traded_at: Millis,
}

/// Per symbol: where its recorded trade history ends.
pub type TradeCursors = BTreeMap<String, Cursor>;

/// Each recovery reaches this far back before the previous one's snapshot time: trades that
/// reached REST late (Binance: "RESTful endpoints may experience query delays") are asked for
/// again.
pub const RECOVERY_OVERLAP_MS: Millis = 60_000;
/// The longest window a recovery asks for (Binance's Spot trade queries span at most 24 hours).
pub const RECOVERY_LOOKBACK_MS: Millis = 24 * 3_600_000 - 60_000;
/// The span of one trade query: the window's end lies well past "now" (at least a minute, as the
/// lookback leaves it), so a trade the exchange stamped after our estimate of its clock is
/// still inside.
const TRADE_QUERY_SPAN_MS: Millis = 24 * 3_600_000 - 1_000;

/// The cache's open orders as a snapshot needs them, key → (symbol, order id): taken on the
/// cache actor (`CacheHandle::read`), so a reconciliation copies ids, not the account.
pub type OpenIds = BTreeMap<String, (String, i64)>;

/// The open orders of `view`, as ids.
pub fn open_ids(view: ViewRef<'_>) -> OpenIds {
    view.open_orders
        .iter()
        .map(|(k, o)| (k.clone(), (o.symbol.clone(), o.order_id)))
        .collect()
}

/// A snapshot, and whether its recovery asked every question it meant to (if not, the next one
/// covers the same window again).
pub struct Fetched {
    pub snap: Snapshot,
    pub recovered: bool,
}

/// Takes a snapshot and resolves what the cache holds that the snapshot does not explain.
/// `since` is the exchange time from which events may have been missed (the last complete
/// recovery, less the overlap); `None` at a first start (the last overlap only).
pub async fn fetch(
    rest: &RestClient,
    open: &OpenIds,
    cursors: &TradeCursors,
    since: Option<Millis>,
) -> anyhow::Result<Fetched> {
    let as_of = rest.server_now();
    let from = since
        .unwrap_or(as_of - RECOVERY_OVERLAP_MS)
        .max(as_of - RECOVERY_LOOKBACK_MS);
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
    snap.checked_orders = Some(open.keys().cloned().collect());
    let symbols: BTreeSet<String> = cursors
        .keys()
        .cloned()
        .chain(open.values().map(|(symbol, _)| symbol.clone()))
        .chain(snap.orders.iter().map(|o| o.symbol.clone()))
        .collect();
    let known: HashSet<String> = snap
        .orders
        .iter()
        .map(Order::key)
        .chain(open.keys().cloned())
        .collect();
    let mut recovered = true;
    for symbol in &symbols {
        match orders_created_since(rest, symbol, from).await {
            Ok(created) => snap
                .orders
                .extend(created.into_iter().filter(|o| !known.contains(&o.key()))),
            Err(e) => {
                tracing::warn!(account_id = rest.account_id(), symbol, error = %format!("{e:#}"), "could not list the orders of the recovery window");
                recovered = false;
            }
        }
    }
    recovered &= resolve_gaps(rest, open, cursors, &symbols, from, &mut snap).await;
    Ok(Fetched { snap, recovered })
}

/// Every order of `symbol` created at or after `since` (pages of 1000 by order id).
async fn orders_created_since(
    rest: &RestClient,
    symbol: &str,
    since: Millis,
) -> anyhow::Result<Vec<Order>> {
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
        let body = rest.signed_get(path, &params).await?;
        let page = match rest.market() {
            Market::Spot => convert::spot_orders(&body),
            Market::Usdm => convert::usdm_orders(&body),
        }
        .context("unreadable order list")?;
        let n = page.len();
        from = page.iter().map(|o| o.order_id + 1).max().or(from);
        out.extend(page);
        if n < 1000 {
            return Ok(out);
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

/// Trades of `symbol` from `start`: a time window (`start` = `(from, to)`) or a trade id; pages
/// of 1000, continued by trade id (Binance takes no time bound beside `fromId`).
async fn get_trades(
    rest: &RestClient,
    symbol: &str,
    start: TradesFrom,
) -> anyhow::Result<Vec<Fill>> {
    let (_, trades_path) = paths(rest.market());
    let mut out: Vec<Fill> = Vec::new();
    let mut next = start;
    loop {
        let mut params = vec![("symbol", symbol.to_owned()), ("limit", "1000".to_owned())];
        match next {
            TradesFrom::Window(from, to) => {
                params.push(("startTime", from.to_string()));
                params.push(("endTime", to.to_string()));
            }
            TradesFrom::Id(id) => params.push(("fromId", id.to_string())),
        }
        let body = rest.signed_get(trades_path, &params).await?;
        let page = match rest.market() {
            Market::Spot => convert::spot_trades(&body)?,
            Market::Usdm => convert::usdm_trades(&body)?,
        };
        let n = page.len();
        let Some(last) = page.iter().map(|f| f.trade_id).max() else {
            return Ok(out);
        };
        out.extend(page);
        if n < 1000 {
            return Ok(out);
        }
        next = TradesFrom::Id(last + 1);
    }
}

/// Where a trade query starts.
#[derive(Debug, Clone, Copy)]
enum TradesFrom {
    /// Exchange times, both inclusive.
    Window(Millis, Millis),
    Id(i64),
}

/// Adds to the snapshot the final state of vanished orders and the trades the stream missed
/// (every trade from `from` on per symbol, or everything after the cursor of a
/// symbol whose last recorded trade is older than `from`); false if a query failed.
async fn resolve_gaps(
    rest: &RestClient,
    open: &OpenIds,
    cursors: &TradeCursors,
    symbols: &BTreeSet<String>,
    from: Millis,
    snap: &mut Snapshot,
) -> bool {
    let listed: HashSet<String> = snap.orders.iter().map(Order::key).collect();
    let mut recovered = true;
    let mut fills: Vec<Fill> = Vec::new();
    for symbol in symbols {
        let start = match cursors.get(symbol) {
            // Everything after it is newer than the window's start: its ids cover the window.
            Some(c) if c.traded_at < from => TradesFrom::Id(c.trade_id + 1),
            _ => TradesFrom::Window(from, from + TRADE_QUERY_SPAN_MS),
        };
        match get_trades(rest, symbol, start).await {
            Ok(page) => {
                tracing::debug!(
                    account_id = rest.account_id(),
                    symbol,
                    ?start,
                    trades = page.len(),
                    "trades recovered"
                );
                fills.extend(page);
            }
            Err(e) => {
                tracing::warn!(account_id = rest.account_id(), symbol, error = %format!("{e:#}"), "trade recovery failed");
                recovered = false;
            }
        }
    }

    // Orders: cached open ones that vanished (the view was taken before the REST calls, so an
    // order open in it and absent from their open list has ended — whatever the timestamps
    // say), and the ones the backfilled trades belong to.
    let mut wanted: BTreeSet<(String, i64)> = open
        .iter()
        .filter(|(key, _)| !listed.contains(*key))
        .map(|(_, (symbol, id))| (symbol.clone(), *id))
        .collect();
    for f in &fills {
        let key = crate::account::model::order_key(&f.symbol, f.order_id);
        if !listed.contains(&key) && !open.contains_key(&key) {
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
                tracing::warn!(account_id = rest.account_id(), order = %key, error = %format!("{e:#}"), "could not learn the final state of an order");
                snap.unresolved_orders.push(key);
            }
        }
    }
    fills.sort_by_key(|f| (f.traded_at, f.trade_id));
    snap.fills = fills;
    recovered
}
