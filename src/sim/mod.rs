//! Simulated Binance exchange (Spot and USD-M futures): a real loopback HTTP + WebSocket
//! server speaking Binance's REST endpoints, signatures and user-data-stream payloads, driven
//! by a deterministic random trading session, with fault injection for tests.
//!
//! This module owns the public API (`Sim`, `SimConfig`, `SimState`, `serve`). It deliberately
//! imports nothing from the rest of the crate, so that a misreading of Binance's wire format
//! in the daemon cannot be hidden by sharing code with the sim.
//!
//! Surfaces and where they live: REST routes, WS API and delivery (`server`), the USD-M stream
//! forms (`usdm_stream`), signatures and key types (`auth`, `keys`), request weight
//! (`weights`), exchangeInfo and filters (`exchange_info`), order entry (`orders`), OCO lists
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
//! - One API key per sim, of one type (HMAC, Ed25519 or RSA: `keys`).

mod account;
mod algo;
mod auth;
mod exchange_info;
mod faults;
mod keys;
mod oco;
mod orders;
mod payloads;
mod server;
#[cfg(test)]
mod tests;
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use rust_decimal::Decimal;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use account::Model;
use server::Core;

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
    /// The only API key the sim accepts (`X-MBX-APIKEY`, WS API `apiKey`).
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
    /// 2400 USD-M); past it: HTTP 429 -1003 with `Retry-After`.
    pub weight_limit: u32,
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
        }
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
    /// The configured key, parsed.
    pub(crate) verifier: keys::Verifier,
    pub(crate) addr: SocketAddr,
    pub(crate) core: Mutex<Core>,
    pub(crate) cancel: CancellationToken,
    pub(crate) clock_offset_ms: AtomicI64,
    /// The latest event time emitted. Event times strictly increase (one ms per event when
    /// trading faster than 1,000 events/s), so the clock never reads below them: REST
    /// `serverTime` and `updateTime` stay consistent with what the stream said.
    pub(crate) clock_floor: Arc<AtomicI64>,
    pub(crate) events_sent: AtomicU64,
    pub(crate) rest_calls: AtomicU64,
    pub(crate) keepalives: AtomicU64,
    /// Request weight used in the current minute, and the budget.
    pub(crate) weights: Mutex<weights::WeightMeter>,
    pub(crate) weight_limit: AtomicU32,
    /// Benchmarks: (event time `E`, when the event was handed to the connections), while on.
    pub(crate) send_log: Mutex<Option<Vec<(i64, Instant)>>>,
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

    pub(crate) fn used_weight(&self) -> u32 {
        let now = self.server_time();
        self.weights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .used(now)
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
        let verifier =
            keys::Verifier::new(cfg.key_type, &cfg.api_secret, cfg.public_key_pem.as_deref())?;
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let model = Model::new(cfg.market, cfg.seed, now_ms());
        let clock_floor = Arc::new(AtomicI64::new(0));
        let weight_limit = cfg.weight_limit;
        let inner = Arc::new(Inner {
            core: Mutex::new(Core::new(model, cfg.seed, clock_floor.clone())),
            clock_floor,
            cfg,
            verifier,
            addr,
            cancel: CancellationToken::new(),
            clock_offset_ms: AtomicI64::new(0),
            events_sent: AtomicU64::new(0),
            rest_calls: AtomicU64::new(0),
            keepalives: AtomicU64::new(0),
            weights: Mutex::new(weights::WeightMeter::default()),
            weight_limit: AtomicU32::new(weight_limit),
            send_log: Mutex::new(None),
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
    /// listenKey (USD-M).
    pub async fn wait_for_subscriber(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.subscriber_count() > 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no subscriber within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.inner().lock().subscriber_count()
    }

    /// How many WebSocket connections were ever accepted.
    pub fn connections_opened(&self) -> u64 {
        self.inner().lock().connections_opened()
    }

    /// One random trading action; returns how many events it produced (whether or not anybody
    /// was listening).
    pub async fn step(&self) -> usize {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        let mut delivered = core.expire_if_due(now);
        let mut events = core.model.step(now);
        let n = events.len();
        if core.unannounced_per_mille > 0
            && core.key_rng.random_range(0..1000) < core.unannounced_per_mille
        {
            // The action happened (REST shows it); the stream never tells.
            core.unannounced += 1;
            events.clear();
        }
        let mut log = inner.send_log.lock().unwrap_or_else(|e| e.into_inner());
        let times: Option<Vec<i64>> = log
            .is_some()
            .then(|| events.iter().filter_map(|e| e["E"].as_i64()).collect());
        delivered += core.emit(events);
        drop(core);
        if let (Some(log), Some(times)) = (log.as_mut(), times) {
            let sent = Instant::now();
            log.extend(times.into_iter().map(|e| (e, sent)));
        }
        drop(log);
        inner.events_sent.fetch_add(delivered, Ordering::Relaxed);
        n
    }

    /// Step until at least `events` events were produced, paced to `per_sec` events/s if set.
    pub async fn run(&self, events: usize, per_sec: Option<u32>) -> usize {
        let start = tokio::time::Instant::now();
        let mut produced = 0usize;
        while produced < events {
            if self.inner().cancel.is_cancelled() {
                break;
            }
            produced += self.step().await;
            match per_sec {
                Some(rate) if rate > 0 => {
                    let due = start + Duration::from_secs_f64(produced as f64 / f64::from(rate));
                    tokio::time::sleep_until(due).await;
                }
                _ => tokio::task::yield_now().await,
            }
        }
        produced
    }

    /// The current price (mark) of `symbol` on the sim's price path.
    pub fn price(&self, symbol: &str) -> Option<Decimal> {
        self.inner().lock().model.marks.get(symbol).copied()
    }

    /// Move `symbol`'s price (rounded to its tick): resting orders placed through the REST
    /// API that it crosses fill at their price, and their events are sent. Returns how many
    /// events that produced (`None`: unknown symbol).
    pub fn set_price(&self, symbol: &str, price: Decimal) -> Option<usize> {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        let events = core.model.set_mark(symbol, price, now)?;
        let n = events.len();
        let delivered = core.emit(events);
        inner.events_sent.fetch_add(delivered, Ordering::Relaxed);
        Some(n)
    }

    /// A snapshot of the account model.
    pub fn state(&self) -> SimState {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        core.model.refresh(now);
        core.model.st.clone()
    }

    /// Events actually delivered to a subscriber (each delivery to each connection counts).
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

    /// The send times recorded so far (see [`Sim::record_send_times`]); the record is emptied.
    pub fn take_send_times(&self) -> Vec<(i64, Instant)> {
        let mut log = self
            .inner()
            .send_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Put `n` extra open orders in the model without events (memory benchmarks).
    pub fn seed_open_orders(&self, n: usize) {
        let now = self.inner().server_time();
        self.inner().lock().model.seed_open_orders(n, now);
    }

    /// Put `n` extra assets with balances in the model without events (memory benchmarks).
    pub fn seed_assets(&self, n: usize) {
        let now = self.inner().server_time();
        self.inner().lock().model.seed_assets(n, now);
    }
}

/// For the `acctstate sim` command: start, print the REST/WS URLs and the credentials it
/// accepts to stdout, then trade at `per_sec` events/s until `shutdown` resolves.
pub async fn serve(
    cfg: SimConfig,
    per_sec: u32,
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
    let trader = sim.clone();
    let trading = async move {
        loop {
            trader.run(usize::MAX, Some(per_sec.max(1))).await;
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
