//! Shared helpers of the integration tests: real Postgres and Redis (never mocks), a TCP proxy
//! to simulate their outages, a Redis subscriber, polling without fixed sleeps, and a generator
//! of realistic account updates.
//!
//! Everything here is independent of any one test module, so every module of the `it` crate
//! can use it. Tests run in parallel: each takes its own database, Redis prefix and account id.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acctstate::account::{
    AccountView, Balance, BalancePatch, Change, Entity, Fill, Market, Order, OrderStatus, Position,
    Update,
};
use acctstate::config::Settings;
use acctstate::sim::{Sim, SimMarket, SimState};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number unique within this process (and, with the pid and clock, across processes).
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}_{}_{}", std::process::id(), nanos, n)
}

/// The admin URL used to create test databases: env `ACCTSTATE_TEST_PG_ADMIN`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn pg_admin_url() -> String {
    std::env::var("ACCTSTATE_TEST_PG_ADMIN")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates a uniquely named, empty database (`acctstate_t_<pid>_<nanos>_<counter>`) and returns
/// its URL and a small pool on it. The database is not dropped afterwards.
pub async fn fresh_db() -> (String, PgPool) {
    let admin_url = pg_admin_url();
    let name = format!("acctstate_t_{}", unique_suffix());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Postgres at {admin_url}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("CREATE DATABASE");
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).expect("admin URL");
    url.set_path(&name);
    let url = url.to_string();
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&url)
        .await
        .expect("connect to the fresh database");
    (url, pool)
}

/// The Redis URL: env `ACCTSTATE_TEST_REDIS`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("ACCTSTATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis key prefix no other test uses (valid for `redis.prefix`: no `:`).
pub fn unique_prefix() -> String {
    format!("t{}", unique_suffix())
}

/// An account id no other test uses (valid for `account_id`).
pub fn unique_account() -> String {
    format!("acct-{}", unique_suffix())
}

/// Debugging aid for in-process daemons: their logs on stderr when `ACCTSTATE_TEST_LOG` is set
/// (e.g. `ACCTSTATE_TEST_LOG=acctstate=debug`).
pub fn test_logs() {
    if let Ok(filter) = std::env::var("ACCTSTATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Settings from the given variables only (not the process environment), e.g.
/// `[("DATABASE_URL", &url), ("ACCTSTATE__ACCOUNT_ID", "a1")]`.
pub fn settings(pairs: &[(&str, &str)]) -> Settings {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_from(None, &env).expect("test settings are valid")
}

/// Polls `check` every 20 ms until it returns true; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 20 ms for `period` and panics naming `what` if it is ever false: a
/// negative check ("this does not happen"), never used to wait for something.
pub async fn stays<F, Fut>(period: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        assert!(check().await, "no longer true: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy on `127.0.0.1:0` forwarding to `target`, to cut one client's connections to a
/// real server (Postgres, Redis) without disturbing anyone else using that server.
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped by `cut()`: every live connection ends when it changes.
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> TcpProxy {
        let target: SocketAddr = tokio::net::lookup_host(target)
            .await
            .expect("resolve proxy target")
            .next()
            .expect("proxy target address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accept = {
            let cut = cut.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut ended = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = ended.changed() => {}
                        }
                    });
                }
            })
        };
        TcpProxy {
            addr,
            cut,
            generation,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every live connection and refuses new ones (accepted, then dropped at once).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

/// One message received on a channel: the channel name and the parsed JSON.
pub type Received = (String, serde_json::Value);

/// A Redis subscriber on `{prefix}:{account}:*` collecting every message, in arrival order.
pub struct Subscriber {
    client: SubscriberClient,
    messages: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects to `redis_url()` and PSUBSCRIBEs; messages published after this returns are
    /// all collected (the receiving buffer holds 100,000 messages).
    pub async fn start(prefix: &str, account: &str) -> Subscriber {
        Subscriber::start_at(&redis_url(), prefix, account).await
    }

    /// `start` on the Redis at `url`.
    pub async fn start_at(url: &str, prefix: &str, account: &str) -> Subscriber {
        let config = Config::from_url(url).expect("redis URL");
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.broadcast_channel_capacity = 100_000)
            .build_subscriber_client()
            .expect("build subscriber");
        client.init().await.expect("subscriber connects");
        let mut rx = client.message_rx();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let messages = messages.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(m) => {
                            let channel = m.channel.to_string();
                            let text: String = m.value.convert().expect("message is text");
                            let json = serde_json::from_str(&text).expect("message is JSON");
                            messages.lock().unwrap().push((channel, json));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            panic!("subscriber lagged by {n} messages")
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
        };
        let pattern = format!("{prefix}:{account}:*");
        client.psubscribe(pattern).await.expect("psubscribe");
        Subscriber {
            client,
            messages,
            task,
        }
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// How many messages were received so far.
    pub fn len(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Unsubscribes and disconnects.
    pub async fn stop(self) {
        let _ = self.client.punsubscribe(Vec::<String>::new()).await;
        let _ = self.client.quit().await;
        self.task.abort();
    }
}

/// A plain connected Redis client on `redis_url()`.
pub async fn redis_client() -> Client {
    redis_client_at(&redis_url()).await
}

/// A plain connected Redis client on `url`.
pub async fn redis_client_at(url: &str) -> Client {
    let client = Client::new(Config::from_url(url).expect("redis URL"), None, None, None);
    client.init().await.expect("redis connects");
    client
}

/// A small deterministic pseudo-random generator (xorshift64*), so runs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The first event time of `trading_updates`.
pub const T0: i64 = 1_700_000_000_000;

const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];
const ASSETS: [&str; 5] = ["USDT", "BTC", "ETH", "SOL", "BNB"];

/// `n` realistic, self-consistent updates of one account with strictly rising event times:
/// balances changing, orders going NEW → PARTIALLY_FILLED (with its fill) → FILLED (with its
/// fill) or CANCELED, positions changing; trade ids are unique, every update makes at least one
/// change when applied in order to an empty cache.
pub fn trading_updates(n: usize) -> Vec<(i64, Update)> {
    trading_updates_seeded(n, 42)
}

/// `trading_updates` with another seed.
pub fn trading_updates_seeded(n: usize, seed: u64) -> Vec<(i64, Update)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut t = T0;
    let mut next_order_id = 1_000i64;
    let mut next_trade_id = 500_000i64;
    let mut open: Vec<Order> = Vec::new();
    let mut balances: HashMap<&str, (Decimal, Decimal)> = HashMap::new();
    let mut positions: HashMap<&str, Decimal> = HashMap::new();
    let amount = |rng: &mut Rng, scale: u32| Decimal::new(1 + rng.below(1_000_000) as i64, scale);
    while out.len() < n {
        t += 1 + rng.below(3) as i64;
        let roll = rng.below(100);
        let update = if (roll < 25 && open.len() < 30) || (open.is_empty() && roll < 60) {
            // A new order.
            next_order_id += 1;
            let symbol = SYMBOLS[rng.below(4) as usize];
            let price = Decimal::new(10_000 + rng.below(90_000) as i64, 2);
            let order = Order {
                symbol: symbol.into(),
                order_id: next_order_id,
                client_order_id: format!("web_{next_order_id}"),
                side: if rng.below(2) == 0 { "BUY" } else { "SELL" }.into(),
                order_type: "LIMIT".into(),
                time_in_force: "GTC".into(),
                status: OrderStatus::New,
                price,
                stop_price: Decimal::ZERO,
                orig_qty: Decimal::new(2 + rng.below(50) as i64 * 2, 3),
                executed_qty: Decimal::ZERO,
                cum_quote_qty: Decimal::ZERO,
                created_at: t,
                updated_at: t,
            };
            open.push(order.clone());
            Update::Order { order, fill: None }
        } else if roll < 60 && !open.is_empty() {
            // An open order moves on: a partial fill, the last fill, or a cancel.
            let i = rng.below(open.len() as u64) as usize;
            let mut order = open[i].clone();
            order.updated_at = t;
            let step = rng.below(10);
            let fill_qty = if step < 2 {
                None
            } else if order.executed_qty.is_zero() && step < 6 {
                Some(order.orig_qty / Decimal::TWO)
            } else {
                Some(order.orig_qty - order.executed_qty)
            };
            let fill = match fill_qty {
                None => {
                    order.status = OrderStatus::Canceled;
                    None
                }
                Some(qty) => {
                    next_trade_id += 1;
                    order.executed_qty += qty;
                    let quote = (qty * order.price).round_dp(8);
                    order.cum_quote_qty += quote;
                    order.status = if order.executed_qty == order.orig_qty {
                        OrderStatus::Filled
                    } else {
                        OrderStatus::PartiallyFilled
                    };
                    Some(Fill {
                        symbol: order.symbol.clone(),
                        trade_id: next_trade_id,
                        order_id: order.order_id,
                        side: order.side.clone(),
                        price: order.price,
                        qty,
                        quote_qty: quote,
                        commission: (quote * Decimal::new(1, 3)).round_dp(8),
                        commission_asset: Some("USDT".into()),
                        is_maker: rng.below(2) == 0,
                        realized_pnl: if rng.below(2) == 0 {
                            Some(Decimal::new(rng.below(20_000) as i64 - 10_000, 4))
                        } else {
                            None
                        },
                        traded_at: t,
                    })
                }
            };
            if order.status.is_final() {
                open.swap_remove(i);
            } else {
                open[i] = order.clone();
            }
            Update::Order { order, fill }
        } else if roll < 85 {
            // One or two balances change.
            let mut patches = Vec::new();
            let first = rng.below(5) as usize;
            for asset in [
                ASSETS[first],
                ASSETS[(first + 1 + rng.below(4) as usize) % 5],
            ]
            .into_iter()
            .take(1 + rng.below(2) as usize)
            {
                let held = balances.entry(asset).or_default();
                let mut free = amount(&mut rng, 4);
                if free == held.0 {
                    free += Decimal::ONE;
                }
                let locked = if rng.below(3) == 0 {
                    Decimal::ZERO
                } else {
                    amount(&mut rng, 6)
                };
                *held = (free, locked);
                patches.push(BalancePatch {
                    asset: asset.into(),
                    free: Some(free),
                    locked: Some(locked),
                    wallet_balance: None,
                    cross_wallet_balance: None,
                    updated_at: t,
                });
            }
            Update::Balances(patches)
        } else {
            // A position changes.
            let symbol = SYMBOLS[rng.below(4) as usize];
            let held = positions.entry(symbol).or_default();
            let mut amount = Decimal::new(rng.below(2_000) as i64 - 1_000, 3);
            if amount == *held {
                amount += Decimal::ONE;
            }
            *held = amount;
            let entry = Decimal::new(10_000 + rng.below(90_000) as i64, 2);
            Update::Positions(vec![Position {
                symbol: symbol.into(),
                position_side: "BOTH".into(),
                amount,
                entry_price: entry,
                breakeven_price: entry + Decimal::new(5, 2),
                unrealized_pnl: Decimal::new(rng.below(100_000) as i64 - 50_000, 4),
                realized_pnl: Decimal::new(rng.below(100_000) as i64, 4),
                margin_type: "cross".into(),
                isolated_wallet: Decimal::ZERO,
                updated_at: t,
            }])
        };
        out.push((t, update));
    }
    out
}

/// A decimal as the contract writes it in JSON: a string.
fn dec(d: &Decimal) -> Value {
    Value::String(d.to_string())
}

/// An entity's JSON exactly as CONTRACT §4 specifies it (a message's `data`, a hash value),
/// built field by field, independently of the crate's serde derives.
pub fn contract_json(e: &Entity) -> Value {
    match e {
        Entity::Balance(b) => {
            let mut v = json!({
                "asset": b.asset, "free": dec(&b.free), "locked": dec(&b.locked),
                "total": dec(&b.total), "updated_at": b.updated_at,
            });
            if let Some(w) = &b.wallet_balance {
                v["wallet_balance"] = dec(w);
            }
            if let Some(w) = &b.cross_wallet_balance {
                v["cross_wallet_balance"] = dec(w);
            }
            v
        }
        Entity::Position(p) => json!({
            "symbol": p.symbol, "position_side": p.position_side, "amount": dec(&p.amount),
            "entry_price": dec(&p.entry_price), "breakeven_price": dec(&p.breakeven_price),
            "unrealized_pnl": dec(&p.unrealized_pnl), "realized_pnl": dec(&p.realized_pnl),
            "margin_type": p.margin_type, "isolated_wallet": dec(&p.isolated_wallet),
            "updated_at": p.updated_at,
        }),
        Entity::Order(o) => json!({
            "symbol": o.symbol, "order_id": o.order_id, "client_order_id": o.client_order_id,
            "side": o.side, "order_type": o.order_type, "time_in_force": o.time_in_force,
            "status": o.status.as_str(), "price": dec(&o.price), "stop_price": dec(&o.stop_price),
            "orig_qty": dec(&o.orig_qty), "executed_qty": dec(&o.executed_qty),
            "cum_quote_qty": dec(&o.cum_quote_qty), "created_at": o.created_at,
            "updated_at": o.updated_at,
        }),
        Entity::Fill(f) => {
            let mut v = json!({
                "symbol": f.symbol, "trade_id": f.trade_id, "order_id": f.order_id,
                "side": f.side, "price": dec(&f.price), "qty": dec(&f.qty),
                "quote_qty": dec(&f.quote_qty), "commission": dec(&f.commission),
                "commission_asset": f.commission_asset, "is_maker": f.is_maker,
                "traded_at": f.traded_at,
            });
            if let Some(r) = &f.realized_pnl {
                v["realized_pnl"] = dec(r);
            }
            v
        }
        Entity::Status(s) => {
            let mut v = json!({ "event": s.event });
            if let Some(d) = &s.detail {
                v["detail"] = json!(d);
            }
            v
        }
    }
}

/// A change's Redis message exactly as CONTRACT §4 specifies it.
pub fn contract_message(account_id: &str, c: &Change) -> Value {
    json!({
        "v": 1,
        "account_id": account_id,
        "seq": c.seq,
        "kind": c.kind().as_str(),
        "source": c.source.as_str(),
        "event_time": c.event_time,
        "data": contract_json(&c.entity),
    })
}

/// The Redis state keys of one account (or what a subscriber rebuilt): hash field → parsed
/// JSON value, and the seq.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisState {
    pub balances: BTreeMap<String, Value>,
    pub positions: BTreeMap<String, Value>,
    pub open_orders: BTreeMap<String, Value>,
    pub seq: Option<i64>,
}

impl RedisState {
    /// What the keys must hold for this cache view.
    pub fn of_view(view: &AccountView) -> RedisState {
        RedisState {
            balances: view
                .balances
                .iter()
                .map(|(k, b)| (k.clone(), contract_json(&Entity::Balance(b.clone()))))
                .collect(),
            positions: view
                .positions
                .iter()
                .map(|(k, p)| (k.clone(), contract_json(&Entity::Position(p.clone()))))
                .collect(),
            open_orders: view
                .open_orders
                .iter()
                .map(|(k, o)| (k.clone(), contract_json(&Entity::Order(o.clone()))))
                .collect(),
            seq: Some(view.seq),
        }
    }

    /// Reads `P:balances`, `P:positions`, `P:open_orders` and `P:seq` in one MULTI/EXEC.
    pub async fn read(client: &Client, prefix: &str, account: &str) -> RedisState {
        let p = format!("{prefix}:{account}");
        let trx = client.multi();
        let _: () = trx.hgetall(format!("{p}:balances")).await.unwrap();
        let _: () = trx.hgetall(format!("{p}:positions")).await.unwrap();
        let _: () = trx.hgetall(format!("{p}:open_orders")).await.unwrap();
        let _: () = trx.get(format!("{p}:seq")).await.unwrap();
        let mut res: Vec<fred::types::Value> = trx.exec(true).await.expect("MULTI/EXEC");
        assert_eq!(res.len(), 4, "{res:?}");
        let seq: Option<i64> = res.pop().unwrap().convert().expect("P:seq is a number");
        let hash = |v: fred::types::Value| -> BTreeMap<String, Value> {
            let m: HashMap<String, String> = v.convert().expect("a hash");
            m.into_iter()
                .map(|(k, v)| (k, serde_json::from_str(&v).expect("hash value is JSON")))
                .collect()
        };
        let open_orders = hash(res.pop().unwrap());
        let positions = hash(res.pop().unwrap());
        let balances = hash(res.pop().unwrap());
        RedisState {
            balances,
            positions,
            open_orders,
            seq,
        }
    }

    /// Applies one received message the way a subscriber following CONTRACT §4 does.
    pub fn apply_message(&mut self, msg: &Value) {
        let data = &msg["data"];
        let s = |k: &str| data[k].as_str().unwrap_or_default().to_owned();
        match msg["kind"].as_str().unwrap_or_default() {
            "balance" => {
                self.balances.insert(s("asset"), data.clone());
            }
            "position" => {
                let key = format!("{}:{}", s("symbol"), s("position_side"));
                self.positions.insert(key, data.clone());
            }
            "order" => {
                let key = format!("{}:{}", s("symbol"), data["order_id"]);
                let status: OrderStatus =
                    serde_json::from_value(data["status"].clone()).expect("order status");
                if status.is_final() {
                    self.open_orders.remove(&key);
                } else {
                    self.open_orders.insert(key, data.clone());
                }
            }
            _ => {}
        }
        if let Some(seq) = msg["seq"].as_i64() {
            self.seq = Some(seq);
        }
    }
}

/// Deletes the state keys of one account (best effort, tests only).
pub async fn redis_cleanup(prefix: &str, account: &str) {
    redis_cleanup_at(&redis_url(), prefix, account).await
}

/// `redis_cleanup` on the Redis at `url`.
pub async fn redis_cleanup_at(url: &str, prefix: &str, account: &str) {
    let client = redis_client_at(url).await;
    let p = format!("{prefix}:{account}");
    let _: Result<(), _> = client
        .del(vec![
            format!("{p}:balances"),
            format!("{p}:positions"),
            format!("{p}:open_orders"),
            format!("{p}:seq"),
        ])
        .await;
    let _ = client.quit().await;
}

/// The current-state tables of one account, each row with its `seq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgState {
    pub balances: BTreeMap<String, (Balance, i64)>,
    pub positions: BTreeMap<String, (Position, i64)>,
    /// Every order, open or finished.
    pub orders: BTreeMap<String, (Order, i64)>,
    pub fills: BTreeMap<String, (Fill, i64)>,
}

fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

impl PgState {
    /// Reads `balances`, `positions`, `orders` and `fills` of `account`.
    pub async fn read(pool: &PgPool, account: &str) -> PgState {
        let mut s = PgState::default();
        let rows = sqlx::query("SELECT * FROM balances WHERE account_id = $1")
            .bind(account)
            .fetch_all(pool)
            .await
            .expect("read balances");
        for r in rows {
            let b = Balance {
                asset: r.get("asset"),
                free: r.get("free"),
                locked: r.get("locked"),
                total: r.get("total"),
                wallet_balance: r.get("wallet_balance"),
                cross_wallet_balance: r.get("cross_wallet_balance"),
                updated_at: ms(r.get("updated_at")),
            };
            s.balances.insert(b.asset.clone(), (b, r.get("seq")));
        }
        let rows = sqlx::query("SELECT * FROM positions WHERE account_id = $1")
            .bind(account)
            .fetch_all(pool)
            .await
            .expect("read positions");
        for r in rows {
            let p = Position {
                symbol: r.get("symbol"),
                position_side: r.get("position_side"),
                amount: r.get("amount"),
                entry_price: r.get("entry_price"),
                breakeven_price: r.get("breakeven_price"),
                unrealized_pnl: r.get("unrealized_pnl"),
                realized_pnl: r.get("realized_pnl"),
                margin_type: r.get("margin_type"),
                isolated_wallet: r.get("isolated_wallet"),
                updated_at: ms(r.get("updated_at")),
            };
            s.positions.insert(p.key(), (p, r.get("seq")));
        }
        let rows = sqlx::query("SELECT * FROM orders WHERE account_id = $1")
            .bind(account)
            .fetch_all(pool)
            .await
            .expect("read orders");
        for r in rows {
            let status: String = r.get("status");
            let o = Order {
                symbol: r.get("symbol"),
                order_id: r.get("order_id"),
                client_order_id: r.get("client_order_id"),
                side: r.get("side"),
                order_type: r.get("order_type"),
                time_in_force: r.get("time_in_force"),
                status: serde_json::from_value(Value::String(status)).expect("order status"),
                price: r.get("price"),
                stop_price: r.get("stop_price"),
                orig_qty: r.get("orig_qty"),
                executed_qty: r.get("executed_qty"),
                cum_quote_qty: r.get("cum_quote_qty"),
                created_at: ms(r.get("created_at")),
                updated_at: ms(r.get("updated_at")),
            };
            s.orders.insert(o.key(), (o, r.get("seq")));
        }
        let rows = sqlx::query("SELECT * FROM fills WHERE account_id = $1")
            .bind(account)
            .fetch_all(pool)
            .await
            .expect("read fills");
        for r in rows {
            let f = Fill {
                symbol: r.get("symbol"),
                trade_id: r.get("trade_id"),
                order_id: r.get("order_id"),
                side: r.get("side"),
                price: r.get("price"),
                qty: r.get("qty"),
                quote_qty: r.get("quote_qty"),
                commission: r.get("commission"),
                commission_asset: r.get("commission_asset"),
                is_maker: r.get("is_maker"),
                realized_pnl: r.get("realized_pnl"),
                traded_at: ms(r.get("traded_at")),
            };
            s.fills.insert(f.key(), (f, r.get("seq")));
        }
        s
    }

    /// What the tables must hold after exactly `changes` (in seq order) were written.
    pub fn expected(changes: &[Change]) -> PgState {
        let mut s = PgState::default();
        for c in changes {
            match &c.entity {
                Entity::Balance(b) => {
                    s.balances.insert(b.asset.clone(), (b.clone(), c.seq));
                }
                Entity::Position(p) => {
                    s.positions.insert(p.key(), (p.clone(), c.seq));
                }
                Entity::Order(o) => {
                    s.orders.insert(o.key(), (o.clone(), c.seq));
                }
                Entity::Fill(f) => {
                    s.fills.insert(f.key(), (f.clone(), c.seq));
                }
                Entity::Status(_) => {}
            }
        }
        s
    }

    /// Asserts that the current-state rows equal the cache's view (open orders = the orders
    /// whose status is not final).
    pub fn assert_matches_view(&self, view: &AccountView) {
        let balances: BTreeMap<_, _> = self
            .balances
            .iter()
            .map(|(k, (b, _))| (k.clone(), b.clone()))
            .collect();
        assert_eq!(balances, view.balances, "balances table vs cache");
        let positions: BTreeMap<_, _> = self
            .positions
            .iter()
            .map(|(k, (p, _))| (k.clone(), p.clone()))
            .collect();
        assert_eq!(positions, view.positions, "positions table vs cache");
        let open: BTreeMap<_, _> = self
            .orders
            .iter()
            .filter(|(_, (o, _))| !o.status.is_final())
            .map(|(k, (o, _))| (k.clone(), o.clone()))
            .collect();
        assert_eq!(
            open, view.open_orders,
            "open orders in the orders table vs cache"
        );
    }
}

/// One `account_changes` row: seq, kind, key, source, data, event_time (ms).
pub type JournalRow = (i64, String, String, String, Value, i64);

/// The journal of one account, in seq order.
pub async fn journal(pool: &PgPool, account: &str) -> Vec<JournalRow> {
    sqlx::query(
        "SELECT seq, kind, key, source, data, event_time FROM account_changes
         WHERE account_id = $1 ORDER BY seq",
    )
    .bind(account)
    .fetch_all(pool)
    .await
    .expect("read account_changes")
    .into_iter()
    .map(|r| {
        (
            r.get("seq"),
            r.get("kind"),
            r.get("key"),
            r.get("source"),
            r.get("data"),
            ms(r.get("event_time")),
        )
    })
    .collect()
}

/// The journal rows `changes` must have produced, field by field from CONTRACT §3.
pub fn expected_journal(changes: &[Change]) -> Vec<JournalRow> {
    changes
        .iter()
        .map(|c| {
            (
                c.seq,
                c.kind().as_str().to_owned(),
                c.key(),
                c.source.as_str().to_owned(),
                contract_json(&c.entity),
                c.event_time,
            )
        })
        .collect()
}

/// How many journal rows the account has.
pub async fn journal_count(pool: &PgPool, account: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM account_changes WHERE account_id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .expect("count account_changes")
}

/// Row counts of `balances`, `positions`, `orders`, `fills`, `account_changes` for `account`.
pub async fn row_counts(pool: &PgPool, account: &str) -> [i64; 5] {
    let mut out = [0; 5];
    for (i, q) in [
        "SELECT count(*) FROM balances WHERE account_id = $1",
        "SELECT count(*) FROM positions WHERE account_id = $1",
        "SELECT count(*) FROM orders WHERE account_id = $1",
        "SELECT count(*) FROM fills WHERE account_id = $1",
        "SELECT count(*) FROM account_changes WHERE account_id = $1",
    ]
    .into_iter()
    .enumerate()
    {
        out[i] = sqlx::query_scalar(q)
            .bind(account)
            .fetch_one(pool)
            .await
            .expect("count rows");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The daemon as its own process.

pub const BIN: &str = env!("CARGO_BIN_EXE_acctstate");
/// Deadline of anything the daemon must do (start, become ready, catch up).
pub const WAIT: Duration = Duration::from_secs(30);

/// Inherited variables that would configure the child behind the test's back.
pub fn is_inherited_config(var: &str) -> bool {
    var.starts_with("ACCTSTATE__")
        || var.starts_with("PG")
        || var.starts_with("BINANCE_")
        || matches!(
            var,
            "DATABASE_URL" | "REDIS_URL" | "PORT" | "RUST_LOG" | "CREDENTIALS_DIRECTORY"
        )
}

/// `acctstate ARGS` with only the given configuration variables.
pub fn command(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && is_inherited_config(k)
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Collects a pipe's lines on a thread.
pub fn collect_lines(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    lines
}

/// The daemon (or any long-running subcommand) as a child process; killed on drop.
pub struct DaemonProcess {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub http: Option<SocketAddr>,
    status: Option<ExitStatus>,
}

impl DaemonProcess {
    /// Spawns `acctstate ARGS` configured by `vars` only.
    pub fn spawn(args: &[&str], vars: &[(&str, &str)]) -> DaemonProcess {
        let mut child = command(args, vars)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn acctstate");
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        DaemonProcess {
            child,
            stdout,
            stderr,
            http: None,
            status: None,
        }
    }

    /// Spawns `acctstate run` and waits for its HTTP address.
    pub async fn run(vars: &[(&str, &str)]) -> DaemonProcess {
        let mut d = DaemonProcess::spawn(&["run"], vars);
        d.wait_http().await;
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The stdout lines parsed as JSON (unparsable ones skipped).
    pub fn logs(&self) -> Vec<Value> {
        self.stdout()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first log line whose message is `message`, if any.
    pub fn log_line(&self, message: &str) -> Option<Value> {
        self.logs().into_iter().find(|v| v["message"] == message)
    }

    /// Reads the log until `"message":"http listening"` and keeps its `addr`.
    pub async fn wait_http(&mut self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log_line("http listening") {
                let addr: SocketAddr = line["addr"]
                    .as_str()
                    .expect("http listening has an addr")
                    .parse()
                    .expect("addr is an address");
                self.http = Some(addr);
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited ({status}) before listening\nstdout: {:#?}\nstderr: {:#?}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `http listening` line within {WAIT:?}: {:#?}",
                self.stdout()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.http.expect("wait_http first"))
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Sends `signal` (e.g. `TERM`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for the exit; panics after `timeout`.
    pub async fn wait_with_deadline(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} still running after {timeout:?}; last lines: {:#?}",
                self.pid(),
                self.stdout().iter().rev().take(20).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A strict Prometheus text-format (0.0.4) parser.

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    /// family name → type
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples of exactly `name`.
    pub fn samples(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The sum of every sample of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples(name).iter().map(|s| s.value).sum()
    }

    /// The value of `name` with the label `k=v`.
    pub fn value_with(&self, name: &str, k: &str, v: &str) -> Option<f64> {
        self.samples(name)
            .into_iter()
            .find(|s| s.labels.get(k).map(String::as_str) == Some(v))
            .map(|s| s.value)
    }
}

pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value `{s}`: {e}")),
    }
}

/// Parses `{k="v",...}` at the start of `s`; returns the labels and the rest.
pub fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected `{`")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without `=`")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label `{name}` repeated"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// Parses the whole text; any line that is not valid is an error naming the line.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];
    let mut out = Exposition::default();
    let mut seen = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    if !is_metric_name(name) {
                        return Err(err("bad metric name in TYPE".into()));
                    }
                    if !TYPES.contains(kind) {
                        return Err(err(format!("unknown type `{kind}`")));
                    }
                    if out
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(err("second TYPE line for the family".into()));
                    }
                }
                ["TYPE", ..] => return Err(err("malformed TYPE line".into())),
                ["HELP", name, ..] if is_metric_name(name) => {}
                ["HELP", ..] => return Err(err("malformed HELP line".into())),
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().unwrap_or_default()).map_err(err)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| err(format!("bad timestamp `{ts}`")))?;
        }
        if parts.next().is_some() {
            return Err(err("trailing tokens".into()));
        }
        // Every sample belongs to a TYPEd family (histogram/summary suffixes included).
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                matches!(
                    out.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
                .then_some(base)
            })
            .unwrap_or(name);
        let kind = out
            .types
            .get(family)
            .ok_or_else(|| err(format!("sample of `{family}` without a TYPE line")))?;
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative or NaN counter".into()));
        }
        if kind == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(err("bucket without `le`".into()));
        }
        if !seen.insert((name.to_owned(), labels.clone())) {
            return Err(err("duplicate series".into()));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

pub async fn scrape(d: &DaemonProcess) -> Exposition {
    let r = http()
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200);
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype}");
    let text = r.text().await.unwrap();
    parse_prometheus(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// Convergence: a daemon (in-process or its own process) against the simulated exchange.

/// How long a daemon may take to converge once trading stopped.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Where one daemon's state is observed: its HTTP address, database, Redis and account.
pub struct Observed<'a> {
    pub http: SocketAddr,
    pub client: &'a reqwest::Client,
    pub pool: &'a PgPool,
    pub redis: &'a Client,
    pub prefix: &'a str,
    pub account: &'a str,
    /// Keys (`SYMBOL:ORDERID`) of orders the test itself sent as raw frames: the sim does not
    /// know them, the orders table may.
    pub injected_orders: &'a [String],
    /// The query of `/v1/account` (`""`, or `?account=ID` in a fleet).
    pub query: &'a str,
}

/// `/v1/account` as the daemon serves it.
#[derive(Debug, Deserialize)]
pub struct AccountJson {
    pub account_id: String,
    pub market: Market,
    pub seq: i64,
    pub balances: BTreeMap<String, Balance>,
    pub positions: BTreeMap<String, Position>,
    pub open_orders: BTreeMap<String, Order>,
    pub stream: Value,
}

impl AccountJson {
    pub fn view(&self) -> AccountView {
        AccountView {
            account_id: self.account_id.clone(),
            market: self.market,
            seq: self.seq,
            balances: self.balances.clone(),
            positions: self.positions.clone(),
            open_orders: self.open_orders.clone(),
        }
    }

    pub fn reconnects(&self) -> u64 {
        self.stream["reconnects"].as_u64().unwrap_or_default()
    }
}

/// `GET http://{http}/v1/account`, parsed.
pub async fn account_json(
    client: &reqwest::Client,
    http: SocketAddr,
) -> Result<AccountJson, String> {
    account_json_at(client, http, "").await
}

/// `GET http://{http}/v1/account{query}`, parsed.
pub async fn account_json_at(
    client: &reqwest::Client,
    http: SocketAddr,
    query: &str,
) -> Result<AccountJson, String> {
    let r = client
        .get(format!("http://{http}/v1/account{query}"))
        .send()
        .await
        .map_err(|e| format!("GET /v1/account: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("GET /v1/account: HTTP {}", r.status()));
    }
    r.json::<AccountJson>()
        .await
        .map_err(|e| format!("GET /v1/account body: {e}"))
}

/// The journal's status rows: (event, detail, event_time), in seq order.
pub async fn status_rows(pool: &PgPool, account: &str) -> Vec<(String, Option<String>, i64)> {
    sqlx::query(
        "SELECT data->>'event' AS event, data->>'detail' AS detail, event_time
         FROM account_changes WHERE account_id = $1 AND kind = 'status' ORDER BY seq",
    )
    .bind(account)
    .fetch_all(pool)
    .await
    .expect("read status rows")
    .into_iter()
    .map(|r| {
        let t: chrono::DateTime<chrono::Utc> = r.get("event_time");
        (r.get("event"), r.get("detail"), t.timestamp_millis())
    })
    .collect()
}

/// The minimum-volume guard: no test may pass on an idle account.
pub fn assert_volume(sim: &Sim, events: u64, fills: usize) {
    let sent = sim.events_sent();
    assert!(
        sent >= events,
        "the sim delivered only {sent} events (< {events})"
    );
    let n = sim.state().fills.len();
    assert!(n >= fills, "the sim holds only {n} fills (< {fills})");
}

/// Polls until the daemon's cache, Postgres and Redis all equal the sim's account.
pub async fn assert_converged(sim: &Sim, d: &Observed<'_>) {
    assert_converged_to(|| sim.state(), sim.market(), d).await
}

/// Polls until the daemon's cache, Postgres and Redis all equal `state()` (one account of a
/// sim of `market`).
pub async fn assert_converged_to(
    state: impl Fn() -> SimState,
    market: SimMarket,
    d: &Observed<'_>,
) {
    if let Err(last) = converged_within(state, market, d).await {
        panic!("not converged after {CONVERGE:?}: {last}");
    }
}

/// Polls until the daemon's cache, Postgres and Redis all equal `state()`; the last
/// difference when `CONVERGE` has passed.
pub async fn converged_within(
    state: impl Fn() -> SimState,
    market: SimMarket,
    d: &Observed<'_>,
) -> Result<(), String> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let last = match check_converged_state(state(), market, d).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn diff<V: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    let mut lines = Vec::new();
    for k in keys {
        let (g, w) = (got.get(k), want.get(k));
        if g != w {
            lines.push(format!("{k}: daemon {g:?}, sim {w:?}"));
        }
    }
    let n = lines.len();
    lines.truncate(5);
    Err(format!(
        "{what}: {n} differences, e.g. {}",
        lines.join("; ")
    ))
}

pub async fn check_converged(sim: &Sim, d: &Observed<'_>) -> Result<(), String> {
    check_converged_state(sim.state(), sim.market(), d).await
}

pub async fn check_converged_state(
    st: SimState,
    market: SimMarket,
    d: &Observed<'_>,
) -> Result<(), String> {
    let account = account_json_at(d.client, d.http, d.query).await?;
    let view = account.view();

    // Balances (an asset missing on one side counts as zero).
    let pick = |b: &Balance| match market {
        SimMarket::Spot => (b.free, b.locked),
        SimMarket::Usdm => (
            b.wallet_balance.unwrap_or_default(),
            b.cross_wallet_balance.unwrap_or_default(),
        ),
    };
    let zero = (Decimal::ZERO, Decimal::ZERO);
    let want: BTreeMap<String, (Decimal, Decimal)> = st
        .balances
        .iter()
        .map(|(k, b)| {
            let v = match market {
                SimMarket::Spot => (b.free, b.locked),
                SimMarket::Usdm => (b.wallet_balance, b.cross_wallet_balance),
            };
            (k.clone(), v)
        })
        .filter(|(_, v)| *v != zero)
        .collect();
    let got: BTreeMap<String, (Decimal, Decimal)> = view
        .balances
        .iter()
        .map(|(k, b)| (k.clone(), pick(b)))
        .filter(|(_, v)| *v != zero)
        .collect();
    diff("balances", &got, &want)?;

    // Positions: amount and entry price of the non-zero ones (missing = flat).
    let want: BTreeMap<String, (Decimal, Decimal)> = st
        .positions
        .iter()
        .filter(|(_, p)| !p.amount.is_zero())
        .map(|(k, p)| (k.clone(), (p.amount, p.entry_price)))
        .collect();
    let got: BTreeMap<String, (Decimal, Decimal)> = view
        .positions
        .iter()
        .filter(|(_, p)| !p.amount.is_zero())
        .map(|(k, p)| (k.clone(), (p.amount, p.entry_price)))
        .collect();
    diff("positions", &got, &want)?;

    // Open orders: key set, status and filled quantity; algo orders as SYMBOL:-ALGOID.
    let mut want: BTreeMap<String, (String, Decimal)> = st
        .open_orders
        .iter()
        .map(|(k, o)| (k.clone(), (o.status.clone(), o.executed_qty)))
        .collect();
    for a in st.open_algo_orders.values() {
        want.insert(
            format!("{}:-{}", a.symbol, a.algo_id),
            (a.status.clone(), Decimal::ZERO),
        );
    }
    let got: BTreeMap<String, (String, Decimal)> = view
        .open_orders
        .iter()
        .map(|(k, o)| (k.clone(), (o.status.as_str().to_owned(), o.executed_qty)))
        .collect();
    diff("open orders", &got, &want)?;

    // Postgres fills: exactly the sim's trades, each once (table and journal).
    let rows = sqlx::query("SELECT symbol, trade_id FROM fills WHERE account_id = $1")
        .bind(d.account)
        .fetch_all(d.pool)
        .await
        .map_err(|e| format!("read fills: {e}"))?;
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let s: String = r.get("symbol");
            let t: i64 = r.get("trade_id");
            format!("{s}:{t}")
        })
        .collect();
    if got.len() != rows.len() {
        return Err(format!(
            "fills: {} rows but {} distinct (symbol, trade_id)",
            rows.len(),
            got.len()
        ));
    }
    let want: BTreeSet<String> = st.fills.keys().cloned().collect();
    if got != want {
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        return Err(format!(
            "fills table: {} rows, sim {} trades; missing e.g. {missing:?}, extra e.g. {extra:?}",
            got.len(),
            want.len()
        ));
    }
    let (journal_fills, journal_keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT key) FROM account_changes
         WHERE account_id = $1 AND kind = 'fill'",
    )
    .bind(d.account)
    .fetch_one(d.pool)
    .await
    .map_err(|e| format!("count journal fills: {e}"))?;
    if journal_fills != journal_keys || journal_keys as usize != want.len() {
        return Err(format!(
            "journal: {journal_fills} fill rows, {journal_keys} distinct, sim {} trades",
            want.len()
        ));
    }

    // Postgres orders: the sim's final status of every order — also the ones that lived and
    // ended while no stream was up (the resync lists them with allOrders).
    let rows = sqlx::query("SELECT symbol, order_id, status FROM orders WHERE account_id = $1")
        .bind(d.account)
        .fetch_all(d.pool)
        .await
        .map_err(|e| format!("read orders: {e}"))?;
    let pg: BTreeMap<String, String> = rows
        .iter()
        .filter(|r| r.get::<i64, _>("order_id") > 0)
        .map(|r| {
            let s: String = r.get("symbol");
            let id: i64 = r.get("order_id");
            (format!("{s}:{id}"), r.get("status"))
        })
        .collect();
    for (k, o) in &st.orders {
        match pg.get(k) {
            Some(s) if *s == o.status => {}
            Some(s) => return Err(format!("orders table: {k} is {s}, sim {}", o.status)),
            None => {
                return Err(format!(
                    "orders table: {k} missing (sim {}, created {}, updated {})",
                    o.status, o.created_at, o.updated_at
                ));
            }
        }
    }
    if let Some(k) = pg
        .keys()
        .find(|k| !st.orders.contains_key(*k) && !d.injected_orders.contains(k))
    {
        return Err(format!("orders table: {k} is not a sim order"));
    }

    // Postgres current state: the balances, positions and open orders rows equal the cache's
    // (zero balances and flat positions count as absent on both sides).
    let pg = PgState::read(d.pool, d.account).await;
    let balance_set = |b: &Balance| {
        !(b.free.is_zero()
            && b.locked.is_zero()
            && b.wallet_balance.unwrap_or_default().is_zero()
            && b.cross_wallet_balance.unwrap_or_default().is_zero())
    };
    let got: BTreeMap<String, Balance> = pg
        .balances
        .values()
        .map(|(b, _)| (b.asset.clone(), b.clone()))
        .filter(|(_, b)| balance_set(b))
        .collect();
    let want: BTreeMap<String, Balance> = view
        .balances
        .clone()
        .into_iter()
        .filter(|(_, b)| balance_set(b))
        .collect();
    diff("balances table vs cache", &got, &want)?;
    let got: BTreeMap<String, Position> = pg
        .positions
        .iter()
        .filter(|(_, (p, _))| !p.amount.is_zero())
        .map(|(k, (p, _))| (k.clone(), p.clone()))
        .collect();
    let want: BTreeMap<String, Position> = view
        .positions
        .clone()
        .into_iter()
        .filter(|(_, p)| !p.amount.is_zero())
        .collect();
    diff("positions table vs cache", &got, &want)?;
    let got: BTreeMap<String, Order> = pg
        .orders
        .iter()
        .filter(|(_, (o, _))| !o.status.is_final())
        .map(|(k, (o, _))| (k.clone(), o.clone()))
        .collect();
    diff(
        "open orders in the orders table vs cache",
        &got,
        &view.open_orders,
    )?;

    // Redis: the state hashes and seq equal the cache's view.
    let redis = RedisState::read(d.redis, d.prefix, d.account).await;
    let expected = RedisState::of_view(&view);
    if redis != expected {
        return Err(format!(
            "redis differs from the cache (redis seq {:?}, cache seq {:?}; balances equal {}, positions equal {}, open orders equal {})",
            redis.seq,
            expected.seq,
            redis.balances == expected.balances,
            redis.positions == expected.positions,
            redis.open_orders == expected.open_orders
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Private Postgres and Redis servers, for tests that stop them.

/// A TCP port on 127.0.0.1 nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd` to completion (off the runtime's threads) and panics with its output unless it
/// succeeds.
async fn run_ok(cmd: &mut Command) {
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Postgres server of its own (`initdb` + `pg_ctl` in a temporary directory, on a free port,
/// as the `postgres` user since Postgres refuses root), so a test can stop it without disturbing
/// the others. Stopped on drop.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivatePg {
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let data = self.data();
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "/usr/local/bin/pg_ctl", "-D", &data]);
        cmd.args(args);
        cmd
    }

    /// `initdb` (trust, superuser `postgres`) and start.
    pub async fn start() -> PrivatePg {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pg = PrivatePg {
            dir,
            port: free_port(),
        };
        let data = pg.data();
        std::fs::create_dir(&data).unwrap();
        run_ok(Command::new("chown").args(["postgres:postgres", &data])).await;
        run_ok(Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            "/usr/local/bin/initdb",
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
        ]))
        .await;
        pg.start_again().await;
        pg
    }

    /// Starts the server (again) on its port; returns once it accepts connections.
    pub async fn start_again(&self) {
        let data = self.data();
        let opts = format!("-p {} -k {data}", self.port);
        let log = format!("{data}/log");
        run_ok(&mut self.pg_ctl(&["-o", &opts, "-l", &log, "-w", "start"])).await;
    }

    /// Stops the server (`-m fast`: connections are cut at once).
    pub async fn stop(&self) {
        run_ok(&mut self.pg_ctl(&["-m", "fast", "-w", "stop"])).await;
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).output();
    }
}

/// A Redis server of its own (`redis-server` as a child, no persistence, on a free port), so a
/// test can kill and restart it. Killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            child: None,
        };
        r.start_again().await;
        r
    }

    /// Starts the server (again) on its port; returns once it answers PING.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let url = self.url();
        eventually(WAIT, "the private Redis answers", || async {
            let Ok(config) = Config::from_url(&url) else {
                return false;
            };
            let client = Client::new(config, None, None, None);
            let ok = client.init().await.is_ok() && client.ping::<String>(None).await.is_ok();
            let _ = client.quit().await;
            ok
        })
        .await;
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
