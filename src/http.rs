//! The operator's HTTP surface (contract §5): `/healthz`, `/readyz`, `/metrics`, `/v1/account`.
//! `/v1/*` is guarded by an optional bearer token; health endpoints stay open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::account::CacheHandle;
use crate::binance::stream::StreamHealth;
use crate::config::Secret;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub cache: CacheHandle,
    pub stream: Arc<StreamHealth>,
    pub pg: Option<PgPool>,
    pub token: Secret,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    let v1 = Router::new()
        .route("/v1/account", get(account))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(v1)
        .with_state(state)
}

/// Binds and serves until `cancel`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (http.listen): {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "http server failed");
        }
    });
    tracing::info!(event = "http_listening", addr = %bound, "http listening");
    Ok((bound, task))
}

async fn require_token(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    if s.token.is_set() {
        let expected = format!("Bearer {}", s.token.expose());
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn healthz(State(s): State<HttpState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), s.cache.view()).await {
        Ok(Ok(_)) => (StatusCode::OK, axum::Json(json!({"ok": true}))).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ok": false, "reason": "cache actor not answering"})),
        )
            .into_response(),
    }
}

/// The reasons the daemon is not ready (empty = ready).
pub async fn not_ready_reasons(s: &HttpState) -> Vec<String> {
    let mut reasons = Vec::new();
    if !s
        .stream
        .snapshot_loaded
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        reasons.push("first snapshot not loaded".to_owned());
    }
    if !s
        .stream
        .subscribed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        reasons.push("stream not subscribed".to_owned());
    }
    if let Some(pool) = &s.pg {
        let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => {}
            _ => reasons.push("postgres unreachable".to_owned()),
        }
    }
    reasons
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let reasons = not_ready_reasons(&s).await;
    if reasons.is_empty() {
        (StatusCode::OK, axum::Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "reasons": reasons})),
        )
            .into_response()
    }
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn account(State(s): State<HttpState>) -> Response {
    match s.cache.view().await {
        Ok(v) => axum::Json(json!({
            "account_id": v.account_id,
            "market": v.market,
            "seq": v.seq,
            "balances": v.balances,
            "positions": v.positions,
            "open_orders": v.open_orders,
            "stream": s.stream.to_json(),
        }))
        .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "cache actor stopped"})),
        )
            .into_response(),
    }
}
