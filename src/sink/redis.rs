//! The Redis publisher: state keys, PUBLISH and the change stream in one MULTI/EXEC per batch
//! (contract §4). One publisher task per account, all on one shared client (`SharedRedis`):
//! fred pipelines the accounts' scripts on its connection, and each account keeps its own
//! bookkeeping (what it wrote last, whether it must resync), so one account's refusal or resync
//! never touches another's keys.
//!
//! With `P` = `{prefix}:{account_id}`: hashes `P:balances`, `P:positions`, `P:open_orders`, the
//! string `P:seq`, one channel per kind, and the stream `P:changes` (entry `{seq}-0`, field `m` =
//! the published message, trimmed to about `redis.stream_maxlen`). A resync appends its status
//! message as `{seq}-*` (above every change it covers), so a reader resuming from the stream
//! meets it and re-reads the hashes; the stream goes on above it. Pub/sub is at-most-once, so while Redis is down
//! messages are dropped (counted); once Redis answers again the state keys are rewritten from
//! the cache's view and `{"event":"resync"}` is published on `P:status`. Changes the view
//! already covers (seq ≤ the view's) are then skipped, so nothing is applied twice.
//!
//! The state keys must always be exactly the cache, whatever happened to Redis. Each batch is
//! one Lua script that writes only if `P:seq` still holds the seq this publisher wrote last
//! (else it writes nothing), and a quiet publisher reads `P:seq` every `PROBE_EVERY`: a Redis
//! that lost its data (restarted empty, flushed, failed over) or was written by someone else is
//! rewritten from the cache — never shown half-written, and without relying on the client
//! noticing a reconnect.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use fred::bytes_utils::Str;
use fred::prelude::*;
use fred::types::Key;
use tokio::sync::mpsc;

use crate::account::{AccountBatch, CacheHandle, Change, ChangeBatch, Entity, Kind, ViewRef};

/// Most changes in one MULTI/EXEC.
const MAX_BATCH: usize = 500;
/// A quiet publisher checks this often that Redis still holds what it wrote.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A resync that could not run (Redis away, or it failed) is tried again after this long.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
/// At start, the first rewrite waits for the stream's first snapshot (a `resynced` status) so
/// that readers never see the cache before it: at most this long (the exchange may be away).
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// The key and channel names of one account. The names the publisher uses per change are
/// built once (`fred` keys and channel names are reference-counted, so each use is a cheap
/// clone rather than a `format!`).
#[derive(Debug, Clone)]
pub struct Keys {
    pub account_id: String,
    base: String,
    /// `account_id` as a JSON string literal (quoted, escaped), for the messages.
    account_json: String,
    balances: Key,
    positions: Key,
    open_orders: Key,
    seq: Key,
    changes: Key,
    /// Channel per kind, indexed by `Kind::ALL` position.
    channels: [Str; 5],
}

impl Keys {
    pub fn new(prefix: &str, account_id: &str) -> Self {
        let base = format!("{prefix}:{account_id}");
        Keys {
            account_id: account_id.to_owned(),
            account_json: serde_json::to_string(account_id).unwrap_or_default(),
            balances: format!("{base}:balances").into(),
            positions: format!("{base}:positions").into(),
            open_orders: format!("{base}:open_orders").into(),
            seq: format!("{base}:seq").into(),
            changes: format!("{base}:changes").into(),
            channels: Kind::ALL.map(|k| Str::from(format!("{base}:{}", k.as_str()))),
            base,
        }
    }
    pub fn channel(&self, kind: Kind) -> String {
        format!("{}:{}", self.base, kind.as_str())
    }
    pub fn balances(&self) -> String {
        format!("{}:balances", self.base)
    }
    pub fn positions(&self) -> String {
        format!("{}:positions", self.base)
    }
    pub fn open_orders(&self) -> String {
        format!("{}:open_orders", self.base)
    }
    pub fn seq(&self) -> String {
        format!("{}:seq", self.base)
    }
    pub fn changes(&self) -> String {
        format!("{}:changes", self.base)
    }
    fn channel_str(&self, kind: Kind) -> Str {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.channels[i].clone()
    }
}

/// A fred client configured so that Redis being down is a fast, counted error: reconnect
/// forever, a bounded command buffer and a command timeout.
pub fn client(url: &str) -> anyhow::Result<Client> {
    let config = Config::from_url(url).context("redis.url is not a valid Redis URL")?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_buffer_len = 10_000;
            c.max_command_attempts = 1;
            // Each batch leaves at once rather than behind Nagle's wait for an ACK.
            c.tcp.nodelay = Some(true);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(2);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .context("building the Redis client")?;
    Ok(client)
}

/// The process's Redis client, shared by every account's publisher, and a count of its
/// reconnections (each publisher resyncs its account after one).
#[derive(Clone)]
pub struct SharedRedis {
    pub client: Client,
    reconnects: Arc<AtomicU64>,
}

impl SharedRedis {
    /// Builds the client and starts connecting (in the background: Redis may be down).
    pub fn start(url: &str) -> anyhow::Result<SharedRedis> {
        let client = client(url)?;
        let reconnects = Arc::new(AtomicU64::new(0));
        let count = reconnects.clone();
        // fred reports the first connection as a reconnect too; the first resync is already due.
        let first = Arc::new(AtomicBool::new(true));
        let _listener = client.on_reconnect(move |server| {
            let count = count.clone();
            let first = first.clone();
            async move {
                if !first.swap(false, Ordering::SeqCst) {
                    tracing::info!(event = "redis_reconnected", server = %server, "redis reconnected");
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        });
        let _connection = client.connect();
        Ok(SharedRedis { client, reconnects })
    }

    /// Closes the connection (after every publisher has finished).
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
    }
}

/// A change's Redis message (the same object as `Change::message`) around the entity's JSON
/// `data`, already serialized for the hash: each entity is serialized once.
fn message_text(account_json: &str, c: &Change, data: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(data.len() + account_json.len() + 112);
    let _ = write!(
        out,
        r#"{{"v":1,"account_id":{account_json},"seq":{},"kind":"{}","source":"{}","event_time":{},"data":{data}}}"#,
        c.seq,
        c.kind().as_str(),
        c.source.as_str(),
        c.event_time,
    );
    out
}

/// A batch is written only where Redis still holds what this publisher wrote last (`P:seq`
/// equal to the seq it left there); otherwise nothing is written and the old value comes back,
/// so a Redis that restarted empty (or was written by another process) never shows a partial
/// state under a valid-looking `P:seq`: the publisher rewrites everything instead (resync).
/// KEYS: `P:seq`, `P:balances`, `P:positions`, `P:open_orders`, `P:changes`. ARGV: the expected
/// `P:seq` (`""` = absent), the new seq, the stream's maxlen (0 = off), then seven per change:
/// hash (KEYS index, 0 = none), `s`et / `d`elete / `-`, field, value, channel, message, entry id.
const PUBLISH_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return {0, cur or ''} end
local maxlen = tonumber(ARGV[3])
for i = 4, #ARGV, 7 do
  local h, op = tonumber(ARGV[i]), ARGV[i + 1]
  if op == 's' then redis.call('HSET', KEYS[h], ARGV[i + 2], ARGV[i + 3])
  elseif op == 'd' then redis.call('HDEL', KEYS[h], ARGV[i + 2]) end
  redis.call('PUBLISH', ARGV[i + 4], ARGV[i + 5])
  if maxlen > 0 then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, ARGV[i + 6], 'm', ARGV[i + 5])
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, cur or ''}
"#;

/// The publish script, loaded once per connection as needed (EVALSHA, reloaded on NOSCRIPT).
fn publish_script() -> &'static fred::types::scripts::Script {
    static SCRIPT: std::sync::OnceLock<fred::types::scripts::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| fred::types::scripts::Script::from_lua(PUBLISH_LUA))
}

/// How a batch went.
#[derive(Debug, PartialEq, Eq)]
enum Published {
    Written,
    /// Not written: `P:seq` held this (`None` = absent), not what the publisher wrote last.
    Refused(Option<i64>),
}

/// The publish script's ARGV for one batch (see `PUBLISH_LUA`): every entity serialized once,
/// for its hash field and inside its message. Pure, so the hot path's instruction count can be
/// measured without a server (`benches/hotpath.rs`).
pub fn publish_args(
    keys: &Keys,
    maxlen: u64,
    expected: Option<i64>,
    changes: &[&Change],
) -> anyhow::Result<Vec<Value>> {
    let last = changes.last().map_or(0, |c| c.seq);
    let mut args: Vec<Value> = Vec::with_capacity(3 + 7 * changes.len());
    args.push(Value::from(
        expected.map(|s| s.to_string()).unwrap_or_default(),
    ));
    args.push(Value::from(last));
    args.push(Value::from(i64::try_from(maxlen).unwrap_or(i64::MAX)));
    for c in changes {
        let data = c.json().context("serialize entity")?;
        let msg = Str::from(message_text(&keys.account_json, c, data));
        let (hash, op, field): (i64, &str, String) = match &c.entity {
            Entity::Balance(b) => (2, "s", b.asset.clone()),
            Entity::Position(p) => (3, "s", p.key()),
            Entity::Order(o) if o.status.is_final() => (4, "d", o.key()),
            Entity::Order(o) => (4, "s", o.key()),
            Entity::Fill(_) | Entity::Status(_) => (0, "-", String::new()),
        };
        args.push(Value::from(hash));
        args.push(Value::from(op));
        args.push(Value::from(field));
        args.push(Value::from(data));
        args.push(Value::from(keys.channel_str(c.kind())));
        args.push(Value::from(msg));
        args.push(Value::from(format!("{}-0", c.seq)));
    }
    Ok(args)
}

/// Writes and publishes one batch of changes atomically, if Redis still holds what this
/// publisher wrote last (`expected`, the seq it left in `P:seq`).
async fn publish(
    client: &Client,
    keys: &Keys,
    maxlen: u64,
    expected: Option<i64>,
    changes: &[&Change],
) -> anyhow::Result<Published> {
    if changes.is_empty() {
        return Ok(Published::Written);
    }
    let args = publish_args(keys, maxlen, expected, changes)?;
    let script_keys = vec![
        keys.seq.clone(),
        keys.balances.clone(),
        keys.positions.clone(),
        keys.open_orders.clone(),
        keys.changes.clone(),
    ];
    let reply: Vec<Value> = publish_script()
        .evalsha_with_reload(client, script_keys, args)
        .await
        .context("EVALSHA publish")?;
    let written = reply.first().and_then(Value::as_i64) == Some(1);
    if written {
        return Ok(Published::Written);
    }
    let held = reply
        .get(1)
        .and_then(|v| v.as_str().map(|s| s.to_string()))
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<i64>().ok());
    Ok(Published::Refused(held))
}

/// `XADD P:changes MAXLEN ~ maxlen <id> m <message>` inside `trx` (nothing when the stream is off).
async fn append(
    trx: &fred::clients::Transaction,
    keys: &Keys,
    maxlen: u64,
    id: String,
    message: Str,
) -> anyhow::Result<()> {
    if maxlen > 0 {
        let cap = ("MAXLEN", "~", i64::try_from(maxlen).unwrap_or(i64::MAX));
        let _: () = trx
            .xadd(keys.changes.clone(), false, cap, id, ("m", message))
            .await?;
    }
    Ok(())
}

/// The seq of the stream's last entry, if any.
async fn last_stream_seq(client: &Client, keys: &Keys) -> anyhow::Result<Option<i64>> {
    let last: Vec<(String, HashMap<String, String>)> = client
        .xrevrange(keys.changes.clone(), "+", "-", Some(1))
        .await?;
    Ok(last
        .first()
        .and_then(|(id, _)| id.split('-').next()?.parse().ok()))
}

/// What a resync writes: every hash field of the account, serialized on the cache actor from
/// its borrowed view (`CacheHandle::read`) — the account is never copied, only its JSON made.
struct Rewrite {
    seq: i64,
    balances: Vec<(String, String)>,
    positions: Vec<(String, String)>,
    open_orders: Vec<(String, String)>,
}

impl Rewrite {
    /// The hash fields of `view` (an `Entity` is untagged: a field's JSON is its value's).
    fn of(view: ViewRef<'_>) -> serde_json::Result<Rewrite> {
        fn fields<V: serde::Serialize>(
            map: &BTreeMap<String, V>,
        ) -> serde_json::Result<Vec<(String, String)>> {
            // Each value at its exact size: serde_json's buffer doubles from 128 bytes, so an
            // order's ~300 bytes held 512 — for 10,000 orders, 2 MB of the resync's peak.
            map.iter()
                .map(|(k, v)| {
                    let json = serde_json::to_string(v)?.into_boxed_str().into_string();
                    Ok((k.clone(), json))
                })
                .collect()
        }
        Ok(Rewrite {
            seq: view.seq,
            balances: fields(view.balances)?,
            positions: fields(view.positions)?,
            open_orders: fields(view.open_orders)?,
        })
    }
}

/// Rewrites every state key from the cache's view and publishes the resync status (and appends
/// it to the stream).
async fn resync(client: &Client, keys: &Keys, maxlen: u64, view: Rewrite) -> anyhow::Result<()> {
    // A stream that runs above the cache (another writer, a clock gone backwards) could take no
    // entry of ours: it starts over.
    let stale_stream = maxlen > 0
        && last_stream_seq(client, keys)
            .await?
            .is_some_and(|last| last > view.seq);
    // The new hashes are written to staging keys first, 1,000 fields per HSET, each sent and
    // answered before the next is made (inside a MULTI fred would hold every command, and the
    // whole account's JSON twice, until EXEC); what was sent is freed as it goes. The MULTI
    // then swaps them in with RENAME beside the SET and PUBLISH, so a reader still sees the old
    // state or the new one, never a mix. A resync cut short leaves staging keys; the next one
    // deletes them first.
    let hashes = [
        (keys.balances(), view.balances),
        (keys.positions(), view.positions),
        (keys.open_orders(), view.open_orders),
    ];
    let staging = |key: &str| format!("{key}:resync");
    let _: () = client
        .del(hashes.iter().map(|(k, _)| staging(k)).collect::<Vec<_>>())
        .await?;
    let mut staged = Vec::new();
    for (key, fields) in hashes {
        if fields.is_empty() {
            continue;
        }
        let to = staging(&key);
        let mut fields = fields.into_iter();
        loop {
            let chunk: Vec<(String, String)> = fields.by_ref().take(1000).collect();
            if chunk.is_empty() {
                break;
            }
            let _: () = client.hset(to.clone(), chunk).await?;
        }
        staged.push((to, key));
    }
    let trx = client.multi();
    let mut gone = vec![keys.balances(), keys.positions(), keys.open_orders()];
    if stale_stream {
        tracing::warn!(event = "redis_stream_reset", account_id = %keys.account_id, "redis: the change stream ran above the cache's seq; it starts over");
        gone.push(keys.changes());
    }
    let _: () = trx.del(gone).await?;
    for (from, to) in staged {
        let _: () = trx.rename(from, to).await?;
    }
    let _: () = trx.set(keys.seq(), view.seq, None, None, false).await?;
    let msg = serde_json::json!({
        "v": 1,
        "account_id": keys.account_id,
        "seq": view.seq,
        "kind": "status",
        "source": "snapshot",
        "event_time": chrono::Utc::now().timestamp_millis(),
        "data": {"event": "resync"},
    });
    let msg = Str::from(msg.to_string());
    let _: () = trx.publish(keys.channel(Kind::Status), msg.clone()).await?;
    append(&trx, keys, maxlen, format!("{}-*", view.seq), msg).await?;
    let _: Value = trx.exec(true).await.context("MULTI/EXEC")?;
    Ok(())
}

/// Redis lost (or someone else changed) what this publisher wrote: `P:seq` no longer holds the
/// seq it wrote last.
fn diverged(keys: &Keys, m: &PublisherMetrics, found: Option<i64>, written: Option<i64>) -> bool {
    if found == written {
        return false;
    }
    m.state_lost.increment(1);
    tracing::warn!(
        event = "redis_state_lost",
        account_id = %keys.account_id,
        found = ?found,
        written = ?written,
        "redis no longer holds the state keys written (restarted empty, flushed or written by another process): rewriting them from the cache"
    );
    true
}

/// Runs until the change channel closes and every queued change has been tried.
/// `after_first_snapshot`: the first rewrite of the state keys waits for the stream's first
/// snapshot (see `FIRST_SNAPSHOT_WAIT`); until then Redis keeps what it held.
pub async fn run(
    redis: SharedRedis,
    keys: Keys,
    stream_maxlen: u64,
    after_first_snapshot: bool,
    cache: CacheHandle,
    mut rx: mpsc::UnboundedReceiver<AccountBatch>,
) {
    let client = redis.client.clone();
    let started = Instant::now();
    let mut awaiting_snapshot = after_first_snapshot;
    let mut reconnects_seen = redis.reconnects.load(Ordering::SeqCst);
    let m = PublisherMetrics::new(&keys.account_id);
    let mut needs_resync = true;
    let mut covered_seq = i64::MIN;
    // The seq this publisher last left in `P:seq`, and when it last knew Redis held it.
    let mut written: Option<i64> = None;
    let mut confirmed = Instant::now();
    let mut last_attempt: Option<Instant> = None;
    let mut up = false;
    let mut batches: Vec<ChangeBatch> = Vec::new();
    let mut open = true;
    // One timer, re-armed only when what is due comes earlier or it fired: the probe's
    // deadline moves with every publish, and re-arming per event cost a timer-wheel insert and
    // removal each. Waking early is harmless (nothing is due yet: the loop sleeps again).
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    while open {
        // No periodic tick: a quiet publisher wakes only when something is due (the first
        // snapshot's deadline, a resync retry, the probe), so an idle account costs one wake
        // per PROBE_EVERY, not four a second.
        let wake = tokio::time::Instant::from_std(if awaiting_snapshot {
            started + FIRST_SNAPSHOT_WAIT
        } else if needs_resync {
            last_attempt.map_or_else(Instant::now, |t| t + RESYNC_RETRY)
        } else {
            confirmed + PROBE_EVERY
        });
        if timer.is_elapsed() || wake < timer.deadline() {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            b = rx.recv() => match b {
                Some(b) => batches.push(b.changes),
                None => open = false,
            },
            _ = &mut timer => {}
        }
        while let Ok(b) = rx.try_recv() {
            batches.push(b.changes);
        }
        let reconnects = redis.reconnects.load(Ordering::SeqCst);
        if reconnects != reconnects_seen {
            reconnects_seen = reconnects;
            needs_resync = true;
        }
        if awaiting_snapshot {
            let snapshot_applied = batches
                .iter()
                .flat_map(|b| b.iter())
                .any(|c| matches!(&c.entity, Entity::Status(s) if s.event == "resynced"));
            if snapshot_applied || started.elapsed() >= FIRST_SNAPSHOT_WAIT {
                awaiting_snapshot = false;
            } else {
                // The first rewrite will cover these.
                batches.clear();
                continue;
            }
        }
        if needs_resync {
            let due = last_attempt.is_none_or(|t| t.elapsed() >= RESYNC_RETRY);
            if due {
                last_attempt = Some(Instant::now());
            }
            if client.is_connected() && due {
                match cache.read(Rewrite::of).await {
                    Ok(Err(e)) => {
                        tracing::error!(account_id = %keys.account_id, error = %e, "redis resync: cannot serialize the cache");
                    }
                    Ok(Ok(view)) => {
                        let (seq, counts) = (
                            view.seq,
                            [
                                view.balances.len(),
                                view.positions.len(),
                                view.open_orders.len(),
                            ],
                        );
                        match resync(&client, &keys, stream_maxlen, view).await {
                            Ok(()) => {
                                written = Some(seq);
                                confirmed = Instant::now();
                                tracing::info!(
                                    event = "redis_up",
                                    account_id = %keys.account_id,
                                    seq,
                                    balances = counts[0],
                                    positions = counts[1],
                                    open_orders = counts[2],
                                    "redis up: state keys rewritten from the cache (resync)"
                                );
                                m.resyncs.increment(1);
                                needs_resync = false;
                                covered_seq = seq;
                                set_up(&m, &mut up, true);
                            }
                            Err(e) => {
                                set_up(&m, &mut up, false);
                                tracing::debug!(account_id = %keys.account_id, error = %format!("{e:#}"), "redis resync failed");
                            }
                        }
                    }
                    // The actor is gone (shutdown): publish what is left without a resync.
                    Err(_) => needs_resync = false,
                }
            }
        }
        if batches.is_empty() {
            if !needs_resync && confirmed.elapsed() >= PROBE_EVERY {
                confirmed = Instant::now();
                match client.get::<Option<String>, _>(keys.seq.clone()).await {
                    Ok(v) => {
                        let found = v.and_then(|s| s.parse::<i64>().ok());
                        needs_resync = diverged(&keys, &m, found, written);
                    }
                    Err(e) => tracing::debug!(error = %e, "redis probe failed"),
                }
            }
            continue;
        }
        let all: Vec<ChangeBatch> = std::mem::take(&mut batches);
        let changes: Vec<&Change> = all
            .iter()
            .flat_map(|b| b.iter())
            .filter(|c| c.seq > covered_seq)
            .collect();
        if needs_resync {
            // Redis is down: pub/sub is at-most-once, the resync will restore the state keys.
            m.dropped.increment(changes.len() as u64);
            continue;
        }
        for chunk in changes.chunks(MAX_BATCH) {
            let started = Instant::now();
            match publish(&client, &keys, stream_maxlen, written, chunk).await {
                Ok(Published::Written) => {
                    m.publish_seconds.record(started.elapsed().as_secs_f64());
                    m.published.increment(chunk.len() as u64);
                    set_up(&m, &mut up, true);
                    written = chunk.last().map(|c| c.seq);
                    confirmed = Instant::now();
                }
                Ok(Published::Refused(held)) => {
                    // Nothing was written: rewrite it all from the cache (the view then covers
                    // this batch and the ones still queued).
                    diverged(&keys, &m, held, written);
                    needs_resync = true;
                    break;
                }
                Err(e) => {
                    m.errors.increment(1);
                    m.dropped.increment(chunk.len() as u64);
                    if up || !needs_resync {
                        tracing::error!(event = "redis_down", account_id = %keys.account_id, error = %format!("{e:#}"), "redis down: publish failed; will resync when it is back");
                    }
                    set_up(&m, &mut up, false);
                    needs_resync = true;
                    break;
                }
            }
        }
    }
    tracing::info!(event = "redis_stopped", account_id = %keys.account_id, "redis publisher stopped");
}

/// One publisher's counters, with its account's label.
struct PublisherMetrics {
    published: metrics::Counter,
    dropped: metrics::Counter,
    errors: metrics::Counter,
    resyncs: metrics::Counter,
    state_lost: metrics::Counter,
    publish_seconds: metrics::Histogram,
    /// `acctstate_redis_up` (process-wide: every publisher sets it).
    up: metrics::Gauge,
}

impl PublisherMetrics {
    fn new(account: &str) -> Self {
        let c = |name: &'static str| {
            let c = metrics::counter!(name, "account" => account.to_owned());
            c.increment(0);
            c
        };
        PublisherMetrics {
            published: c("acctstate_redis_published_total"),
            dropped: c("acctstate_redis_dropped_total"),
            errors: c("acctstate_redis_errors_total"),
            resyncs: c("acctstate_redis_resyncs_total"),
            state_lost: c("acctstate_redis_state_lost_total"),
            publish_seconds: metrics::histogram!("acctstate_redis_publish_seconds"),
            up: metrics::gauge!("acctstate_redis_up"),
        }
    }
}

fn set_up(m: &PublisherMetrics, up: &mut bool, now: bool) {
    *up = now;
    m.up.set(if now { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{Balance, Source};
    use rust_decimal::Decimal;

    /// `rediss://` goes through rustls with the one crypto provider: a TLS handshake against a
    /// peer that is not TLS fails with an error, never a provider panic.
    #[tokio::test]
    async fn rediss_uses_rustls_without_panicking() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                drop(sock);
            }
        });
        let client = client(&format!("rediss://{addr}")).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), client.init()).await;
        assert!(
            matches!(result, Ok(Err(_))),
            "a non-TLS peer must fail the handshake"
        );
        let _ = client.quit().await;
    }

    #[test]
    fn message_text_is_the_contract_message() {
        let keys = Keys::new("acctstate", "ma\"in");
        let c = Change::new(
            42,
            Source::Stream,
            1_700_000_000_000,
            Entity::Balance(Balance {
                asset: "BTC".into(),
                free: Decimal::new(15, 1),
                locked: Decimal::ZERO,
                total: Decimal::new(15, 1),
                wallet_balance: None,
                cross_wallet_balance: None,
                updated_at: 1_700_000_000_000,
            }),
        );
        let text = message_text(&keys.account_json, &c, c.json().unwrap());
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, c.message(&keys.account_id));
        assert_eq!(&*keys.channel_str(Kind::Order), keys.channel(Kind::Order));
    }
}
