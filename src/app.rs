//! Wiring: builds the cache actor and its sinks, owns startup and the ordered shutdown.
//!
//! Ownership: the actor owns the account state; the Postgres writer and the Redis publisher
//! each own their queue's receiving end; the exchange stream task (started by the caller) owns
//! its connection and holds a `CacheHandle`. Shutdown closes the actor after the stream has
//! stopped, which closes the sinks' queues; the sinks then drain and finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::account::change::seq_floor;
use crate::account::{AccountState, CacheHandle, Millis, actor};
use crate::binance::rest::RestClient;
use crate::binance::snapshot::{self, TradeCursors};
use crate::binance::stream::{Stream, StreamConfig, StreamHealth};
use crate::config::{Settings, redact_url};
use crate::http::HttpState;
use crate::sink;
use crate::sink::resume::Resume;

/// The running spine: cache actor + sinks.
pub struct Core {
    pub cache: CacheHandle,
    pub pg: Option<PgPool>,
    pub first_seq: i64,
    /// Where the earlier run's recorded trades end, per symbol.
    pub cursors: TradeCursors,
    /// The last stream event an earlier run recorded: the restart's recovery starts before it.
    pub last_event: Option<Millis>,
    actor: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
}

impl Core {
    /// Starts the actor and the configured sinks. Postgres and Redis may be down: the sinks
    /// catch up when they come back. `with_stream`: an exchange stream will feed the cache, so
    /// the Redis state keys are first rewritten once its first snapshot is applied.
    pub async fn start(settings: &Settings, with_stream: bool) -> anyhow::Result<Core> {
        let account_id = settings.account_id.clone();
        let pg = if settings.postgres.url.is_set() {
            let pool = sink::postgres::lazy_pool(&settings.postgres)?;
            tracing::info!(event = "postgres_configured", url = %redact_url(settings.postgres.url.expose()), "postgres configured");
            match tokio::time::timeout(Duration::from_secs(10), sink::postgres::MIGRATOR.run(&pool))
                .await
            {
                Ok(Ok(())) => {
                    tracing::info!(event = "migrations_applied", "postgres migrations applied")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "postgres migrations not applied at start; the writer retries")
                }
                Err(_) => tracing::warn!("postgres did not answer at start; the writer retries"),
            }
            Some(pool)
        } else {
            tracing::warn!(
                event = "postgres_not_configured",
                "postgres not configured: changes are kept in memory and Redis only"
            );
            None
        };
        let resume = match &pg {
            Some(pool) => {
                let now = chrono::Utc::now().timestamp_millis();
                Resume::read(pool, &account_id, |last_event| {
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
        let mut state = AccountState::new(account_id.clone(), settings.market(), first_seq);
        // Orders an earlier run left open: the first snapshot closes those that ended since.
        // Fills and finished orders it recorded lately: the recovery window asks for them again,
        // and the cache must know them to drop them.
        tracing::info!(
            orders = resume.open_orders.len(),
            fills = resume.recent_fills.len(),
            finished_orders = resume.recent_finished.len(),
            "open orders and recent history restored from postgres"
        );
        state.restore_open_orders(resume.open_orders);
        state.remember_recorded(&resume.recent_fills, &resume.recent_finished);

        let mut senders = Vec::new();
        let pg_rx = pg.as_ref().map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            rx
        });
        let redis = if settings.redis.url.is_set() {
            let client = sink::redis::client(settings.redis.url.expose())?;
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tracing::info!(event = "redis_configured", url = %redact_url(settings.redis.url.expose()), prefix = %settings.redis.prefix, "redis configured");
            Some((client, rx))
        } else {
            tracing::info!(
                event = "redis_not_configured",
                "redis not configured: nothing will be published"
            );
            None
        };
        let (cache, actor) = actor::spawn(state, senders);
        let mut sinks = Vec::new();
        if let (Some(pool), Some(rx)) = (pg.clone(), pg_rx) {
            sinks.push(tokio::spawn(sink::postgres::run(
                pool,
                account_id.clone(),
                settings.postgres.history_limit,
                rx,
            )));
        }
        if let Some((client, rx)) = redis {
            let keys = sink::redis::Keys::new(&settings.redis.prefix, &account_id);
            sinks.push(tokio::spawn(sink::redis::run(
                client,
                keys,
                settings.redis.stream_maxlen,
                with_stream,
                cache.clone(),
                rx,
            )));
        }
        tracing::info!(event = "cache_started", first_seq, market = settings.market().as_str(), env = %settings.binance.env, rest_url = %settings.rest_url(), account_id = %account_id, "cache started");
        Ok(Core {
            cache,
            pg,
            first_seq,
            cursors: resume.cursors,
            last_event: resume.last_event,
            actor,
            sinks,
        })
    }

    /// Stops intake and writes every queued change, within `drain`. Call after the stream task
    /// has stopped.
    pub async fn shutdown(self, drain: Duration) -> anyhow::Result<()> {
        tracing::info!(
            event = "drain_started",
            "draining: writing every queued change"
        );
        self.cache.close().await;
        let all = async {
            let _ = self.actor.await;
            for s in self.sinks {
                let _ = s.await;
            }
        };
        tokio::time::timeout(drain, all)
            .await
            .context("drain timed out: some queued changes were not written")?;
        tracing::info!(event = "drained", "drained");
        Ok(())
    }
}

/// The whole daemon: spine + exchange stream + HTTP, until `cancel`; then the ordered drain.
/// `on_http` learns the bound HTTP address (tests and `demo` listen on port 0).
pub async fn run_daemon(
    settings: Settings,
    cancel: CancellationToken,
    on_http: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let core = Core::start(&settings, true).await?;
    let rest = Arc::new(RestClient::new(&settings)?);
    let health = Arc::new(StreamHealth::default());
    let http_state = HttpState {
        cache: core.cache.clone(),
        stream: health.clone(),
        pg: core.pg.clone(),
        token: settings.http.token.clone(),
        metrics: crate::telemetry::metrics_handle(),
    };
    let http_cancel = CancellationToken::new();
    let (addr, http_task) = crate::http::serve(
        settings.listen_addr(),
        http_state.clone(),
        http_cancel.clone(),
    )
    .await?;
    if let Some(tx) = on_http {
        let _ = tx.send(addr);
    }
    let notifier = tokio::spawn(systemd_notifier(http_state));
    let stream = Stream::new(
        rest,
        core.cache.clone(),
        StreamConfig::from_settings(&settings),
        health,
        core.cursors.clone(),
        core.last_event,
    );
    let stream_result = stream.run(cancel.clone()).await;
    if let Err(e) = &stream_result {
        tracing::error!(event = "stream_failed", error = %format!("{e:#}"), "stream stopped with an error");
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    notifier.abort();
    let drained = core
        .shutdown(Duration::from_secs(settings.shutdown.drain_timeout_secs))
        .await;
    http_cancel.cancel();
    let _ = http_task.await;
    stream_result?;
    drained
}

/// READY=1 once ready; WATCHDOG=1 only while the cache actor answers. No-ops off systemd.
async fn systemd_notifier(s: HttpState) {
    let mut ready = false;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let alive = matches!(
            tokio::time::timeout(Duration::from_secs(2), s.cache.view()).await,
            Ok(Ok(_))
        );
        if alive {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if !ready && alive && crate::http::not_ready_reasons(&s).await.is_empty() {
            ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            tracing::info!(
                event = "ready",
                "ready: snapshot loaded, stream subscribed, postgres reachable"
            );
        }
    }
}
