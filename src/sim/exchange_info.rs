//! `GET /api/v3/exchangeInfo` and `GET /fapi/v1/exchangeInfo`: the sim's symbols with their
//! status, assets, precisions and filters, the rate limits, `serverTime` and `timezone`; and the
//! filters themselves ([`Filters`]), which order entry enforces.
//!
//! Shapes follow Binance's documented examples ([S-REST] "Exchange information", USD-M
//! "Exchange Information" page) and the field names of the official SDK models: Spot symbols
//! carry `baseAssetPrecision`, `quotePrecision`, `quoteAssetPrecision`, `orderTypes`,
//! `permissionSets`, filters `PRICE_FILTER`/`LOT_SIZE`/`MARKET_LOT_SIZE`/`NOTIONAL`/
//! `MAX_NUM_ORDERS` (`maxNumOrders`); USD-M symbols carry `pricePrecision`,
//! `quantityPrecision`, `orderTypes` (the docs' example spells it `OrderType`; production and
//! the SDKs use `orderTypes`), `timeInForce`, filters `PRICE_FILTER`/`LOT_SIZE`/
//! `MARKET_LOT_SIZE`/`MAX_NUM_ORDERS` (`limit`)/`MIN_NOTIONAL` (`notional`)/`PERCENT_PRICE`.
//! Spot decimals have 8 places; USD-M decimals the shortest form, as Binance sends them.
//!
//! Inference: every sim symbol is `TRADING`; the minimum notional is 5 USDT on both markets
//! (Binance uses 5, and 100 for some USD-M majors; 5 keeps the sim's own session within it).

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::SimMarket;
use super::account::{Model, SymbolSpec, dec};
use super::payloads::{f8, fs};

/// The trading rules of one symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Filters {
    pub tick: Decimal,
    pub min_price: Decimal,
    pub max_price: Decimal,
    pub step: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub min_notional: Decimal,
}

impl Filters {
    pub fn of(spec: &SymbolSpec) -> Filters {
        let tick = dec(1, spec.price_dp);
        let step = dec(1, spec.qty_dp);
        Filters {
            tick,
            min_price: tick,
            max_price: dec(10_000_000, 0),
            step,
            min_qty: step,
            max_qty: dec(100_000, 0),
            min_notional: dec(5, 0),
        }
    }
}

fn spot_rate_limits(weight_limit: u32) -> Value {
    json!([
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": weight_limit},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}
    ])
}

fn usdm_rate_limits(weight_limit: u32) -> Value {
    json!([
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": weight_limit},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
    ])
}

fn spot_symbol(s: &SymbolSpec) -> Value {
    let f = Filters::of(s);
    json!({
        "symbol": s.name,
        "status": "TRADING",
        "baseAsset": s.base,
        "baseAssetPrecision": 8,
        "quoteAsset": s.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": false,
        "ocoAllowed": true,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": false,
        "amendAllowed": false,
        "pegInstructionsAllowed": false,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": f8(f.min_price), "maxPrice": f8(f.max_price), "tickSize": f8(f.tick)},
            {"filterType": "LOT_SIZE", "minQty": f8(f.min_qty), "maxQty": f8(f.max_qty), "stepSize": f8(f.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": f8(Decimal::ZERO), "maxQty": f8(f.max_qty), "stepSize": f8(Decimal::ZERO)},
            {"filterType": "NOTIONAL", "minNotional": f8(f.min_notional), "applyMinToMarket": true,
             "maxNotional": f8(dec(9_000_000, 0)), "applyMaxToMarket": false, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]
    })
}

fn usdm_symbol(s: &SymbolSpec, onboard: i64) -> Value {
    let f = Filters::of(s);
    json!({
        "symbol": s.name,
        "pair": s.name,
        "contractType": "PERPETUAL",
        "deliveryDate": 4_133_404_800_000_i64,
        "onboardDate": onboard,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": s.base,
        "quoteAsset": s.quote,
        "marginAsset": s.quote,
        "pricePrecision": s.price_dp,
        "quantityPrecision": s.qty_dp,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": fs(f.min_price), "maxPrice": fs(f.max_price), "tickSize": fs(f.tick)},
            {"filterType": "LOT_SIZE", "minQty": fs(f.min_qty), "maxQty": fs(f.max_qty), "stepSize": fs(f.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": fs(f.min_qty), "maxQty": fs(f.max_qty), "stepSize": fs(f.step)},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": fs(f.min_notional)},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"}
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"]
    })
}

/// The exchangeInfo body; `only` = the symbols asked for (`symbol` / `symbols`), if any.
pub(crate) fn build(
    m: &Model,
    server_time: i64,
    weight_limit: u32,
    only: Option<&[String]>,
) -> Value {
    let wanted = |s: &&SymbolSpec| only.is_none_or(|o| o.contains(&s.name));
    match m.market {
        SimMarket::Spot => {
            let symbols: Vec<Value> = m.symbols.iter().filter(wanted).map(spot_symbol).collect();
            json!({
                "timezone": "UTC",
                "serverTime": server_time,
                "rateLimits": spot_rate_limits(weight_limit),
                "exchangeFilters": [],
                "symbols": symbols
            })
        }
        SimMarket::Usdm => {
            let onboard = 1_569_398_400_000_i64;
            let symbols: Vec<Value> = m
                .symbols
                .iter()
                .filter(wanted)
                .map(|s| usdm_symbol(s, onboard))
                .collect();
            let mut assets: Vec<String> = m.symbols.iter().map(|s| s.quote.clone()).collect();
            assets.push("BNB".to_string());
            assets.sort();
            assets.dedup();
            let assets: Vec<Value> = assets
                .iter()
                .map(
                    |a| json!({"asset": a, "marginAvailable": true, "autoAssetExchange": "-10000"}),
                )
                .collect();
            json!({
                "timezone": "UTC",
                "serverTime": server_time,
                "futuresType": "U_MARGINED",
                "rateLimits": usdm_rate_limits(weight_limit),
                "exchangeFilters": [],
                "assets": assets,
                "symbols": symbols
            })
        }
    }
}

/// The `symbol` / `symbols` (`["A","B"]`) parameters of a Spot exchangeInfo request.
pub(crate) fn requested_symbols(
    symbol: Option<&str>,
    symbols: Option<&str>,
) -> Option<Result<Vec<String>, ()>> {
    if let Some(s) = symbol {
        return Some(Ok(vec![s.to_string()]));
    }
    let raw = symbols?;
    Some(serde_json::from_str::<Vec<String>>(raw).map_err(|_| ()))
}
