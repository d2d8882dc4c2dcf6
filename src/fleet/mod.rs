//! The supervisor floor: the accounts a process runs, and what they share.
//!
//! `Shared` holds the resources below the accounts — the sinks, one HTTP pool, one REST weight
//! budget per endpoint (= per market and IP) and one pool of Spot WebSocket API connections per
//! endpoint — and the registry HTTP reads. `Fleet` owns the running accounts, keyed by id with
//! their resolved spec: `reload` starts added accounts, drains and stops removed ones, restarts
//! changed ones and leaves unchanged ones alone (no reconnect, no resnapshot). Each account's
//! task (`account::run`) owns that account's wiring.

pub mod account;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::account::{CacheHandle, Market};
use crate::binance::pool::SpotPool;
use crate::binance::rest::budget_for;
use crate::binance::stream::{StreamConfig, StreamHealth};
use crate::binance::weight::Budget;
use crate::config::{AccountSpec, Settings};
use crate::sink::Sinks;

/// What HTTP and readiness know of a configured account (from the moment it is started, so
/// readiness counts it before its cache exists).
#[derive(Clone)]
pub struct AccountEntry {
    pub id: String,
    pub market: Market,
    /// `None` while the account is starting (reading what Postgres holds of it).
    pub cache: Option<CacheHandle>,
    pub health: Arc<StreamHealth>,
}

/// The accounts HTTP can see, by id.
pub type Registry = Arc<RwLock<BTreeMap<String, AccountEntry>>>;

/// What every account of the process shares.
pub struct Shared {
    pub settings: Settings,
    pub sinks: Sinks,
    pub http: reqwest::Client,
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    pools: Mutex<HashMap<String, Arc<SpotPool>>>,
    pub registry: Registry,
}

impl Shared {
    pub fn new(settings: Settings, sinks: Sinks) -> anyhow::Result<Shared> {
        Ok(Shared {
            http: crate::binance::rest::http_client(&settings)?,
            settings,
            sinks,
            budgets: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            registry: Arc::new(RwLock::new(BTreeMap::new())),
        })
    }

    /// The weight budget of the account's endpoint, and whether it was just created.
    pub fn budget(&self, spec: &AccountSpec) -> (Arc<Budget>, bool) {
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        match b.get(&spec.rest_url) {
            Some(budget) => (budget.clone(), false),
            None => {
                let budget = Arc::new(budget_for(&self.settings, spec.market));
                b.insert(spec.rest_url.clone(), budget.clone());
                (budget, true)
            }
        }
    }

    /// The Spot connections of the account's endpoint.
    pub fn pool(&self, spec: &AccountSpec) -> Arc<SpotPool> {
        let mut p = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        p.entry(spec.ws_url.clone())
            .or_insert_with(|| {
                Arc::new(SpotPool::new(
                    StreamConfig::for_url(&self.settings, spec.ws_url.clone()),
                    self.settings.binance.max_subscriptions_per_connection,
                ))
            })
            .clone()
    }

    fn register(&self, entry: AccountEntry) {
        let mut r = self.registry.write().unwrap_or_else(|e| e.into_inner());
        r.insert(entry.id.clone(), entry);
    }

    /// The account's cache exists: HTTP may ask it.
    pub fn set_cache(&self, id: &str, cache: CacheHandle) {
        let mut r = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = r.get_mut(id) {
            e.cache = Some(cache);
        }
    }

    fn unregister(&self, id: &str) {
        let mut r = self.registry.write().unwrap_or_else(|e| e.into_inner());
        r.remove(id);
    }

    /// Closes the shared connections (after every account has stopped).
    fn close_pools(&self) {
        let p = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for pool in p.values() {
            pool.close();
        }
    }
}

struct Running {
    spec: AccountSpec,
    cancel: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The running accounts.
pub struct Fleet {
    shared: Arc<Shared>,
    running: BTreeMap<String, Running>,
    cancel: CancellationToken,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

impl Fleet {
    pub fn new(shared: Arc<Shared>, cancel: CancellationToken) -> Fleet {
        Fleet {
            shared,
            running: BTreeMap::new(),
            cancel,
        }
    }

    fn start(&mut self, spec: AccountSpec) {
        let cancel = self.cancel.child_token();
        let health = Arc::new(StreamHealth::default());
        self.shared.register(AccountEntry {
            id: spec.id.clone(),
            market: spec.market,
            cache: None,
            health: health.clone(),
        });
        let task = tokio::spawn(account::run(
            spec.clone(),
            self.shared.clone(),
            health,
            cancel.clone(),
        ));
        self.running
            .insert(spec.id.clone(), Running { spec, cancel, task });
    }

    /// Drains and stops one account; its rows stay.
    async fn stop(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            r.cancel.cancel();
            let _ = r.task.await;
            self.shared.unregister(id);
        }
    }

    /// Makes the running accounts `specs`.
    pub async fn reconcile(&mut self, specs: Vec<AccountSpec>) -> Reloaded {
        let mut out = Reloaded::default();
        let wanted: BTreeMap<String, AccountSpec> =
            specs.into_iter().map(|s| (s.id.clone(), s)).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            tracing::info!(event = "account_removed", account_id = %id, "account removed from accounts_file: draining and stopping it");
            self.stop(&id).await;
            out.removed.push(id);
        }
        for (id, spec) in wanted {
            match self.running.get(&id) {
                Some(r) if r.spec == spec && !r.task.is_finished() => out.unchanged += 1,
                Some(_) => {
                    tracing::info!(event = "account_changed", account_id = %id, "account changed in accounts_file: restarting it");
                    self.stop(&id).await;
                    self.start(spec);
                    out.changed.push(id);
                }
                None => {
                    tracing::info!(event = "account_added", account_id = %id, market = spec.market.as_str(), "account started");
                    self.start(spec);
                    out.added.push(id);
                }
            }
        }
        out
    }

    /// SIGHUP: reads `accounts_file` again; a file that does not load changes nothing.
    pub async fn reload(&mut self) {
        match self.shared.settings.accounts() {
            Ok(specs) => {
                let r = self.reconcile(specs).await;
                tracing::info!(
                    event = "accounts_reloaded",
                    added = r.added.len(),
                    removed = r.removed.len(),
                    changed = r.changed.len(),
                    unchanged = r.unchanged,
                    "accounts_file reloaded"
                );
            }
            Err(e) => {
                tracing::error!(event = "accounts_reload_failed", error = %e, "accounts_file not reloaded: it does not load; nothing changed");
            }
        }
    }

    /// The first account task that ended with an error, when every account has ended (a fleet
    /// whose accounts all failed, e.g. the single account's credentials were refused).
    pub async fn all_failed(&mut self) -> Option<anyhow::Error> {
        if self.running.is_empty() || self.running.values().any(|r| !r.task.is_finished()) {
            return None;
        }
        let mut first = None;
        for (_, r) in std::mem::take(&mut self.running) {
            if let Ok(Err(e)) = r.task.await
                && first.is_none()
            {
                first = Some(e);
            }
        }
        first
    }

    /// Stops every account (they drain at once, in parallel), then the shared sinks.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        let mut first_err = None;
        for (_, r) in std::mem::take(&mut self.running) {
            if let Ok(Err(e)) = r.task.await
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        self.shared.close_pools();
        self.shared.sinks.shutdown().await;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
