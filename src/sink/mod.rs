//! Where changes go after the cache: Postgres (write-behind, the source of truth) and Redis
//! (latest state + pub/sub for trading engines). `Sinks` holds what the whole process shares:
//! one Postgres pool and its one writer task (fed by every account's actor), one Redis client
//! (each account has its own publisher task on it).

pub mod postgres;
pub mod redis;
pub mod resume;
pub mod rows;

use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::account::AccountBatch;
use crate::config::{Settings, redact_url};

/// The process's sinks.
pub struct Sinks {
    pub pg: Option<PgPool>,
    pg_tx: Mutex<Option<mpsc::UnboundedSender<AccountBatch>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    pub redis: Option<redis::SharedRedis>,
}

impl Sinks {
    /// Connects lazily (Postgres and Redis may be down: the sinks catch up when they come
    /// back) and applies the migrations when Postgres answers within 10 s.
    pub async fn start(settings: &Settings) -> anyhow::Result<Sinks> {
        let (pg, pg_tx, writer) = if settings.postgres.url.is_set() {
            let pool = postgres::lazy_pool(&settings.postgres)?;
            tracing::info!(event = "postgres_configured", url = %redact_url(settings.postgres.url.expose()), "postgres configured");
            match tokio::time::timeout(Duration::from_secs(10), postgres::MIGRATOR.run(&pool)).await
            {
                Ok(Ok(())) => {
                    tracing::info!(event = "migrations_applied", "postgres migrations applied")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "postgres migrations not applied at start; the writer retries")
                }
                Err(_) => tracing::warn!("postgres did not answer at start; the writer retries"),
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let writer = tokio::spawn(postgres::run(
                pool.clone(),
                settings.postgres.history_limit,
                Duration::from_millis(settings.postgres.linger_ms),
                rx,
            ));
            (Some(pool), Some(tx), Some(writer))
        } else {
            tracing::warn!(
                event = "postgres_not_configured",
                "postgres not configured: changes are kept in memory and Redis only"
            );
            (None, None, None)
        };
        let redis = if settings.redis.url.is_set() {
            let r = redis::SharedRedis::start(settings.redis.url.expose())?;
            tracing::info!(event = "redis_configured", url = %redact_url(settings.redis.url.expose()), prefix = %settings.redis.prefix, "redis configured");
            Some(r)
        } else {
            tracing::info!(
                event = "redis_not_configured",
                "redis not configured: nothing will be published"
            );
            None
        };
        Ok(Sinks {
            pg,
            pg_tx: Mutex::new(pg_tx),
            writer: Mutex::new(writer),
            redis,
        })
    }

    /// A sender into the Postgres writer, for one account's actor.
    pub fn pg_sender(&self) -> Option<mpsc::UnboundedSender<AccountBatch>> {
        self.pg_tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After every account has stopped: the writer writes what is queued and ends; Redis quits.
    pub async fn shutdown(&self) {
        drop(self.pg_tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        if let Some(r) = &self.redis {
            r.quit().await;
        }
    }
}
