//! The axum server: Binance REST routes (spot `/api/v3/*`, USD-M `/fapi/*`), each answered
//! from the account its `X-MBX-APIKEY` names, the spot WebSocket API endpoint (`/ws-api/v3`;
//! its requests: `ws_api`), the USD-M user-data stream (`/private/ws`, `/private/stream` and
//! the deaf path forms; see `usdm_stream`), the per-account listenKeys, and the connection
//! tasks (the registry and delivery: `registry`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::account::Model;
use super::auth::{self, ApiError};
use super::payloads;
use super::registry::{ListenKey, Out};
use super::usdm_stream::UsdmConn;
use super::{Inner, SimMarket, exchange_info, weights, ws_api};

/// A listenKey is valid for 60 minutes after creation / keepalive.
pub(crate) const LISTEN_KEY_TTL_MS: i64 = 60 * 60 * 1000;

pub(crate) fn spawn(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
    let mut router = Router::new();
    router = match inner.cfg.market {
        SimMarket::Spot => router.route("/ws-api/v3", get(ws_spot)),
        SimMarket::Usdm => router
            .route("/private/ws", get(ws_usdm))
            .route("/private/stream", get(ws_usdm))
            .route("/private/ws/{key}", get(ws_usdm_deaf))
            // Market data is not simulated: these accept the handshake and requests (Binance's
            // own SDK opens all three routes at once) and deliver no user data.
            .route("/market/stream", get(ws_usdm_market))
            .route("/public/stream", get(ws_usdm_market))
            .route("/market/ws", get(ws_usdm_market))
            .route("/public/ws", get(ws_usdm_market))
            .route("/ws/{key}", get(ws_usdm_deaf)),
    };
    let app = router.fallback(rest).with_state(inner.clone());
    let cancel = inner.cancel.clone();
    tokio::spawn(async move {
        // TCP_NODELAY: small event frames leave at once instead of waiting (Nagle) for the
        // client's (possibly delayed) ACK of the previous one.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "sim server stopped");
        }
    });
}

// ------------------------------------------------------------------------ REST

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({"code": self.code, "msg": self.msg}))
    }
}

type Params = BTreeMap<String, String>;

fn parse_params(query: &str, body: &str) -> Params {
    url::form_urlencoded::parse(query.as_bytes())
        .chain(url::form_urlencoded::parse(body.as_bytes()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn rest(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.rest_calls.fetch_add(1, Ordering::Relaxed);
    let injected = {
        let mut core = inner.lock();
        match core.fail.as_mut() {
            Some(f) if f.remaining > 0 => {
                f.remaining -= 1;
                let f = f.clone();
                if core.fail.as_ref().is_some_and(|f| f.remaining == 0) {
                    core.fail = None;
                }
                Some(f)
            }
            _ => None,
        }
    };
    let query = uri.query().unwrap_or("").to_string();
    let body = String::from_utf8_lossy(&body).into_owned();
    let params = parse_params(&query, &body);
    let weight = weights::rest_weight(inner.cfg.market, &method, uri.path(), |k| {
        params.contains_key(k)
    });
    let used = match inner.charge(weight) {
        Ok(used) => used,
        Err(refused) => return weights::too_many_response(&refused),
    };
    let mut resp = match injected {
        Some(f) => f.response(inner.server_time()),
        None => match handle(&inner, &method, uri.path(), &headers, &query, &body) {
            Ok(mut v) => {
                if inner.cfg.market == SimMarket::Spot && microseconds(&headers) {
                    to_microseconds(&mut v);
                }
                json_response(StatusCode::OK, &v)
            }
            Err(e) => e.into_response(),
        },
    };
    weights::set_used_header(&mut resp, used);
    resp
}

/// Spot `X-MBX-TIME-UNIT: MICROSECOND` (either case): "all time and timestamp related fields
/// in the JSON response will be in microseconds" ([S-REST] "General API Information").
fn microseconds(headers: &HeaderMap) -> bool {
    headers
        .get("X-MBX-TIME-UNIT")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("MICROSECOND"))
}

/// The time fields of Spot REST bodies, ms → µs (the sim keeps ms, so the µs end in 000).
fn to_microseconds(v: &mut Value) {
    const TIME_KEYS: &[&str] = &[
        "serverTime",
        "time",
        "updateTime",
        "transactTime",
        "workingTime",
    ];
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x.as_i64() {
                    Some(t) if TIME_KEYS.contains(&k.as_str()) && t > 0 => *x = json!(t * 1000),
                    _ => to_microseconds(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_microseconds),
        _ => {}
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, -1000, "Not found.")
}

fn handle(
    inner: &Arc<Inner>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &str,
    body: &str,
) -> Result<Value, ApiError> {
    let market = inner.cfg.market;
    let time_path = match market {
        SimMarket::Spot => "/api/v3/time",
        SimMarket::Usdm => "/fapi/v1/time",
    };
    if path == time_path && method == Method::GET {
        return Ok(json!({"serverTime": inner.server_time()}));
    }
    let (ping_path, info_path) = match market {
        SimMarket::Spot => ("/api/v3/ping", "/api/v3/exchangeInfo"),
        SimMarket::Usdm => ("/fapi/v1/ping", "/fapi/v1/exchangeInfo"),
    };
    if path == ping_path && method == Method::GET {
        return Ok(json!({}));
    }
    if path == info_path && method == Method::GET {
        return exchange_info(inner, &parse_params(query, body));
    }
    if market == SimMarket::Usdm && path == "/fapi/v1/listenKey" {
        let account = auth::check_api_key(headers, &inner.keys)?;
        return listen_key(inner, account, method, &parse_params(query, body));
    }
    let signed = matches!(
        (market, path),
        (
            SimMarket::Spot,
            "/api/v3/account"
                | "/api/v3/openOrders"
                | "/api/v3/order"
                | "/api/v3/allOrders"
                | "/api/v3/myTrades"
                | "/api/v3/orderList/oco"
        ) | (
            SimMarket::Usdm,
            "/fapi/v3/account"
                | "/fapi/v2/account"
                | "/fapi/v3/balance"
                | "/fapi/v2/balance"
                | "/fapi/v1/leverageBracket"
                | "/fapi/v3/positionRisk"
                | "/fapi/v1/openOrders"
                | "/fapi/v1/order"
                | "/fapi/v1/allOrders"
                | "/fapi/v1/userTrades"
                | "/fapi/v1/openAlgoOrders"
                | "/fapi/v1/algoOrder"
        )
    );
    if !signed {
        return Err(not_found());
    }
    let trade = matches!(
        (market, method.as_str(), path),
        (SimMarket::Spot, "POST" | "DELETE", "/api/v3/order")
            | (SimMarket::Spot, "DELETE", "/api/v3/openOrders")
            | (SimMarket::Spot, "POST", "/api/v3/orderList/oco")
            | (
                SimMarket::Usdm,
                "POST" | "DELETE",
                "/fapi/v1/order" | "/fapi/v1/algoOrder"
            )
    );
    if method != Method::GET && !trade {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            -1000,
            "Method not allowed.",
        ));
    }
    let account = auth::check_api_key(headers, &inner.keys)?;
    let verifier = &inner
        .keys
        .get(account)
        .ok_or_else(ApiError::bad_key)?
        .verifier;
    let params = parse_params(query, body);
    auth::check_timestamp(
        params.get("timestamp").map(String::as_str),
        params.get("recvWindow").map(String::as_str),
        inner.server_time(),
    )?;
    auth::verify_rest_signature(verifier, query, body)?;
    let now = inner.server_time();
    let mut core = inner.lock();
    if trade {
        let model = &mut core.accounts[account].model;
        let placed = match (method.as_str(), path) {
            ("POST", "/api/v3/orderList/oco") => model.api_oco_place(&params, now)?,
            ("POST", "/fapi/v1/algoOrder") => model.api_algo_place(&params, now)?,
            ("DELETE", "/fapi/v1/algoOrder") => model.api_algo_cancel(&params, now)?,
            ("POST", _) => model.api_place(&params, now)?,
            (_, "/api/v3/openOrders") => model.api_cancel_all(&params, now)?,
            _ => model.api_cancel(&params, now)?,
        };
        let n = core.emit(account, placed.events);
        inner.count_sent(account, n);
        return Ok(placed.body);
    }
    core.accounts[account].model.refresh(now);
    let m = &core.accounts[account].model;
    let symbol = params.get("symbol").cloned();
    if let Some(s) = &symbol
        && !m.symbols.iter().any(|x| &x.name == s)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1121,
            "Invalid symbol.",
        ));
    }
    let open_orders = || -> Value {
        m.st.open_orders
            .values()
            .filter(|o| symbol.as_ref().is_none_or(|s| *s == o.symbol))
            .map(|o| match market {
                SimMarket::Spot => spot_order(m, o),
                SimMarket::Usdm => payloads::usdm_order(o),
            })
            .collect()
    };
    Ok(match path {
        "/api/v3/account" => {
            let omit = params.get("omitZeroBalances").is_some_and(|v| v == "true");
            payloads::spot_account(m, omit)
        }
        "/fapi/v3/account" => payloads::usdm_account(m),
        // v2 adds the account's flags (ccxt, python-binance still read it).
        "/fapi/v2/account" => payloads::usdm_account_v2(m),
        "/fapi/v3/balance" | "/fapi/v2/balance" => payloads::usdm_balances(m),
        "/fapi/v1/leverageBracket" => payloads::usdm_leverage_brackets(m, symbol.as_deref()),
        "/fapi/v3/positionRisk" => payloads::usdm_position_risk(m, symbol.as_deref()),
        "/api/v3/openOrders" | "/fapi/v1/openOrders" => open_orders(),
        "/fapi/v1/openAlgoOrders" => {
            m.st.open_algo_orders
                .values()
                .filter(|a| symbol.as_ref().is_none_or(|s| *s == a.symbol))
                .map(payloads::usdm_algo_order)
                .collect()
        }
        "/api/v3/order" | "/fapi/v1/order" => {
            let sym = symbol.ok_or_else(|| ApiError::mandatory("symbol"))?;
            let found = if let Some(id) = params.get("orderId") {
                let id: i64 = id.parse().map_err(|_| ApiError::illegal("orderId"))?;
                m.st.orders.get(&format!("{sym}:{id}"))
            } else if let Some(cid) = params.get("origClientOrderId") {
                m.st.orders
                    .values()
                    .find(|o| o.symbol == sym && &o.client_order_id == cid)
            } else {
                return Err(ApiError::mandatory("orderId"));
            };
            let o = found.ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, -2013, "Order does not exist.")
            })?;
            match market {
                SimMarket::Spot => spot_order(m, o),
                SimMarket::Usdm => payloads::usdm_order(o),
            }
        }
        "/api/v3/allOrders" | "/fapi/v1/allOrders" => {
            // Every order of the symbol (as far as the model still holds finished ones), from
            // `orderId` up, created at or after `startTime`, oldest first; without either, the
            // most recent `limit`.
            let sym = symbol.ok_or_else(|| ApiError::mandatory("symbol"))?;
            let order_id = num(&params, "orderId")?;
            let start = num(&params, "startTime")?;
            let limit = limit_param(&params)?;
            let mut orders: Vec<&super::SimOrder> =
                m.st.orders
                    .values()
                    .filter(|o| o.symbol == sym)
                    .filter(|o| order_id.is_none_or(|id| o.order_id >= id))
                    .filter(|o| start.is_none_or(|t| o.created_at >= t))
                    .collect();
            orders.sort_by_key(|o| o.order_id);
            let orders: Vec<&super::SimOrder> = if order_id.is_some() || start.is_some() {
                orders.into_iter().take(limit).collect()
            } else {
                let skip = orders.len().saturating_sub(limit);
                orders.into_iter().skip(skip).collect()
            };
            orders
                .into_iter()
                .map(|o| match market {
                    SimMarket::Spot => spot_order(m, o),
                    SimMarket::Usdm => payloads::usdm_order(o),
                })
                .collect()
        }
        "/api/v3/myTrades" | "/fapi/v1/userTrades" => {
            // As Binance: `fromId` goes with no time bound; a time window is at most 24 hours
            // (Spot) or 7 days (USD-M), and one bound alone means that long from (or up to) it;
            // without either the most recent `limit` trades.
            let sym = symbol.ok_or_else(|| ApiError::mandatory("symbol"))?;
            let num = |k: &str| num(&params, k);
            let order_id = num("orderId")?;
            let from_id = num("fromId")?;
            let (start, end) = (num("startTime")?, num("endTime")?);
            let limit = limit_param(&params)?;
            let span = match market {
                SimMarket::Spot => 24 * 3_600_000,
                SimMarket::Usdm => 7 * 24 * 3_600_000,
            };
            if from_id.is_some() && (start.is_some() || end.is_some()) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    -1128,
                    "Combination of optional parameters invalid.",
                ));
            }
            let window = match (start, end) {
                (Some(s), Some(e)) if e - s > span || e < s => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        -1127,
                        "More than 24 hours between startTime and endTime.",
                    ));
                }
                (Some(s), Some(e)) => Some((s, e)),
                (Some(s), None) => Some((s, s + span)),
                (None, Some(e)) => Some((e - span, e)),
                (None, None) => None,
            };
            let mut trades: Vec<&super::SimFill> =
                m.st.fills
                    .values()
                    .filter(|f| f.symbol == sym)
                    .filter(|f| order_id.is_none_or(|id| f.order_id == id))
                    .filter(|f| from_id.is_none_or(|id| f.trade_id >= id))
                    .filter(|f| window.is_none_or(|(s, e)| (s..=e).contains(&f.traded_at)))
                    .collect();
            trades.sort_by_key(|f| f.trade_id);
            let trades: Vec<&super::SimFill> = if from_id.is_some() || window.is_some() {
                trades.into_iter().take(limit).collect()
            } else {
                let skip = trades.len().saturating_sub(limit);
                trades.into_iter().skip(skip).collect()
            };
            trades
                .into_iter()
                .map(|f| match market {
                    SimMarket::Spot => payloads::spot_trade(f),
                    SimMarket::Usdm => payloads::usdm_trade(f),
                })
                .collect()
        }
        _ => return Err(not_found()),
    })
}

/// exchangeInfo, for every symbol or the ones asked for (`symbol`, Spot also `symbols`).
fn exchange_info(inner: &Arc<Inner>, params: &Params) -> Result<Value, ApiError> {
    let now = inner.server_time();
    let limit = inner.weight_limit.load(Ordering::Relaxed);
    let core = inner.lock();
    // Every account trades the same symbols.
    let m = &core.accounts[0].model;
    let only = match exchange_info::requested_symbols(
        params.get("symbol").map(String::as_str),
        params.get("symbols").map(String::as_str),
    ) {
        None => None,
        Some(Err(())) => return Err(ApiError::illegal_value("symbols")),
        Some(Ok(list)) => {
            if list.iter().any(|s| !m.symbols.iter().any(|x| &x.name == s)) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    -1121,
                    "Invalid symbol.",
                ));
            }
            Some(list)
        }
    };
    Ok(exchange_info::build(m, now, limit, only.as_deref()))
}

/// A Spot order as REST shows it; an untriggered OCO stop leg is not working yet.
fn spot_order(m: &Model, o: &super::SimOrder) -> Value {
    let mut v = payloads::spot_order(o);
    if m.oco_pending
        .contains(&format!("{}:{}", o.symbol, o.order_id))
    {
        v["isWorking"] = json!(false);
        v["workingTime"] = json!(-1);
    }
    v
}

/// An optional integer parameter.
fn num(params: &Params, k: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(k)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::illegal(k)))
        .transpose()
}

/// `limit`: default 500, 1..=1000 as Binance allows.
fn limit_param(params: &Params) -> Result<usize, ApiError> {
    let limit = num(params, "limit")?.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1130,
            "Data sent for parameter 'limit' is not valid.",
        ));
    }
    Ok(limit as usize)
}

/// `/fapi/v1/listenKey` of `account`: POST creates (or returns the live key, extended), PUT
/// extends, DELETE invalidates it and closes the streams that carried only it.
fn listen_key(
    inner: &Arc<Inner>,
    account: usize,
    method: &Method,
    params: &Params,
) -> Result<Value, ApiError> {
    let now = inner.server_time();
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            -1125,
            "This listenKey does not exist.",
        )
    };
    let mut core = inner.lock();
    let n = core.expire_if_due(account, now);
    inner.count_sent(account, n);
    let acct = &mut core.accounts[account];
    if *method == Method::POST {
        if acct.valid_key(now).is_none() {
            let key: String = (0..64)
                .map(|_| {
                    const CH: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                    CH[acct.key_rng.random_range(0..CH.len())] as char
                })
                .collect();
            acct.listen_key = Some(ListenKey {
                key,
                expires_at: now,
            });
        }
        let lk = acct.listen_key.as_mut().ok_or_else(invalid)?;
        lk.expires_at = now + LISTEN_KEY_TTL_MS;
        return Ok(json!({"listenKey": lk.key}));
    }
    if *method == Method::PUT {
        inner.keepalives.fetch_add(1, Ordering::Relaxed);
        let Some(key) = acct.valid_key(now).map(str::to_string) else {
            return Err(invalid());
        };
        if params.get("listenKey").is_some_and(|k| *k != key) {
            return Err(invalid());
        }
        if let Some(lk) = acct.listen_key.as_mut() {
            lk.expires_at = now + LISTEN_KEY_TTL_MS;
        }
        return Ok(json!({"listenKey": key}));
    }
    if *method == Method::DELETE {
        if let Some(lk) = acct.listen_key.take() {
            core.close_streams_of_key(&lk.key);
        }
        return Ok(json!({}));
    }
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        -1000,
        "Method not allowed.",
    ))
}

// ------------------------------------------------------------------- WebSocket

/// The answer to an upgrade while connections are refused.
fn refused(inner: &Inner) -> Option<Response> {
    inner
        .lock()
        .refuse_ws
        .then(|| (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable.").into_response())
}

async fn ws_spot(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    if let Some(r) = refused(&inner) {
        return r;
    }
    // Connecting to the WS API costs weight; past the budget (or banned) the handshake gets
    // the REST answer, 429 / 418 with Retry-After (inference: Binance documents the weight,
    // not the refused handshake).
    if let Err(refused) = inner.charge(weights::WS_CONNECT_WEIGHT) {
        return weights::too_many_response(&refused);
    }
    ws.on_upgrade(move |socket| conn_task(inner, socket, UsdmConn::default()))
}

/// `/private/ws?listenKey=…&events=…` and `/private/stream?…` (stream mode).
async fn ws_usdm(State(inner): State<Arc<Inner>>, uri: Uri, ws: WebSocketUpgrade) -> Response {
    if let Some(r) = refused(&inner) {
        return r;
    }
    let wrapped = uri.path() == "/private/stream";
    let usdm = UsdmConn::from_query(uri.query().unwrap_or(""), wrapped);
    ws.on_upgrade(move |socket| conn_task(inner, socket, usdm))
}

/// `/market/*` and `/public/*`: a stream connection without user data (market data is not
/// simulated); `SUBSCRIBE` is answered as Binance does.
async fn ws_usdm_market(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    if let Some(r) = refused(&inner) {
        return r;
    }
    let usdm = UsdmConn {
        wrapped: true,
        ..UsdmConn::default()
    };
    ws.on_upgrade(move |socket| conn_task(inner, socket, usdm))
}

/// `/private/ws/<listenKey>` and `/ws/<listenKey>`: production accepts the handshake and never
/// delivers a user-data event on them.
async fn ws_usdm_deaf(State(inner): State<Arc<Inner>>, uri: Uri, ws: WebSocketUpgrade) -> Response {
    let form = if uri.path().starts_with("/private/") {
        "/private/ws/<listenKey>"
    } else {
        "/ws/<listenKey>"
    };
    tracing::warn!(
        form,
        "sim: user-data stream opened with a path-segment listenKey; production delivers nothing there, and neither does the sim"
    );
    ws.on_upgrade(move |socket| conn_task(inner, socket, UsdmConn::default()))
}

async fn conn_task(inner: Arc<Inner>, socket: WebSocket, usdm: UsdmConn) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = inner.lock().register(tx, usdm);
    let (mut sink, mut stream) = socket.split();
    let period = inner.cfg.ping_interval.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut close_at: Option<tokio::time::Instant> = None;
    let mut graceful = false;
    loop {
        let close_sleep = async {
            match close_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = inner.cancel.cancelled() => { graceful = true; break; }
            _ = close_sleep => { graceful = true; break; }
            out = rx.recv() => match out {
                None | Some(Out::Abort) => break,
                Some(Out::Text(t)) => if sink.send(Message::Text(t.into())).await.is_err() { break },
                Some(Out::Binary(b)) => if sink.send(Message::Binary(b.into())).await.is_err() { break },
                Some(Out::Stall) => {
                    // Until aborted or the server stops; once the registry has forgotten the
                    // connection (its channel closed) the socket just hangs, as half-open ones do.
                    loop {
                        tokio::select! {
                            _ = inner.cancel.cancelled() => break,
                            out = rx.recv() => match out {
                                Some(Out::Abort) => break,
                                None => { inner.cancel.cancelled().await; break }
                                Some(_) => {}
                            },
                        }
                    }
                    break;
                }
                Some(Out::CloseAfter(d)) => {
                    let t = tokio::time::Instant::now() + d;
                    close_at = Some(close_at.map_or(t, |c| c.min(t)));
                }
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::from_static(b"sim"))).await.is_err() { break }
            }
            msg = stream.next() => match msg {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(_))) => { graceful = true; break; }
                Some(Ok(Message::Text(t))) => {
                    if inner.cfg.market == SimMarket::Usdm {
                        let reply = inner.lock().conns.get_mut(&id).map(|c| c.usdm.request(t.as_str()));
                        if let Some(r) = reply && sink.send(Message::Text(r.into())).await.is_err() { break }
                    } else {
                        let replies = ws_api::request(&inner, id, t.as_str());
                        let mut failed = false;
                        for r in replies {
                            if sink.send(Message::Text(r.into())).await.is_err() { failed = true; break; }
                        }
                        if failed { break }
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
    inner.lock().conns.remove(&id);
    if graceful {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    }
    // Dropping the socket here closes TCP (abruptly when no close frame was sent).
}
