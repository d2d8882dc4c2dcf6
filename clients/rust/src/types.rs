//! The contract's entities (CONTRACT §4), as a trading engine reads them: every amount a
//! `Decimal` (sent as a JSON string), every id and time an exact integer. These are the
//! client's own types, parsed from the published JSON; they do not depend on the daemon.

use rust_decimal::Decimal;
use serde::Deserialize;

/// Exchange time in milliseconds since the epoch.
pub type Millis = i64;

/// One asset's balance. USD-M accounts add the wallet balances.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Balance {
    pub asset: String,
    pub free: Decimal,
    pub locked: Decimal,
    pub total: Decimal,
    #[serde(default)]
    pub wallet_balance: Option<Decimal>,
    #[serde(default)]
    pub cross_wallet_balance: Option<Decimal>,
    pub updated_at: Millis,
}

/// One USD-M position (`symbol`, `position_side`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    pub symbol: String,
    pub position_side: String,
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub breakeven_price: Decimal,
    pub unrealized_pnl: Decimal,
    pub realized_pnl: Decimal,
    pub margin_type: String,
    pub isolated_wallet: Decimal,
    pub updated_at: Millis,
}

impl Position {
    /// The hash field: `SYMBOL:SIDE`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.symbol, self.position_side)
    }
}

/// One order, open or finished.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Order {
    pub symbol: String,
    pub order_id: i64,
    pub client_order_id: String,
    pub side: String,
    pub order_type: String,
    pub time_in_force: String,
    pub status: String,
    pub price: Decimal,
    pub stop_price: Decimal,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub cum_quote_qty: Decimal,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Order {
    /// The hash field: `SYMBOL:ORDERID`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.symbol, self.order_id)
    }

    /// A finished order never changes again and leaves the open set.
    pub fn is_final(&self) -> bool {
        matches!(
            self.status.as_str(),
            "FILLED"
                | "CANCELED"
                | "REJECTED"
                | "EXPIRED"
                | "EXPIRED_IN_MATCH"
                | "TRIGGERED"
                | "FINISHED"
        )
    }
}

/// One trade.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Fill {
    pub symbol: String,
    pub trade_id: i64,
    pub order_id: i64,
    pub side: String,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub is_maker: bool,
    #[serde(default)]
    pub realized_pnl: Option<Decimal>,
    pub traded_at: Millis,
}

/// A state transition of the daemon's stream (`connected`, `resynced`, `resync`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    pub event: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// What a change carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    Balance(Balance),
    Position(Position),
    Order(Order),
    Fill(Fill),
    Status(Status),
}

/// One numbered change, as published on the channels and in `P:changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    /// `stream` or `snapshot`.
    pub source: String,
    pub event_time: Millis,
    pub entity: Entity,
}

impl Change {
    /// `{"kind":"status","data":{"event":"resync"}}`: the state keys were rewritten.
    pub fn is_resync(&self) -> bool {
        matches!(&self.entity, Entity::Status(s) if s.event == "resync")
    }
}

/// A message that is not the contract's.
#[derive(Debug, thiserror::Error)]
#[error("not an acctstate message: {0}")]
pub struct BadMessage(pub String);

#[derive(Deserialize)]
struct Envelope {
    seq: i64,
    kind: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    event_time: Millis,
    data: serde_json::Value,
}

fn entity<T: serde::de::DeserializeOwned>(data: serde_json::Value) -> Result<T, BadMessage> {
    serde_json::from_value(data).map_err(|e| BadMessage(e.to_string()))
}

/// Parses one message (a channel message or a stream entry's `m`).
pub fn parse_change(text: &str) -> Result<Change, BadMessage> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| BadMessage(e.to_string()))?;
    let entity = match env.kind.as_str() {
        "balance" => Entity::Balance(entity(env.data)?),
        "position" => Entity::Position(entity(env.data)?),
        "order" => Entity::Order(entity(env.data)?),
        "fill" => Entity::Fill(entity(env.data)?),
        "status" => Entity::Status(entity(env.data)?),
        other => return Err(BadMessage(format!("unknown kind `{other}`"))),
    };
    Ok(Change {
        seq: env.seq,
        source: env.source,
        event_time: env.event_time,
        entity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_exactly() {
        let order = r#"{"v":1,"account_id":"main","seq":9007199254740993,"kind":"order","source":"stream","event_time":1,"data":{"symbol":"BTCUSDT","order_id":8389765739703625592,"client_order_id":"c","side":"BUY","order_type":"LIMIT","time_in_force":"GTC","status":"FILLED","price":"0.000000000000000001","stop_price":"0","orig_qty":"79228162514264337593543950335","executed_qty":"1","cum_quote_qty":"1","created_at":1,"updated_at":2}}"#;
        let c = parse_change(order).unwrap();
        assert_eq!(c.seq, 9_007_199_254_740_993);
        let Entity::Order(o) = &c.entity else {
            panic!("{c:?}")
        };
        assert_eq!(o.order_id, 8_389_765_739_703_625_592);
        assert_eq!(o.price.to_string(), "0.000000000000000001");
        assert!(o.is_final());
        let fill = r#"{"seq":2,"kind":"fill","data":{"symbol":"S","trade_id":1,"order_id":1,"side":"SELL","price":"1.5","qty":"2","quote_qty":"3","commission":"0","commission_asset":"USDT","is_maker":true,"traded_at":5,"realized_pnl":"-1.25"}}"#;
        let Entity::Fill(f) = parse_change(fill).unwrap().entity else {
            panic!()
        };
        assert_eq!(f.realized_pnl, Some(Decimal::new(-125, 2)));
        let resync = r#"{"seq":3,"kind":"status","data":{"event":"resync"}}"#;
        assert!(parse_change(resync).unwrap().is_resync());
        assert!(parse_change(r#"{"seq":3,"kind":"balance","data":{"asset":1}}"#).is_err());
        assert!(parse_change(r#"{"seq":3,"kind":"nope","data":{}}"#).is_err());
    }
}
