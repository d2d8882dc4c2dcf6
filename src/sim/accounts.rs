//! Many accounts on one sim, as production serves many accounts per IP: each account's keys
//! (account 0 the configured one, accounts 1.. deterministic HMAC keys), the lookup of an
//! account by API key, the [`SimAccount`] handle with the per-account API (trading session,
//! state, seeds, subscriber count), stepping every account ([`Sim::run_all`]), what tests ask
//! about connections sharing, and the daemon's fleet file ([`fleet_toml`]).
//!
//! What production does, and so what the sim does:
//! - REST and WS API requests name their account by API key (`X-MBX-APIKEY`, WS API `apiKey`);
//!   an unknown key is -2015 (SPEC §5a); the signature is checked with that account's key.
//! - Request weight, 429/418 and connection counting are per IP, so shared by every account of
//!   a sim (`weights`); "The limits on the API are based on the IPs, not the API keys"
//!   ([S-REST] "LIMITS").
//! - Each account has its own orders, balances, positions and listenKey; its events reach only
//!   the connections that subscribed for it (`registry`).
//!
//! Sim choices (not production facts): account `i` trades a random session seeded `seed + i`,
//! on its own price path; a key configured for account 0 that equals a generated key shadows
//! it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rust_decimal::Decimal;

use super::account::Model;
use super::keys::{SimKeyType, Verifier};
use super::registry::Acct;
use super::{DEMO_API_KEY, DEMO_API_SECRET, Inner, Sim, SimConfig, SimState};

/// The API key of account `i` of a sim (64 characters, like [`DEMO_API_KEY`]); account 0's is
/// the demo key (a sim configured with another key uses that one for account 0 instead).
pub fn sim_account_key(i: usize) -> String {
    if i == 0 {
        DEMO_API_KEY.to_string()
    } else {
        format!("simAccountApiKey{i:048}")
    }
}

/// The HMAC secret of account `i` (64 characters); account 0's is [`DEMO_API_SECRET`].
pub fn sim_account_secret(i: usize) -> String {
    if i == 0 {
        DEMO_API_SECRET.to_string()
    } else {
        format!("simAccountSecret{i:048}")
    }
}

/// One account's credentials and delivery count (immutable apart from the counter).
pub(crate) struct AccountKey {
    pub api_key: String,
    /// HMAC secret; empty for an Ed25519 / RSA account 0.
    pub api_secret: String,
    pub key_type: SimKeyType,
    pub verifier: Verifier,
    pub events_sent: AtomicU64,
}

/// Every account's key, and the lookup by API key.
pub(crate) struct Keys {
    list: Vec<AccountKey>,
    by_key: HashMap<String, usize>,
}

impl Keys {
    /// Account 0 with the configured key, accounts 1..n with generated HMAC keys.
    pub fn new(cfg: &SimConfig) -> anyhow::Result<Keys> {
        let mut list = vec![AccountKey {
            api_key: cfg.api_key.clone(),
            api_secret: cfg.api_secret.clone(),
            key_type: cfg.key_type,
            verifier: Verifier::new(cfg.key_type, &cfg.api_secret, cfg.public_key_pem.as_deref())?,
            events_sent: AtomicU64::new(0),
        }];
        for i in 1..cfg.accounts.max(1) {
            let secret = sim_account_secret(i);
            list.push(AccountKey {
                api_key: sim_account_key(i),
                verifier: Verifier::new(SimKeyType::Hmac, &secret, None)?,
                api_secret: secret,
                key_type: SimKeyType::Hmac,
                events_sent: AtomicU64::new(0),
            });
        }
        let mut by_key = HashMap::with_capacity(list.len());
        for (i, k) in list.iter().enumerate() {
            by_key.entry(k.api_key.clone()).or_insert(i);
        }
        Ok(Keys { list, by_key })
    }

    /// The account an API key belongs to.
    pub fn find(&self, api_key: &str) -> Option<usize> {
        self.by_key.get(api_key).copied()
    }

    pub fn get(&self, i: usize) -> Option<&AccountKey> {
        self.list.get(i)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// Every account's mutable state: model seeded `seed + i`, own listenKey generator.
pub(crate) fn new_accounts(cfg: &SimConfig, now: i64) -> Vec<Acct> {
    (0..cfg.accounts.max(1))
        .map(|i| {
            let seed = cfg.seed.wrapping_add(i as u64);
            Acct::new(Model::new(cfg.market, seed, now), seed)
        })
        .collect()
}

/// Sleep until `produced` events are due at `per_sec` since `start` (yield when unpaced).
async fn pace(start: tokio::time::Instant, produced: usize, per_sec: Option<f64>) {
    match per_sec {
        Some(rate) if rate > 0.0 => {
            tokio::time::sleep_until(start + Duration::from_secs_f64(produced as f64 / rate)).await
        }
        _ => tokio::task::yield_now().await,
    }
}

/// One account of a running [`Sim`]: cheap to clone; keeps the sim running like a `Sim` clone.
#[derive(Clone)]
pub struct SimAccount {
    sim: Sim,
    i: usize,
}

impl SimAccount {
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        self.sim.inner()
    }

    fn key(&self) -> &AccountKey {
        // `i` was checked against the key list when the handle was made.
        &self.inner().keys.list[self.i]
    }

    /// The account's index in the sim (0-based).
    pub fn index(&self) -> usize {
        self.i
    }

    /// The API key the account is selected by.
    pub fn api_key(&self) -> String {
        self.key().api_key.clone()
    }

    /// The account's HMAC secret (empty when account 0 was configured with Ed25519 / RSA).
    pub fn api_secret(&self) -> String {
        self.key().api_secret.clone()
    }

    /// One random trading action of this account; returns how many events it produced
    /// (whether or not anybody was listening).
    pub async fn step(&self) -> usize {
        let inner = self.inner();
        let a = self.i;
        let now = inner.server_time();
        let mut core = inner.lock();
        let mut delivered = core.expire_if_due(a, now);
        let acct = &mut core.accounts[a];
        let mut events = acct.model.step(now);
        let n = events.len();
        if acct.unannounced_per_mille > 0
            && acct.key_rng.random_range(0..1000) < acct.unannounced_per_mille
        {
            // The action happened (REST shows it); the stream never tells.
            acct.unannounced += 1;
            events.clear();
        }
        let mut log = inner.send_log.lock().unwrap_or_else(|e| e.into_inner());
        let whose = inner
            .send_log_account
            .load(std::sync::atomic::Ordering::Relaxed);
        let times: Option<Vec<i64>> = (log.is_some() && (whose == usize::MAX || whose == a))
            .then(|| events.iter().filter_map(|e| e["E"].as_i64()).collect());
        delivered += core.emit(a, events);
        drop(core);
        if let (Some(log), Some(times)) = (log.as_mut(), times) {
            let sent = Instant::now();
            log.extend(times.into_iter().map(|e| (e, sent)));
        }
        drop(log);
        inner.count_sent(a, delivered);
        n
    }

    /// Step until at least `events` events were produced, paced to `per_sec` events/s if set.
    pub async fn run(&self, events: usize, per_sec: Option<u32>) -> usize {
        let start = tokio::time::Instant::now();
        let rate = per_sec.map(f64::from);
        let mut produced = 0usize;
        while produced < events {
            if self.inner().cancel.is_cancelled() {
                break;
            }
            produced += self.step().await;
            pace(start, produced, rate).await;
        }
        produced
    }

    /// The current price (mark) of `symbol` on the account's price path.
    pub fn price(&self, symbol: &str) -> Option<Decimal> {
        self.inner().lock().accounts[self.i]
            .model
            .marks
            .get(symbol)
            .copied()
    }

    /// Move `symbol`'s price (rounded to its tick): the account's resting orders placed through
    /// the REST API that it crosses fill at their price, and their events are sent. Returns
    /// how many events that produced (`None`: unknown symbol).
    pub fn set_price(&self, symbol: &str, price: Decimal) -> Option<usize> {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        let events = core.accounts[self.i].model.set_mark(symbol, price, now)?;
        let n = events.len();
        let delivered = core.emit(self.i, events);
        inner.count_sent(self.i, delivered);
        Some(n)
    }

    /// A snapshot of the account model.
    pub fn state(&self) -> SimState {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        let m = &mut core.accounts[self.i].model;
        m.refresh(now);
        m.st.clone()
    }

    /// The account's events actually delivered (each delivery to each connection counts).
    pub fn events_sent(&self) -> u64 {
        self.key().events_sent.load(Ordering::Relaxed)
    }

    /// Connections carrying the account (Spot: subscribed for it; USD-M: listening to its
    /// live listenKey).
    pub fn subscriber_count(&self) -> usize {
        self.inner().lock().subscriber_count(self.i)
    }

    /// Wait until a connection carries the account.
    pub async fn wait_for_subscriber(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.subscriber_count() > 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no subscriber for account {} within {timeout:?}", self.i);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Put `n` extra open orders in the model without events (memory benchmarks).
    pub fn seed_open_orders(&self, n: usize) {
        let now = self.inner().server_time();
        self.inner().lock().accounts[self.i]
            .model
            .seed_open_orders(n, now);
    }

    /// Put `n` extra assets with balances in the model without events (memory benchmarks).
    pub fn seed_assets(&self, n: usize) {
        let now = self.inner().server_time();
        self.inner().lock().accounts[self.i]
            .model
            .seed_assets(n, now);
    }
}

impl Sim {
    /// How many accounts the sim serves.
    pub fn account_count(&self) -> usize {
        self.inner().keys.len()
    }

    /// Account `i` (`None` past the last).
    pub fn account(&self, i: usize) -> Option<SimAccount> {
        (i < self.account_count()).then(|| SimAccount {
            sim: self.clone(),
            i,
        })
    }

    /// Account 0 (always there).
    pub(crate) fn first(&self) -> SimAccount {
        SimAccount {
            sim: self.clone(),
            i: 0,
        }
    }

    /// Step every account round-robin until each produced at least `events_per_account`
    /// events, paced to `per_sec_per_account` events/s per account if set; returns the events
    /// produced in all.
    pub async fn run_all(
        &self,
        events_per_account: usize,
        per_sec_per_account: Option<u32>,
    ) -> usize {
        let accounts: Vec<SimAccount> = (0..self.account_count())
            .filter_map(|i| self.account(i))
            .collect();
        let rate = per_sec_per_account.map(|r| f64::from(r) * accounts.len() as f64);
        let start = tokio::time::Instant::now();
        let mut produced = vec![0usize; accounts.len()];
        let mut total = 0usize;
        loop {
            let mut stepped = false;
            for (acct, done) in accounts.iter().zip(produced.iter_mut()) {
                if *done >= events_per_account {
                    continue;
                }
                if self.inner().cancel.is_cancelled() {
                    return total;
                }
                stepped = true;
                let n = acct.step().await;
                *done = done.saturating_add(n);
                total = total.saturating_add(n);
                pace(start, total, rate).await;
            }
            if !stepped {
                return total;
            }
        }
    }

    /// Live WebSocket connections now.
    pub fn connections_open(&self) -> usize {
        self.inner().lock().conns.len()
    }

    /// For each live WebSocket connection (in the order they were opened): how many accounts
    /// it carries (Spot: active user-data subscriptions; USD-M: live listenKeys it listens to).
    pub fn subscriptions_on_connections(&self) -> Vec<usize> {
        self.inner().lock().subscriptions_per_conn()
    }
}

/// The daemon's fleet file (CONTRACT §7, `accounts_file`) for every account of `sim`: ids
/// `{id_prefix}-{i:04}`, inline credentials, the sim's URLs. An Ed25519 / RSA account 0 gets
/// its `key_type` and no secret (the operator adds its private key).
pub fn fleet_toml(sim: &Sim, id_prefix: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    let n = sim.account_count();
    let mut out = format!("# written by `acctstate sim --accounts {n}`\n");
    for i in 0..n {
        let Some(k) = sim.inner().keys.get(i) else {
            continue;
        };
        out.push_str("\n[[accounts]]\n");
        out.push_str(&format!("id = {}\n", q(&format!("{id_prefix}-{i:04}"))));
        out.push_str(&format!("market = {}\n", q(&sim.market().to_string())));
        out.push_str(&format!("api_key = {}\n", q(&k.api_key)));
        match k.key_type {
            SimKeyType::Hmac => out.push_str(&format!("api_secret = {}\n", q(&k.api_secret))),
            other => out.push_str(&format!(
                "key_type = {}\n# signs with the private key of the configured public key\n",
                q(&other.to_string())
            )),
        }
        out.push_str(&format!("rest_url = {}\n", q(&sim.rest_url())));
        out.push_str(&format!("ws_url = {}\n", q(&sim.ws_url())));
    }
    out
}
