//! The operator's HTTP surface (contract §5): `/healthz`, `/readyz`, `/metrics`, `/v1/account`,
//! `/v1/accounts`. `/v1/*` is guarded by an optional bearer token; health endpoints stay open.
//! HTTP only asks: it reads the fleet's registry and the actors' views, and changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::fleet::{AccountEntry, Registry};

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub accounts: Registry,
    pub pg: Option<PgPool>,
    pub token: Secret,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl HttpState {
    fn entries(&self) -> Vec<AccountEntry> {
        let r = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        r.values().cloned().collect()
    }
}

pub fn router(state: HttpState) -> Router {
    let v1 = Router::new()
        .route("/v1/account", get(account))
        .route("/v1/accounts", get(accounts))
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

/// Every account's cache actor answers within 2 s.
pub async fn actors_answer(s: &HttpState) -> bool {
    let entries = s.entries();
    // An account still starting has no actor yet: nothing to ask.
    let pings = entries
        .iter()
        .filter_map(|e| e.cache.as_ref())
        .map(|c| c.seq());
    let all = futures_util::future::join_all(pings);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), all).await,
        Ok(answers) if answers.iter().all(Result::is_ok)
    )
}

async fn healthz(State(s): State<HttpState>) -> Response {
    if actors_answer(&s).await {
        (StatusCode::OK, axum::Json(json!({"ok": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ok": false, "reason": "cache actor not answering"})),
        )
            .into_response()
    }
}

/// The reasons the daemon is not ready (empty = ready). With several accounts each reason
/// names its account.
pub async fn not_ready_reasons(s: &HttpState) -> Vec<String> {
    let mut reasons = Vec::new();
    let entries = s.entries();
    let several = entries.len() > 1;
    for e in &entries {
        let h = &e.health;
        for (ok, why) in [
            (
                h.snapshot_loaded.load(Ordering::Relaxed),
                "first snapshot not loaded",
            ),
            (
                h.subscribed.load(Ordering::Relaxed),
                "stream not subscribed",
            ),
        ] {
            if !ok {
                reasons.push(if several {
                    format!("account {}: {why}", e.id)
                } else {
                    why.to_owned()
                });
            }
        }
    }
    if entries.is_empty() {
        reasons.push("no account is running yet".to_owned());
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

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// `/v1/account`: the one account, or `?account=ID` (required when there are several).
async fn account(State(s): State<HttpState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let entries = s.entries();
    let entry = match q.get("account") {
        Some(id) => match entries.iter().find(|e| &e.id == id) {
            Some(e) => e,
            None => return error(StatusCode::NOT_FOUND, format!("no account `{id}`")),
        },
        None => match entries.as_slice() {
            [one] => one,
            [] => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no account is running yet".into(),
                );
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "several accounts: name one with ?account=ID (see /v1/accounts)".into(),
                );
            }
        },
    };
    let Some(cache) = &entry.cache else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("account `{}` is starting", entry.id),
        );
    };
    // Serialized on the actor, straight from the cache: no copy of the account, no JSON tree.
    let stream = entry.health.to_json();
    let body = cache.read(move |view| serde_json::to_vec(&AccountBody { view, stream }));
    match body.await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialize the account: {e}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cache actor stopped".into(),
        ),
    }
}

/// The body of `/v1/account`: the view and the stream's status.
#[derive(serde::Serialize)]
struct AccountBody<'a> {
    #[serde(flatten)]
    view: crate::account::ViewRef<'a>,
    stream: serde_json::Value,
}

/// `/v1/accounts`: one entry per account.
async fn accounts(State(s): State<HttpState>) -> Response {
    let entries = s.entries();
    let seqs = futures_util::future::join_all(entries.iter().map(|e| async {
        let cache = e.cache.as_ref()?;
        tokio::time::timeout(Duration::from_secs(2), cache.seq())
            .await
            .ok()
            .and_then(Result::ok)
    }))
    .await;
    let list: Vec<serde_json::Value> = entries
        .iter()
        .zip(seqs)
        .map(|(e, seq)| {
            json!({
                "account_id": e.id,
                "market": e.market,
                "ready": e.health.ready(),
                "seq": seq,
                "stream": e.health.to_json(),
                "owner": serde_json::Value::Null,
            })
        })
        .collect();
    axum::Json(list).into_response()
}
