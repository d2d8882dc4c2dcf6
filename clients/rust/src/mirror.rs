//! `Mirror`: one account's exact state, joined late from the state keys and followed through
//! the change stream `P:changes` (CONTRACT §4, protocol v2).
//!
//! - `load` reads `P:balances`, `P:positions`, `P:open_orders` and `P:seq` in one MULTI/EXEC.
//! - `poll` reads the stream after the last entry applied (`XREAD BLOCK`), in order. Within a
//!   daemon run seqs rise by one per change, so an entry that is neither the next seq nor a
//!   `resync` marker means the entries between were trimmed away: the mirror falls back to the
//!   keys. A `resync` marker (the daemon rewrote the keys after a Redis outage or a restart)
//!   makes it re-read them too. After its own disconnect it simply reads on from the last entry
//!   — no re-read while that entry's successors are still in the stream.
//! - A seq is applied at most once and never backwards.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::XReadResponse;

use crate::types::{Balance, Change, Entity, Fill, Order, Position, parse_change};

/// Fills kept in `Mirror::recent_fills`.
const RECENT_FILLS: usize = 1_000;
/// Entries read per `XREAD`.
const READ_COUNT: u64 = 1_000;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    BadMessage(#[from] crate::types::BadMessage),
    #[error("bad state key {key}: {problem}")]
    BadKey { key: String, problem: String },
}

/// How the mirror got where it is (for monitoring and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Reads of the state keys (the first join included).
    pub loads: u64,
    /// Re-reads because the stream no longer held the next entry.
    pub fallbacks: u64,
    /// Re-reads because the daemon published `resync`.
    pub resyncs: u64,
    /// Changes applied.
    pub applied: u64,
    /// Stream entries skipped because their seq was already applied.
    pub skipped: u64,
}

/// A hash as Redis returns it.
type Fields = HashMap<String, String>;

/// The key names of one account.
#[derive(Debug, Clone)]
struct Keys {
    balances: String,
    positions: String,
    open_orders: String,
    seq: String,
    changes: String,
}

impl Keys {
    fn new(prefix: &str, account_id: &str) -> Keys {
        let p = format!("{prefix}:{account_id}");
        Keys {
            balances: format!("{p}:balances"),
            positions: format!("{p}:positions"),
            open_orders: format!("{p}:open_orders"),
            seq: format!("{p}:seq"),
            changes: format!("{p}:changes"),
        }
    }
}

/// One account's state as the daemon published it.
pub struct Mirror {
    client: Client,
    keys: Keys,
    /// The seq of the last change reflected (`None` until loaded).
    seq: Option<i64>,
    /// The stream id to read after.
    cursor: String,
    pub balances: BTreeMap<String, Balance>,
    pub positions: BTreeMap<String, Position>,
    pub open_orders: BTreeMap<String, Order>,
    /// The latest fills seen on the stream (fills have no state key).
    pub recent_fills: VecDeque<Fill>,
    pub stats: Stats,
}

fn parse_hash<T: serde::de::DeserializeOwned>(
    key: &str,
    fields: HashMap<String, String>,
) -> Result<BTreeMap<String, T>, Error> {
    fields
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_str(&v)
                .map(|t| (k.clone(), t))
                .map_err(|e| Error::BadKey {
                    key: format!("{key} field {k}"),
                    problem: e.to_string(),
                })
        })
        .collect()
}

impl Mirror {
    /// A mirror of `account_id` on a client the caller built and connected (give it a
    /// `ReconnectPolicy` so it comes back after Redis or the network blips).
    pub fn new(client: Client, prefix: &str, account_id: &str) -> Mirror {
        Mirror {
            client,
            keys: Keys::new(prefix, account_id),
            seq: None,
            cursor: "0-0".to_owned(),
            balances: BTreeMap::new(),
            positions: BTreeMap::new(),
            open_orders: BTreeMap::new(),
            recent_fills: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Connects to `url` with a reconnect policy (forever, 100 ms doubling to 2 s).
    pub async fn connect(url: &str, prefix: &str, account_id: &str) -> Result<Mirror, Error> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()?;
        client.init().await?;
        Ok(Mirror::new(client, prefix, account_id))
    }

    /// The seq of the last change reflected, once loaded.
    pub fn seq(&self) -> Option<i64> {
        self.seq
    }

    /// Reads the state keys and `P:seq` at one instant. Returns false when the daemon has not
    /// written them yet (no `P:seq`): try again later.
    pub async fn load(&mut self) -> Result<bool, Error> {
        let trx = self.client.multi();
        let _: () = trx.hgetall(&self.keys.balances).await?;
        let _: () = trx.hgetall(&self.keys.positions).await?;
        let _: () = trx.hgetall(&self.keys.open_orders).await?;
        let _: () = trx.get(&self.keys.seq).await?;
        let (balances, positions, open_orders, seq): (Fields, Fields, Fields, Option<String>) =
            trx.exec(true).await?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        let seq: i64 = seq.parse().map_err(|_| Error::BadKey {
            key: self.keys.seq.clone(),
            problem: format!("`{seq}` is not a seq"),
        })?;
        self.balances = parse_hash(&self.keys.balances, balances)?;
        self.positions = parse_hash(&self.keys.positions, positions)?;
        self.open_orders = parse_hash(&self.keys.open_orders, open_orders)?;
        self.seq = Some(seq);
        self.cursor = format!("{seq}-0");
        self.stats.loads += 1;
        Ok(true)
    }

    /// Waits up to `block` for changes after the last one applied, applies them and returns
    /// them (loading the keys first if needed, again after a trim or a `resync`). An error
    /// (Redis away) leaves the mirror as it was: call again, it resumes where it stopped.
    pub async fn poll(&mut self, block: Duration) -> Result<Vec<Change>, Error> {
        if self.seq.is_none() && !self.load().await? {
            tokio::time::sleep(block.min(Duration::from_millis(100))).await;
            return Ok(Vec::new());
        }
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
        let reply: XReadResponse<String, String, String, String> = self
            .client
            .xread_map(
                Some(READ_COUNT),
                Some(block_ms),
                self.keys.changes.clone(),
                self.cursor.clone(),
            )
            .await?;
        let entries = reply.into_values().next().unwrap_or_default();
        let mut applied = Vec::new();
        for (id, mut fields) in entries {
            let Some(text) = fields.remove("m") else {
                continue;
            };
            let change = parse_change(&text)?;
            let held = self.seq.unwrap_or(i64::MIN);
            if change.is_resync() {
                self.stats.resyncs += 1;
                self.reload_at(&id, change.seq).await?;
                applied.push(change);
                return Ok(applied);
            }
            if change.seq <= held {
                self.stats.skipped += 1;
                self.cursor = id;
                continue;
            }
            if change.seq != held + 1 {
                // The entries between were trimmed away (or lost with Redis): start over from
                // the keys.
                self.stats.fallbacks += 1;
                self.reload_at(&id, change.seq - 1).await?;
                return Ok(applied);
            }
            self.apply(&change);
            self.cursor = id;
            applied.push(change);
        }
        Ok(applied)
    }

    /// Re-reads the keys after the stream entry `id` (whose seq is `at`) said to: if the keys
    /// are still at or below `at`, reading goes on after `id`; past it, after their seq.
    async fn reload_at(&mut self, id: &str, at: i64) -> Result<(), Error> {
        if !self.load().await? {
            self.seq = None;
            return Ok(());
        }
        if self.seq.is_some_and(|s| s <= at) {
            self.cursor = id.to_owned();
        }
        Ok(())
    }

    fn apply(&mut self, change: &Change) {
        match &change.entity {
            Entity::Balance(b) => {
                self.balances.insert(b.asset.clone(), b.clone());
            }
            Entity::Position(p) => {
                self.positions.insert(p.key(), p.clone());
            }
            Entity::Order(o) if o.is_final() => {
                self.open_orders.remove(&o.key());
            }
            Entity::Order(o) => {
                self.open_orders.insert(o.key(), o.clone());
            }
            Entity::Fill(f) => {
                if self.recent_fills.len() == RECENT_FILLS {
                    self.recent_fills.pop_front();
                }
                self.recent_fills.push_back(f.clone());
            }
            Entity::Status(_) => {}
        }
        self.seq = Some(change.seq);
        self.stats.applied += 1;
    }
}
