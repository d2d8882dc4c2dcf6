//! The process floor: telemetry is set up by the caller; this builds the shared sinks, the
//! fleet of accounts (`fleet`), the HTTP server and the systemd notifier, serves SIGHUP reloads,
//! and owns the ordered shutdown (every account drains in parallel, then the sinks, then HTTP).
//!
//! `Core` is the spine of one account without a stream (sinks + actor + publisher), for tests
//! and tools that feed a cache themselves.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::account::{CacheHandle, Millis};
use crate::binance::snapshot::TradeCursors;
use crate::config::Settings;
use crate::fleet::account::AccountCore;
use crate::fleet::{Fleet, Shared};
use crate::http::HttpState;
use crate::sink::Sinks;

/// One account's spine without a stream: the sinks, the cache actor and its publisher.
pub struct Core {
    pub cache: CacheHandle,
    pub pg: Option<PgPool>,
    pub first_seq: i64,
    /// Where the earlier run's recorded trades end, per symbol.
    pub cursors: TradeCursors,
    /// The last stream event an earlier run recorded.
    pub last_event: Option<Millis>,
    account: AccountCore,
    sinks: Sinks,
}

impl Core {
    /// Starts the sinks and the top-level account's actor. `with_stream`: an exchange stream
    /// will feed the cache (the Redis state keys wait for its first snapshot).
    pub async fn start(settings: &Settings, with_stream: bool) -> anyhow::Result<Core> {
        let sinks = Sinks::start(settings).await?;
        let account = AccountCore::start(
            &settings.account_id,
            settings.market(),
            &sinks,
            settings,
            with_stream,
        )
        .await;
        Ok(Core {
            cache: account.cache.clone(),
            pg: sinks.pg.clone(),
            first_seq: account.first_seq,
            cursors: account.cursors.clone(),
            last_event: account.last_event,
            account,
            sinks,
        })
    }

    /// Stops intake and writes every queued change, within `drain`.
    pub async fn shutdown(self, drain: Duration) -> anyhow::Result<()> {
        tracing::info!(
            event = "drain_started",
            "draining: writing every queued change"
        );
        let all = async {
            self.account.shutdown().await;
            self.sinks.shutdown().await;
        };
        tokio::time::timeout(drain, all)
            .await
            .context("drain timed out: some queued changes were not written")?;
        tracing::info!(event = "drained", "drained");
        Ok(())
    }
}

/// The whole daemon until `cancel`, without reloads. `on_http` learns the bound HTTP address
/// (tests and `demo` listen on port 0).
pub async fn run_daemon(
    settings: Settings,
    cancel: CancellationToken,
    on_http: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    run_fleet(settings, cancel, on_http, None).await
}

/// The whole daemon: every account of `settings.accounts()`, HTTP, reloads on `reload` (SIGHUP),
/// until `cancel`; then the ordered drain.
pub async fn run_fleet(
    settings: Settings,
    cancel: CancellationToken,
    on_http: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    mut reload: Option<mpsc::UnboundedReceiver<()>>,
) -> anyhow::Result<()> {
    let specs = settings.accounts()?;
    let drain = Duration::from_secs(settings.shutdown.drain_timeout_secs);
    let sinks = Sinks::start(&settings).await?;
    let shared = Arc::new(Shared::new(settings.clone(), sinks)?);
    let http_state = HttpState {
        accounts: shared.registry.clone(),
        pg: shared.sinks.pg.clone(),
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
    let heap = tokio::spawn(crate::heap::release_freed());
    let mut fleet = Fleet::new(shared, CancellationToken::new());
    let started = fleet.reconcile(specs).await;
    tracing::info!(
        event = "fleet_started",
        accounts = started.added.len(),
        "accounts started"
    );

    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut failed = None;
    loop {
        let reload_requested = async {
            match reload.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = reload_requested => match r {
                Some(()) => fleet.reload().await,
                None => reload = None,
            },
            _ = check.tick() => {
                if let Some(e) = fleet.all_failed().await {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    notifier.abort();
    heap.abort();
    tracing::info!(
        event = "drain_started",
        "draining: writing every queued change"
    );
    let drained = tokio::time::timeout(drain, fleet.shutdown())
        .await
        .context("drain timed out: some queued changes were not written");
    if matches!(drained, Ok(Ok(()))) {
        tracing::info!(event = "drained", "drained");
    }
    http_cancel.cancel();
    let _ = http_task.await;
    if let Some(e) = failed {
        return Err(e);
    }
    drained?
}

/// READY=1 once ready; WATCHDOG=1 only while every cache actor answers. No-ops off systemd.
async fn systemd_notifier(s: HttpState) {
    let mut ready = false;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let alive = crate::http::actors_answer(&s).await;
        if alive {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if !ready && alive && crate::http::not_ready_reasons(&s).await.is_empty() {
            ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            tracing::info!(
                event = "ready",
                "ready: snapshots loaded, streams subscribed, postgres reachable"
            );
        }
    }
}
