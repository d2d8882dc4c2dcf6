//! Simulated Binance exchange (Spot and USD-M futures): a real loopback HTTP + WebSocket
//! server speaking Binance's REST endpoints, signatures and user-data-stream payloads, driven
//! by a deterministic random trading session, with fault injection for tests.
//!
//! This module owns the public API (`Sim`, `SimConfig`, `SimState`, `serve`; the per-account
//! handle `SimAccount` and the fleet file live in `accounts`). It deliberately
//! imports nothing from the rest of the crate, so that a misreading of Binance's wire format
//! in the daemon cannot be hidden by sharing code with the sim.
//!
//! Surfaces and where they live: REST routes and the connection tasks (`server`), the Spot WS
//! API requests and subscriptions (`ws_api`), the connection registry and event delivery
//! (`registry`), many accounts and their keys (`accounts`), the USD-M stream forms
//! (`usdm_stream`), signatures and key types (`auth`, `keys`), request weight and the 429/418
//! answers (`weights`), exchangeInfo and filters (`exchange_info`), order entry (`orders`), OCO lists
//! (`oco`), USD-M conditional orders (`algo`), the account model and random session
//! (`account`), payloads (`payloads`), faults (`faults`). Each module's docs name the
//! production behaviour it relies on and its source (or "inference").
//!
//! Notes on choices the documentation leaves open:
//! - `ALGO_UPDATE.o.ai` is a string (`""` until triggered, then the new order id as text), as
//!   in Binance's example; USD-M `ACCOUNT_UPDATE` for deposits/withdrawals carries `"P":[]`,
//!   funding fees carry no `P`.
//! - Spot fills charge commission in the received asset; a market order may fill in two
//!   trades, each followed by its own `outboundAccountPosition`.
//! - Server Ping frames are sent; a missing Pong does not disconnect the client.
//! - Check order for SIGNED calls: API key (-2014 / -2015), timestamp/recvWindow (-1021),
//!   signature (-1022).
//! - N accounts per sim (`SimConfig::accounts`, default 1): account 0 has the configured key,
//!   of one type (HMAC, Ed25519 or RSA: `keys`); accounts 1.. have generated HMAC keys
//!   (`sim_account_key`). Everything per IP (weight, bans, connections) is shared.

mod account;
mod accounts;
mod algo;
mod auth;
mod exchange_info;
mod faults;
mod keys;
mod oco;
mod orders;
mod payloads;
mod registry;
mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_accounts;
#[cfg(test)]
mod tests_algo;
#[cfg(test)]
mod tests_info;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_orders;
mod usdm_stream;
mod weights;
mod ws_api;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use registry::Core;

pub use accounts::{SimAccount, fleet_toml, sim_account_key, sim_account_secret};
pub use keys::SimKeyType;

/// API key accepted by a sim started with [`SimConfig::new`].
pub const DEMO_API_KEY: &str = "simDemoApiKey0000000000000000000000000000000000000000000000000001";
/// API secret matching [`DEMO_API_KEY`].
pub const DEMO_API_SECRET: &str = "simDemoApiSecret00000000000000000000000000000000000000000000001";

/// Which Binance market a [`Sim`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SimMarket {
    Spot,
    Usdm,
}

impl FromStr for SimMarket {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "spot" => Ok(SimMarket::Spot),
            "usdm" => Ok(SimMarket::Usdm),
            other => anyhow::bail!("unknown market {other:?} (expected \"spot\" or \"usdm\")"),
        }
    }
}

impl std::fmt::Display for SimMarket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimMarket::Spot => "spot",
            SimMarket::Usdm => "usdm",
        })
    }
}

/// Configuration of one simulated market.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub market: SimMarket,
    pub listen: SocketAddr,
    /// Account 0's API key (`X-MBX-APIKEY`, WS API `apiKey`).
    pub api_key: String,
    /// The HMAC secret (used when `key_type` is `Hmac`).
    pub api_secret: String,
    /// How requests are signed: HMAC (default), Ed25519 or RSA.
    pub key_type: SimKeyType,
    /// The client's public key, PEM SPKI (`-----BEGIN PUBLIC KEY-----`), for Ed25519 and RSA.
    pub public_key_pem: Option<String>,
    pub seed: u64,
    /// Interval of server Ping frames (Binance: 20 s spot WS API, 3 min USD-M).
    pub ping_interval: Duration,
    /// REQUEST_WEIGHT budget per minute, shared by REST and the WS API (Binance: 6000 Spot,
    /// 2400 USD-M); past it: HTTP 429 -1003 with `Retry-After`, then 418 (`weights`).
    pub weight_limit: u32,
    /// How many accounts the sim serves (at least 1): account 0 with the key above, accounts
    /// 1.. with [`sim_account_key`] / [`sim_account_secret`]; account `i` trades a session
    /// seeded `seed + i`.
    pub accounts: usize,
    /// Spot: active user-data subscriptions one WS API connection may carry (Binance: 1,000).
    pub max_subscriptions_per_connection: usize,
}

impl SimConfig {
    /// 127.0.0.1:0, demo credentials, seed 1, Binance's ping interval for the market.
    pub fn new(market: SimMarket) -> Self {
        SimConfig {
            market,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: DEMO_API_KEY.to_string(),
            api_secret: DEMO_API_SECRET.to_string(),
            key_type: SimKeyType::Hmac,
            public_key_pem: None,
            seed: 1,
            ping_interval: match market {
                SimMarket::Spot => Duration::from_secs(20),
                SimMarket::Usdm => Duration::from_secs(180),
            },
            weight_limit: weights::default_limit(market),
            accounts: 1,
            max_subscriptions_per_connection: 1000,
        }
    }

    /// Serve `n` accounts (at least 1).
    pub fn with_accounts(mut self, n: usize) -> Self {
        self.accounts = n.max(1);
        self
    }

    /// Accept `api_key` with HMAC-SHA256 signatures made with `api_secret`.
    pub fn with_hmac(mut self, api_key: impl Into<String>, api_secret: impl Into<String>) -> Self {
        self.api_key = api_key.into();
        self.api_secret = api_secret.into();
        self.key_type = SimKeyType::Hmac;
        self.public_key_pem = None;
        self
    }

    /// Accept `api_key` with Ed25519 signatures checked against `public_key_pem` (PEM SPKI).
    pub fn with_ed25519(
        mut self,
        api_key: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> Self {
        self.api_key = api_key.into();
        self.api_secret = String::new();
        self.key_type = SimKeyType::Ed25519;
        self.public_key_pem = Some(public_key_pem.into());
        self
    }

    /// Accept `api_key` with RSA (PKCS#1 v1.5, SHA-256) signatures checked against
    /// `public_key_pem` (PEM SPKI).
    pub fn with_rsa(
        mut self,
        api_key: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> Self {
        self.api_key = api_key.into();
        self.api_secret = String::new();
        self.key_type = SimKeyType::Rsa;
        self.public_key_pem = Some(public_key_pem.into());
        self
    }
}

/// The account model, for assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct SimState {
    /// asset -> balance
    pub balances: BTreeMap<String, SimBalance>,
    /// "SYMBOL:SIDE" -> position (USD-M only; includes flat positions that carry realized PnL)
    pub positions: BTreeMap<String, SimPosition>,
    /// "SYMBOL:ORDERID" -> regular open orders
    pub open_orders: BTreeMap<String, SimOrder>,
    /// "SYMBOL:ALGOID" -> open conditional orders (USD-M)
    pub open_algo_orders: BTreeMap<String, SimAlgoOrder>,
    /// "SYMBOL:ORDERID" -> every order, latest state
    pub orders: BTreeMap<String, SimOrder>,
    /// "SYMBOL:TRADEID" -> every trade
    pub fills: BTreeMap<String, SimFill>,
}

/// Spot: wallet = cross = free+locked, available = free. USD-M: free = available, locked = 0.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct SimBalance {
    pub free: Decimal,
    pub locked: Decimal,
    pub wallet_balance: Decimal,
    pub cross_wallet_balance: Decimal,
    pub available_balance: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimPosition {
    pub symbol: String,
    pub position_side: String,
    pub amount: Decimal,
    pub entry_price: Decimal,
    pub breakeven_price: Decimal,
    pub unrealized_pnl: Decimal,
    pub realized_pnl: Decimal,
    pub margin_type: String,
    pub isolated_wallet: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimOrder {
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
    /// Spot MARKET orders by `quoteOrderQty`: the quote amount asked for (else 0).
    pub quote_order_qty: Decimal,
    /// USD-M `reduceOnly`.
    pub reduce_only: bool,
    /// Spot: the order list (OCO) the order belongs to, -1 if none.
    pub order_list_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimAlgoOrder {
    pub symbol: String,
    pub algo_id: i64,
    pub client_algo_id: String,
    pub side: String,
    pub order_type: String,
    pub status: String,
    pub quantity: Decimal,
    pub trigger_price: Decimal,
    pub price: Decimal,
    pub reduce_only: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimFill {
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
    pub realized_pnl: Decimal,
    pub traded_at: i64,
}

/// Shared state of a running sim (server tasks hold this).
pub(crate) struct Inner {
    pub(crate) cfg: SimConfig,
    /// Every account's key.
    pub(crate) keys: accounts::Keys,
    pub(crate) addr: SocketAddr,
    pub(crate) core: Mutex<Core>,
    pub(crate) cancel: CancellationToken,
    pub(crate) clock_offset_ms: AtomicI64,
    /// The latest event time emitted. Event times strictly increase (one ms per event when
    /// trading faster than 1,000 events/s), so the clock never reads below them: REST
    /// `serverTime` and `updateTime` stay consistent with what the stream said.
    pub(crate) clock_floor: Arc<AtomicI64>,
    /// Deliveries of every account (and connection-level events).
    pub(crate) events_sent: AtomicU64,
    pub(crate) rest_calls: AtomicU64,
    pub(crate) keepalives: AtomicU64,
    /// Request weight used in the current minute, and the budget.
    pub(crate) weights: Mutex<weights::WeightMeter>,
    pub(crate) weight_limit: AtomicU32,
    /// Benchmarks: (event time `E`, when the event was handed to the connections), while on.
    pub(crate) send_log: Mutex<Option<Vec<(i64, Instant)>>>,
    /// Whose events `send_log` records (`usize::MAX`: every account's).
    pub(crate) send_log_account: std::sync::atomic::AtomicUsize,
}

impl Inner {
    /// Lock the core, recovering from poisoning (a panicking test thread must not wedge the sim).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The simulated server clock (wall clock + configured offset), in ms.
    pub(crate) fn server_time(&self) -> i64 {
        (now_ms() + self.clock_offset_ms.load(Ordering::Relaxed))
            .max(self.clock_floor.load(Ordering::Relaxed))
    }

    /// Charge `weight` against the minute's budget; the weight used, or the refusal.
    pub(crate) fn charge(&self, weight: u32) -> Result<u32, weights::Refused> {
        let limit = self.weight_limit.load(Ordering::Relaxed);
        let now = self.server_time();
        self.weights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .charge(now, weight, limit)
    }

    fn meter(&self) -> MutexGuard<'_, weights::WeightMeter> {
        self.weights.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn used_weight(&self) -> u32 {
        let now = self.server_time();
        self.meter().used(now)
    }

    /// Count `n` deliveries of account `a`'s events.
    pub(crate) fn count_sent(&self, a: usize, n: u64) {
        self.events_sent.fetch_add(n, Ordering::Relaxed);
        if let Some(k) = self.keys.get(a) {
            k.events_sent.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Cancels the server when the last `Sim` clone is dropped.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

/// A running simulated exchange. Cheap to clone; the server runs until [`Sim::shutdown`] or
/// until every clone is dropped.
#[derive(Clone)]
pub struct Sim {
    h: Arc<Handle>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Sim {
    /// Bind the listener and spawn the server task.
    /// Fails if the configured public key is not a PEM SPKI key of its type.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<Sim> {
        let keys = accounts::Keys::new(&cfg)?;
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let accounts = accounts::new_accounts(&cfg, now_ms());
        let clock_floor = Arc::new(AtomicI64::new(0));
        let weight_limit = cfg.weight_limit;
        let inner = Arc::new(Inner {
            core: Mutex::new(Core::new(cfg.market, accounts, clock_floor.clone())),
            clock_floor,
            cfg,
            keys,
            addr,
            cancel: CancellationToken::new(),
            clock_offset_ms: AtomicI64::new(0),
            events_sent: AtomicU64::new(0),
            rest_calls: AtomicU64::new(0),
            keepalives: AtomicU64::new(0),
            weights: Mutex::new(weights::WeightMeter::default()),
            weight_limit: AtomicU32::new(weight_limit),
            send_log: Mutex::new(None),
            send_log_account: std::sync::atomic::AtomicUsize::new(usize::MAX),
        });
        server::spawn(inner.clone(), listener);
        Ok(Sim {
            h: Arc::new(Handle { inner }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.h.inner
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner().addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Spot: `ws://127.0.0.1:PORT/ws-api/v3`; USD-M: `ws://127.0.0.1:PORT` (append
    /// `/private/ws?listenKey=<key>&events=…` or a stream-mode path).
    pub fn ws_url(&self) -> String {
        match self.market() {
            SimMarket::Spot => format!("ws://{}/ws-api/v3", self.addr()),
            SimMarket::Usdm => format!("ws://{}", self.addr()),
        }
    }

    pub fn market(&self) -> SimMarket {
        self.inner().cfg.market
    }

    /// Wait until a client is connected and subscribed (spot) / connected with a valid
    /// listenKey (USD-M) for account 0.
    pub async fn wait_for_subscriber(&self, timeout: Duration) -> anyhow::Result<()> {
        self.first().wait_for_subscriber(timeout).await
    }

    /// Connections carrying account 0.
    pub fn subscriber_count(&self) -> usize {
        self.first().subscriber_count()
    }

    /// How many WebSocket connections were ever accepted.
    pub fn connections_opened(&self) -> u64 {
        self.inner().lock().connections_opened()
    }

    /// [`SimAccount::step`] of account 0.
    pub async fn step(&self) -> usize {
        self.first().step().await
    }

    /// [`SimAccount::run`] of account 0 (every account: [`Sim::run_all`]).
    pub async fn run(&self, events: usize, per_sec: Option<u32>) -> usize {
        self.first().run(events, per_sec).await
    }

    /// [`SimAccount::price`] of account 0.
    pub fn price(&self, symbol: &str) -> Option<Decimal> {
        self.first().price(symbol)
    }

    /// [`SimAccount::set_price`] of account 0.
    pub fn set_price(&self, symbol: &str, price: Decimal) -> Option<usize> {
        self.first().set_price(symbol, price)
    }

    /// [`SimAccount::state`] of account 0.
    pub fn state(&self) -> SimState {
        self.first().state()
    }

    /// Events actually delivered to a subscriber (each delivery to each connection counts), of
    /// every account together (with one account: account 0's, [`SimAccount::events_sent`]).
    pub fn events_sent(&self) -> u64 {
        self.inner().events_sent.load(Ordering::Relaxed)
    }

    /// Stop the server and close every connection.
    pub fn shutdown(&self) {
        self.inner().cancel.cancel();
    }

    /// How many REST calls were answered (including injected failures).
    pub fn rest_calls(&self) -> u64 {
        self.inner().rest_calls.load(Ordering::Relaxed)
    }

    /// Request weight used in the current minute (REST and WS API together), as
    /// `X-MBX-USED-WEIGHT-1M` reports it.
    pub fn used_weight(&self) -> u32 {
        self.inner().used_weight()
    }

    /// Change the per-minute REQUEST_WEIGHT budget of a running sim.
    pub fn set_weight_limit(&self, limit: u32) {
        self.inner().weight_limit.store(limit, Ordering::Relaxed);
    }

    /// The highest `X-MBX-USED-WEIGHT-1M` any minute reached so far.
    pub fn max_used_weight_seen(&self) -> u32 {
        self.inner().meter().max_used
    }

    /// How many requests the weight meter refused (HTTP 429 / 418, WS API status 429 / 418);
    /// faults injected with [`Sim::fail_rest`] are not counted.
    pub fn rate_limited_count(&self) -> u64 {
        self.inner().meter().rate_limited
    }

    /// How many `PUT /fapi/v1/listenKey` calls were received.
    pub fn listen_key_keepalives(&self) -> u64 {
        self.inner().keepalives.load(Ordering::Relaxed)
    }

    /// Benchmarks (latency): while on, every trading event produced by [`Sim::step`] is recorded
    /// as (its event time `E`, the `Instant` right after it was queued to every connection's
    /// WebSocket writer). `E` is strictly increasing, so it identifies the event; the daemon
    /// carries it as `event_time` in its Redis messages. Turning it on clears the record.
    pub fn record_send_times(&self, on: bool) {
        *self
            .inner()
            .send_log
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = on.then(Vec::new);
    }

    /// [`Sim::record_send_times`] of one account's events only (the `E` of different accounts
    /// may repeat).
    pub fn record_send_times_of(&self, account: usize) {
        self.inner()
            .send_log_account
            .store(account, Ordering::Relaxed);
        self.record_send_times(true);
    }

    /// The send times recorded so far (see [`Sim::record_send_times`]); the record is emptied.
    pub fn take_send_times(&self) -> Vec<(i64, Instant)> {
        let mut log = self
            .inner()
            .send_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// [`SimAccount::seed_open_orders`] of account 0.
    pub fn seed_open_orders(&self, n: usize) {
        self.first().seed_open_orders(n)
    }

    /// [`SimAccount::seed_assets`] of account 0.
    pub fn seed_assets(&self, n: usize) {
        self.first().seed_assets(n)
    }
}

/// For the `acctstate sim` command: start, print the REST/WS URLs and the credentials it
/// accepts to stdout, then trade at `per_sec` events/s per account until `shutdown` resolves.
/// With several accounts: `accounts_file` set, the fleet file ([`fleet_toml`]) is written
/// there; otherwise one line per account (`sim-NNNN <api_key> <api_secret>`) follows the
/// banner.
pub async fn serve(
    cfg: SimConfig,
    per_sec: u32,
    accounts_file: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let key = cfg.api_key.clone();
    let secret = cfg.api_secret.clone();
    let key_type = cfg.key_type;
    let weight_limit = cfg.weight_limit;
    let sim = Sim::start(cfg).await?;
    println!("market:     {}", sim.market());
    println!("rest_url:   {}", sim.rest_url());
    println!("ws_url:     {}", sim.ws_url());
    println!("weight:     {weight_limit} per minute (X-MBX-USED-WEIGHT-1M)");
    println!("key_type:   {key_type}");
    println!("api_key:    {key}");
    match key_type {
        SimKeyType::Hmac => println!("api_secret: {secret}"),
        SimKeyType::Ed25519 => {
            println!("signatures: Ed25519 over the payload, base64 (URL-encoded on REST)")
        }
        SimKeyType::Rsa => println!(
            "signatures: RSA PKCS#1 v1.5 / SHA-256 over the payload, base64 (URL-encoded on REST)"
        ),
    }
    let n = sim.account_count();
    match &accounts_file {
        Some(path) => {
            std::fs::write(path, fleet_toml(&sim, "sim"))
                .map_err(|e| anyhow::anyhow!("--accounts-file {}: {e}", path.display()))?;
            println!("accounts:   {n}, written to {}", path.display());
        }
        None if n > 1 => {
            println!("accounts:   {n} (id api_key api_secret)");
            for a in (0..n).filter_map(|i| sim.account(i)) {
                println!("sim-{:04} {} {}", a.index(), a.api_key(), a.api_secret());
            }
        }
        None => {}
    }
    let trader = sim.clone();
    let trading = async move {
        loop {
            trader.run_all(usize::MAX, Some(per_sec.max(1))).await;
            if trader.inner().cancel.is_cancelled() {
                break;
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = trading => {}
    }
    sim.shutdown();
    Ok(())
}
