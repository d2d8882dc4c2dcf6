//! What the cache emits: numbered changes, each carrying an entity's whole new state.
//!
//! A `Change` is the unit that flows to Postgres (one journal row) and Redis (one message).
//! `seq` rises strictly per account, across restarts too (see `seq_floor`).

use serde::Serialize;

use super::model::{Balance, Fill, Millis, Order, Position};

/// Where a change came from: the live stream, or a REST snapshot correcting the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Stream,
    Snapshot,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Snapshot => "snapshot",
        }
    }
}

/// The entity kinds; each is a Redis channel's last word and `account_changes.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Balance,
    Position,
    Order,
    Fill,
    Status,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Balance,
        Kind::Position,
        Kind::Order,
        Kind::Fill,
        Kind::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Balance => "balance",
            Kind::Position => "position",
            Kind::Order => "order",
            Kind::Fill => "fill",
            Kind::Status => "status",
        }
    }
}

/// A status event of the daemon itself (stream connected, resync, ...), published on `P:status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEvent {
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The new state of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Entity {
    Balance(Balance),
    Position(Position),
    Order(Order),
    Fill(Fill),
    Status(StatusEvent),
}

impl Entity {
    pub fn kind(&self) -> Kind {
        match self {
            Entity::Balance(_) => Kind::Balance,
            Entity::Position(_) => Kind::Position,
            Entity::Order(_) => Kind::Order,
            Entity::Fill(_) => Kind::Fill,
            Entity::Status(_) => Kind::Status,
        }
    }

    /// The entity's key: the Redis hash field, and `account_changes.key`.
    pub fn key(&self) -> String {
        match self {
            Entity::Balance(b) => b.asset.clone(),
            Entity::Position(p) => p.key(),
            Entity::Order(o) => o.key(),
            Entity::Fill(f) => f.key(),
            Entity::Status(_) => "stream".to_owned(),
        }
    }
}

/// One numbered change of the account.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: i64,
    pub source: Source,
    /// The exchange's event time (or the snapshot's time) in milliseconds.
    pub event_time: Millis,
    pub entity: Entity,
    /// The entity's JSON, made by the first sink that needs it (the Redis hash field and
    /// message `data`, the journal's `data`): each entity is serialized once, not once per sink.
    json: std::sync::OnceLock<Box<str>>,
}

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.source == other.source
            && self.event_time == other.event_time
            && self.entity == other.entity
    }
}

impl Eq for Change {}

impl Change {
    pub fn new(seq: i64, source: Source, event_time: Millis, entity: Entity) -> Self {
        Change {
            seq,
            source,
            event_time,
            entity,
            json: std::sync::OnceLock::new(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.entity.kind()
    }

    pub fn key(&self) -> String {
        self.entity.key()
    }

    /// The entity as JSON text, serialized on first use and kept.
    pub fn json(&self) -> Result<&str, serde_json::Error> {
        if let Some(s) = self.json.get() {
            return Ok(s);
        }
        let s = serde_json::to_string(&self.entity)?.into_boxed_str();
        Ok(self.json.get_or_init(|| s))
    }

    /// The JSON object of the contract's Redis message (§4).
    pub fn message(&self, account_id: &str) -> serde_json::Value {
        serde_json::json!({
            "v": 1,
            "account_id": account_id,
            "seq": self.seq,
            "kind": self.kind(),
            "source": self.source,
            "event_time": self.event_time,
            "data": self.entity,
        })
    }
}

/// The first seq of a run: above every seq an earlier run can have used, even when Postgres
/// is unreachable at start (wall clock in microseconds), and above what Postgres holds.
pub fn seq_floor(last_in_postgres: Option<i64>, now_micros: i64) -> i64 {
    last_in_postgres.unwrap_or(0).max(now_micros) + 1
}
