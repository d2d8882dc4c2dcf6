//! Request authentication exactly as Binance does it: API key header, signatures (HMAC,
//! Ed25519 or RSA: `keys`) over the percent-encoded query string + body (REST) or over the
//! alphabetically sorted params (WebSocket API), and the timestamp / recvWindow rule. Errors
//! carry Binance's codes and HTTP statuses as measured in production (SPEC §5a, 2026-07-31):
//! bad signature 400 -1022, unknown or unpermitted key 401 -2015, no key or a malformed one
//! 401 -2014.
//!
//! The API key selects the account (`accounts`): a request is checked against that account's
//! key only.
//!
//! Inference: on the WS API `apiKey` is an ordinary parameter, so a request without it gets
//! -1102 (mandatory parameter); a malformed or unknown one gets -2014 / -2015 as on REST.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::accounts::Keys;
use super::keys::{self, Verifier};

/// A Binance-style error: HTTP status + `{"code":..,"msg":..}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: i64,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: i64, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            msg: msg.into(),
        }
    }
    pub fn bad_key() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    }
    pub fn key_format() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid.")
    }
    pub fn bad_signature() -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            -1022,
            "Signature for this request is not valid.",
        )
    }
    pub fn bad_timestamp() -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )
    }
    pub fn mandatory(param: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }
    pub fn illegal_value(param: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            -1100,
            format!("Illegal characters found in parameter '{param}'."),
        )
    }
    pub fn illegal(param: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            -1100,
            format!(
                "Illegal characters found in parameter '{param}'; legal range is '^[0-9]{{1,20}}$'."
            ),
        )
    }
}

/// An API key named by a request: one of our accounts' (its index), a plausible other one
/// (-2015) or malformed (-2014).
fn check_key_value(given: &str, accounts: &Keys) -> Result<usize, ApiError> {
    if let Some(a) = accounts.find(given) {
        Ok(a)
    } else if keys::plausible_api_key(given) {
        Err(ApiError::bad_key())
    } else {
        Err(ApiError::key_format())
    }
}

/// The account the `X-MBX-APIKEY` header names; without one: -2014.
pub(crate) fn check_api_key(headers: &HeaderMap, accounts: &Keys) -> Result<usize, ApiError> {
    match headers.get("X-MBX-APIKEY").map(|v| v.to_str()) {
        Some(Ok(k)) => check_key_value(k, accounts),
        _ => Err(ApiError::key_format()),
    }
}

/// Split `a=1&b=2&signature=XX` into (`a=1&b=2`, `XX`). The signature must be the last param.
fn split_signature(s: &str) -> Option<(String, String)> {
    let (before, sig) = if let Some(rest) = s.strip_prefix("signature=") {
        ("", rest)
    } else {
        let i = s.find("&signature=")?;
        (&s[..i], &s[i + "&signature=".len()..])
    };
    if sig.contains('&') {
        return None;
    }
    Some((before.to_string(), sig.to_string()))
}

/// Verify a SIGNED REST request: payload = query string as sent (without the signature) +
/// body. The signature may be in the query string or in the body.
pub(crate) fn verify_rest_signature(
    verifier: &Verifier,
    query: &str,
    body: &str,
) -> Result<(), ApiError> {
    let (payload, sig) = if let Some((q, sig)) = split_signature(query) {
        (format!("{q}{body}"), sig)
    } else if let Some((b, sig)) = split_signature(body) {
        (format!("{query}{b}"), sig)
    } else {
        return Err(ApiError::mandatory("signature"));
    };
    if verifier.verify(payload.as_bytes(), &keys::form_decode(&sig)) {
        Ok(())
    } else {
        Err(ApiError::bad_signature())
    }
}

/// Binance's timestamp rule: reject if `timestamp >= serverTime + 1000` or
/// `serverTime - timestamp > recvWindow` (recvWindow default 5000, max 60000).
pub(crate) fn check_timestamp(
    timestamp: Option<&str>,
    recv_window: Option<&str>,
    server_time: i64,
) -> Result<(), ApiError> {
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| ApiError::mandatory("timestamp"))?;
    // Microsecond timestamps are accepted too.
    let ts = if ts > 100_000_000_000_000 {
        ts / 1000
    } else {
        ts
    };
    // Milliseconds with up to three decimals (µs), compared exactly.
    let rw: rust_decimal::Decimal = match recv_window {
        None => rust_decimal::Decimal::from(5000),
        Some(r) => r
            .trim()
            .parse()
            .map_err(|_| ApiError::mandatory("recvWindow"))?,
    };
    if rw.is_sign_negative() || rw > rust_decimal::Decimal::from(60_000) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1131,
            "recvWindow must be less than 60000",
        ));
    }
    if ts >= server_time + 1000 || rust_decimal::Decimal::from(server_time - ts) > rw {
        return Err(ApiError::bad_timestamp());
    }
    Ok(())
}

/// WebSocket API signature payload: every param except `signature`, sorted by key, `k=v`
/// joined with `&` (string values verbatim, other values as their JSON text).
pub(crate) fn ws_payload(params: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = params.keys().filter(|k| *k != "signature").collect();
    keys.sort();
    keys.iter()
        .map(|k| {
            let v = match &params[k.as_str()] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn param_str(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Verify `userDataStream.subscribe.signature` params with the key of the account `apiKey`
/// names; returns that account.
pub(crate) fn verify_ws_params(
    params: &Map<String, Value>,
    accounts: &Keys,
    server_time: i64,
) -> Result<usize, ApiError> {
    let account = match params.get("apiKey") {
        None | Some(Value::Null) => return Err(ApiError::mandatory("apiKey")),
        Some(Value::String(k)) => check_key_value(k, accounts)?,
        Some(_) => return Err(ApiError::key_format()),
    };
    let verifier = &accounts
        .get(account)
        .ok_or_else(ApiError::bad_key)?
        .verifier;
    let sig = param_str(params, "signature").ok_or_else(|| ApiError::mandatory("signature"))?;
    check_timestamp(
        param_str(params, "timestamp").as_deref(),
        param_str(params, "recvWindow").as_deref(),
        server_time,
    )?;
    if !verifier.verify(ws_payload(params).as_bytes(), &sig) {
        return Err(ApiError::bad_signature());
    }
    Ok(account)
}
