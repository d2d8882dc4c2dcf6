//! The Spot WebSocket API requests the sim serves (`ping`, `time`,
//! `userDataStream.subscribe.signature`, `userDataStream.unsubscribe`, `session.subscriptions`)
//! and the per-connection subscription rules of many accounts on one connection.
//!
//! What Binance does ([S-WSAPI] "User Data Stream requests", `websocket-api/
//! user-data-stream-requests.md` of binance-spot-api-docs as mirrored 2026-06-26; [S-ERR]
//! `errors.md`), and so what this does:
//! - `userDataStream.subscribe.signature` works on any session "for one or more accounts for
//!   which you can provide an API Key signature": the `apiKey` param selects the account, the
//!   signature is checked with that account's key; weight 2 (the shared per-IP meter). Each
//!   subscription gets its own `subscriptionId`, counted per connection from 0.
//! - "You can have only one active subscription for a given account on a given connection": a
//!   second subscribe for the same account on the same connection gets -2035
//!   `SUBSCRIPTION_ACTIVE` "User Data Stream subscription already active.".
//! - "A single session supports up to 1,000 active subscriptions … Attempting to start a new
//!   subscription beyond this limit will result in an error"; "a maximum of 65,535 total
//!   subscriptions over its lifetime … you will receive an error and must re-establish a new
//!   connection". The lifetime error is -2042 `MAXIMUM_SUBSCRIPTION_IDS` "Maximum subscription
//!   ID reached for this connection." ([S-ERR]). **Inference:** the docs name no code for the
//!   active limit; the sim answers it with the same -2042 (HTTP status 400), so that a client
//!   reacts the same way: open another connection. The active limit is
//!   `SimConfig::max_subscriptions_per_connection` (default 1,000).
//! - `userDataStream.unsubscribe` without `subscriptionId` closes every subscription of the
//!   connection; with one, only that one; the answer is `{"result":{}}`, and each ended
//!   subscription then gets `eventStreamTerminated` ([S-UDS]: sent "after
//!   `userDataStream.unsubscribe`"). An id that is not active gets -2036
//!   `SUBSCRIPTION_INACTIVE` "User Data Stream subscription not active.".
//! - `session.subscriptions` lists `{"subscriptionId":N}` of the active subscriptions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::auth::{self, ApiError};
use super::{Inner, payloads, weights};

/// Binance's lifetime cap of subscriptions on one WebSocket API session.
const LIFETIME_SUBSCRIPTIONS: u64 = 65_535;

fn max_ids() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        -2042,
        "Maximum subscription ID reached for this connection.",
    )
}

/// Handle one WebSocket API request on connection `conn`; returns the frames to send back.
/// Each request is charged its weight first; the responses' `rateLimits` carry the count.
pub(crate) fn request(inner: &Arc<Inner>, conn: u64, text: &str) -> Vec<String> {
    let limit = inner.weight_limit.load(Ordering::Relaxed);
    let parsed = serde_json::from_str::<Value>(text);
    let method = parsed
        .as_ref()
        .ok()
        .and_then(|r| r.get("method"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let id = parsed
        .as_ref()
        .ok()
        .and_then(|r| r.get("id"))
        .cloned()
        .unwrap_or(Value::Null);
    let rl = match inner.charge(weights::ws_weight(&method)) {
        Ok(used) => weights::ws_rate_limits(limit, used),
        Err(refused) => return vec![weights::ws_refused_frame(&id, &refused)],
    };
    let ws_error = |id: &Value, e: &ApiError| -> String {
        json!({
            "id": id,
            "status": e.status.as_u16(),
            "error": {"code": e.code, "msg": e.msg},
            "rateLimits": rl
        })
        .to_string()
    };
    let ws_ok = |id: &Value, result: Value| -> String {
        json!({"id": id, "status": 200, "result": result, "rateLimits": rl}).to_string()
    };
    let Ok(req) = parsed else {
        let e = ApiError::new(StatusCode::BAD_REQUEST, -1000, "Malformed request.");
        return vec![ws_error(&Value::Null, &e)];
    };
    let empty = Map::new();
    let params = req
        .get("params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let now = inner.server_time();
    match method.as_str() {
        "ping" => vec![ws_ok(&id, json!({}))],
        "time" => vec![ws_ok(&id, json!({"serverTime": now}))],
        "userDataStream.subscribe.signature" => match subscribe(inner, conn, params, now) {
            Ok(Some(sid)) => vec![ws_ok(&id, json!({"subscriptionId": sid}))],
            Ok(None) => Vec::new(),
            Err(e) => vec![ws_error(&id, &e)],
        },
        "userDataStream.unsubscribe" => match unsubscribe(inner, conn, params, now) {
            Ok(ended) => std::iter::once(ws_ok(&id, json!({})))
                .chain(ended)
                .collect(),
            Err(e) => vec![ws_error(&id, &e)],
        },
        "session.subscriptions" => {
            let core = inner.lock();
            let mut ids: Vec<u64> = core
                .conns
                .get(&conn)
                .map(|c| c.subs.values().copied().collect())
                .unwrap_or_default();
            ids.sort_unstable();
            let subs = ids
                .into_iter()
                .map(|s| json!({"subscriptionId": s}))
                .collect();
            vec![ws_ok(&id, Value::Array(subs))]
        }
        _ => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, -1102, "Unknown method.");
            vec![ws_error(&id, &e)]
        }
    }
}

/// Start a subscription of the account the params name; its id (`None`: the connection is
/// gone).
fn subscribe(
    inner: &Arc<Inner>,
    conn: u64,
    params: &Map<String, Value>,
    now: i64,
) -> Result<Option<u64>, ApiError> {
    let account = auth::verify_ws_params(params, &inner.keys, now)?;
    let max_active = inner.cfg.max_subscriptions_per_connection;
    let mut core = inner.lock();
    let Some(c) = core.conns.get_mut(&conn) else {
        return Ok(None);
    };
    if c.subs.contains_key(&account) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -2035,
            "User Data Stream subscription already active.",
        ));
    }
    if c.next_sub >= LIFETIME_SUBSCRIPTIONS || c.subs.len() >= max_active {
        return Err(max_ids());
    }
    let sid = c.next_sub;
    c.next_sub += 1;
    c.subs.insert(account, sid);
    Ok(Some(sid))
}

/// End one subscription (`subscriptionId`) or all of them; the `eventStreamTerminated` frames
/// of the ended ones, in subscription order.
fn unsubscribe(
    inner: &Arc<Inner>,
    conn: u64,
    params: &Map<String, Value>,
    now: i64,
) -> Result<Vec<String>, ApiError> {
    let wanted = match params.get("subscriptionId") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| ApiError::illegal("subscriptionId"))?,
        ),
    };
    let mut core = inner.lock();
    let Some(c) = core.conns.get_mut(&conn) else {
        return Ok(Vec::new());
    };
    let mut ended: Vec<(u64, usize)> = c
        .subs
        .iter()
        .filter(|(_, s)| wanted.is_none_or(|w| w == **s))
        .map(|(a, s)| (*s, *a))
        .collect();
    if wanted.is_some() && ended.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -2036,
            "User Data Stream subscription not active.",
        ));
    }
    for (_, a) in &ended {
        c.subs.remove(a);
    }
    ended.sort_unstable();
    let frames = ended
        .into_iter()
        .map(|(sid, a)| {
            let e = core.accounts[a].model.event_time(now);
            inner.count_sent(a, 1);
            let ev = payloads::spot_event_stream_terminated(e);
            json!({"subscriptionId": sid, "event": ev}).to_string()
        })
        .collect();
    Ok(frames)
}
