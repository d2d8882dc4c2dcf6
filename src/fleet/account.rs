//! One account's wiring: its cache actor (restored from Postgres), its Redis publisher on the
//! shared client, its REST client on the market's shared pool and budget, and its stream
//! session — and the ordered stop: the session first, then the actor, whose end closes the
//! publisher's queue (the shared Postgres writer keeps the account's queued changes).
//!
//! Ownership: the actor owns the account's state; the publisher its queue's receiving end;
//! the session its subscription or listenKey. Nothing here is shared with another account
//! except through `Shared` (sinks, budgets, connection pools).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::account::change::seq_floor;
use crate::account::{AccountState, CacheHandle, Market, Millis, actor};
use crate::binance::rest::RestClient;
use crate::binance::snapshot::{self, TradeCursors};
use crate::binance::stream::{Stream, StreamConfig, StreamHealth};
use crate::config::{AccountSpec, Settings};
use crate::sink::Sinks;
use crate::sink::resume::Resume;

/// One account's cache actor and Redis publisher.
pub struct AccountCore {
    pub cache: CacheHandle,
    pub first_seq: i64,
    /// Where the earlier run's recorded trades end, per symbol.
    pub cursors: TradeCursors,
    /// The last stream event an earlier run recorded: the restart's recovery starts before it.
    pub last_event: Option<Millis>,
    actor: JoinHandle<()>,
    publisher: Option<JoinHandle<()>>,
}

impl AccountCore {
    /// Restores the account from Postgres (when it answers) and starts its actor and publisher.
    /// `with_stream`: a stream will feed the cache, so the Redis state keys are first rewritten
    /// once its first snapshot is applied.
    pub async fn start(
        id: &str,
        market: Market,
        sinks: &Sinks,
        settings: &Settings,
        with_stream: bool,
    ) -> AccountCore {
        let resume = match &sinks.pg {
            Some(pool) => {
                let now = chrono::Utc::now().timestamp_millis();
                Resume::read(pool, id, |last_event| {
                    // Where the first recovery window can begin, with a minute to spare.
                    last_event
                        .map_or(now, |t| t - snapshot::RECOVERY_OVERLAP_MS)
                        .max(now - snapshot::RECOVERY_LOOKBACK_MS)
                        - 60_000
                })
                .await
            }
            None => Resume::default(),
        };
        let first_seq = seq_floor(resume.last_seq, chrono::Utc::now().timestamp_micros());
        let mut state = AccountState::new(id, market, first_seq);
        // Orders an earlier run left open: the first snapshot closes those that ended since.
        // Fills and finished orders it recorded lately: the recovery window asks for them again,
        // and the cache must know them to drop them.
        tracing::info!(
            account_id = id,
            orders = resume.open_orders.len(),
            fills = resume.recent_fills.len(),
            finished_orders = resume.recent_finished.len(),
            "open orders and recent history restored from postgres"
        );
        state.restore_open_orders(resume.open_orders);
        state.remember_recorded(&resume.recent_fills, &resume.recent_finished);

        let mut senders = Vec::new();
        if let Some(tx) = sinks.pg_sender() {
            senders.push(tx);
        }
        let redis_rx = sinks.redis.as_ref().map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            rx
        });
        let (cache, actor) = actor::spawn(state, senders);
        let publisher = match (&sinks.redis, redis_rx) {
            (Some(redis), Some(rx)) => Some(tokio::spawn(crate::sink::redis::run(
                redis.clone(),
                crate::sink::redis::Keys::new(&settings.redis.prefix, id),
                settings.redis.stream_maxlen,
                with_stream,
                cache.clone(),
                rx,
            ))),
            _ => None,
        };
        tracing::info!(
            event = "cache_started",
            account_id = id,
            first_seq,
            market = market.as_str(),
            "cache started"
        );
        AccountCore {
            cache,
            first_seq,
            cursors: resume.cursors,
            last_event: resume.last_event,
            actor,
            publisher,
        }
    }

    /// Stops the actor after what is queued; the publisher then publishes what is left.
    pub async fn shutdown(self) {
        self.cache.close().await;
        let _ = self.actor.await;
        if let Some(p) = self.publisher {
            let _ = p.await;
        }
    }
}

/// Runs one account until `cancel`, then stops it in order. The entry is registered (for HTTP)
/// while the account runs.
pub async fn run(
    spec: AccountSpec,
    shared: Arc<Shared>,
    health: Arc<StreamHealth>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &shared.settings;
    let core = AccountCore::start(&spec.id, spec.market, &shared.sinks, settings, true).await;
    let (budget, fresh) = shared.budget(&spec);
    let rest = match RestClient::for_account(&spec, settings, shared.http.clone(), budget) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            core.shutdown().await;
            return Err(e);
        }
    };
    if fresh {
        rest.adopt_published_limit().await;
    }
    shared.set_cache(&spec.id, core.cache.clone());
    let pool = (spec.market == Market::Spot).then(|| shared.pool(&spec));
    let stream = Stream::new(
        &spec.id,
        rest,
        core.cache.clone(),
        StreamConfig::for_url(settings, spec.ws_url.clone()),
        health,
        pool,
        core.cursors.clone(),
        core.last_event,
    );
    let result = stream.run(cancel).await;
    if let Err(e) = &result {
        tracing::error!(event = "stream_failed", account_id = %spec.id, error = %format!("{e:#}"), "stream stopped with an error");
    }
    core.shutdown().await;
    tracing::info!(event = "account_stopped", account_id = %spec.id, "account stopped: its queued changes are with the sinks");
    result
}
