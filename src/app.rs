//! Wiring: builds the cache actor and its sinks, owns startup and the ordered shutdown.
//!
//! Ownership: the actor owns the account state; the Postgres writer and the Redis publisher
//! each own their queue's receiving end; the exchange stream task (started by the caller) owns
//! its connection and holds a `CacheHandle`. Shutdown closes the actor after the stream has
//! stopped, which closes the sinks' queues; the sinks then drain and finish.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::account::change::seq_floor;
use crate::account::{AccountState, CacheHandle, actor};
use crate::config::{Settings, redact_url};
use crate::sink;

/// The running spine: cache actor + sinks.
pub struct Core {
    pub cache: CacheHandle,
    pub pg: Option<PgPool>,
    pub first_seq: i64,
    actor: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
}

impl Core {
    /// Starts the actor and the configured sinks. Postgres and Redis may be down: the sinks
    /// catch up when they come back.
    pub async fn start(settings: &Settings) -> anyhow::Result<Core> {
        let account_id = settings.account_id.clone();
        let pg = if settings.postgres.url.is_set() {
            let pool = sink::postgres::lazy_pool(&settings.postgres)?;
            tracing::info!(url = %redact_url(settings.postgres.url.expose()), "postgres configured");
            match tokio::time::timeout(Duration::from_secs(10), sink::postgres::MIGRATOR.run(&pool))
                .await
            {
                Ok(Ok(())) => tracing::info!("postgres migrations applied"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "postgres migrations not applied at start; the writer retries")
                }
                Err(_) => tracing::warn!("postgres did not answer at start; the writer retries"),
            }
            Some(pool)
        } else {
            tracing::warn!("postgres not configured: changes are kept in memory and Redis only");
            None
        };
        let last = match &pg {
            Some(pool) => sink::postgres::last_seq(pool, &account_id).await,
            None => None,
        };
        let first_seq = seq_floor(last, chrono::Utc::now().timestamp_micros());
        let state = AccountState::new(account_id.clone(), settings.market(), first_seq);

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
            tracing::info!(url = %redact_url(settings.redis.url.expose()), prefix = %settings.redis.prefix, "redis configured");
            Some((client, rx))
        } else {
            tracing::info!("redis not configured: nothing will be published");
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
                cache.clone(),
                rx,
            )));
        }
        tracing::info!(first_seq, market = settings.market().as_str(), account_id = %account_id, "cache started");
        Ok(Core {
            cache,
            pg,
            first_seq,
            actor,
            sinks,
        })
    }

    /// Stops intake and writes every queued change, within `drain`. Call after the stream task
    /// has stopped.
    pub async fn shutdown(self, drain: Duration) -> anyhow::Result<()> {
        tracing::info!("draining: writing every queued change");
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
        tracing::info!("drained");
        Ok(())
    }
}
