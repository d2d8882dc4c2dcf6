//! Request weight: what each REST endpoint and WS API method costs, the per-minute budget
//! shared by REST and the WS API, and Binance's answer past it.
//!
//! What Binance does and so what this does:
//! - Every REST response carries `X-MBX-USED-WEIGHT-1M`, the weight the IP used in the current
//!   minute ([S-REST] "LIMITS"); the WS API reports the same count in each response's
//!   `rateLimits` ([S-WSAPI] "Rate limits": REST and WS API share the IP's request weight).
//! - Weights (SPEC §3): Spot account 20, openOrders 6 with a symbol / 80 without, allOrders 20,
//!   myTrades 20 (5 with orderId), GET order 4, exchangeInfo 20, ping/time 1, order entry and
//!   cancels 1; USD-M account 5, positionRisk 5, openOrders and openAlgoOrders 1 with a symbol /
//!   40 without, allOrders 5, userTrades 5, GET order 1, listenKey 1, exchangeInfo 1, ping/time 1.
//!   USD-M order entry (POST) costs 0 IP weight, it counts against the order limits only, as
//!   Binance's USD-M New Order page says ("0 on IP rate limit"; quoted from memory, not found
//!   in the reference corpus); cancels cost 1. WS API: connecting 2, `ping`/`time` 1,
//!   user-data-stream methods 2 ([S-WSAPI]).
//! - Past the limit: HTTP 429 `-1003` "Too many requests; current limit of IP(…) request weight
//!   per minute is N. Please use WebSocket Streams for live updates to avoid polling the API."
//!   with `Retry-After` in seconds ([S-REST]); on the WS API status 429 with the same error and
//!   `error.data.retryAfter` in epoch ms ([S-WSAPI] "IP limits").
//!
//! Inference: the window is a fixed clock minute of the server time (the header resets at the
//! start of each minute); a refused request adds no weight.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::SimMarket;

/// Binance's REQUEST_WEIGHT limit per minute for the market.
pub fn default_limit(market: SimMarket) -> u32 {
    match market {
        SimMarket::Spot => 6000,
        SimMarket::Usdm => 2400,
    }
}

/// The weight used in the current fixed minute.
#[derive(Debug, Default)]
pub(crate) struct WeightMeter {
    minute: i64,
    used: u32,
}

/// A request refused for weight: the limit, the weight used and when the minute ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub limit: u32,
    pub used: u32,
    pub retry_after_secs: u64,
    pub retry_at_ms: i64,
}

impl WeightMeter {
    fn roll(&mut self, now_ms: i64) {
        let m = now_ms.div_euclid(60_000);
        if m != self.minute {
            self.minute = m;
            self.used = 0;
        }
    }

    /// The weight used so far in the current minute.
    pub fn used(&mut self, now_ms: i64) -> u32 {
        self.roll(now_ms);
        self.used
    }

    /// Add `weight` if the budget allows; returns the weight used.
    pub fn charge(&mut self, now_ms: i64, weight: u32, limit: u32) -> Result<u32, Refused> {
        self.roll(now_ms);
        if self.used.saturating_add(weight) > limit {
            let end = (self.minute + 1) * 60_000;
            return Err(Refused {
                limit,
                used: self.used,
                retry_after_secs: ((end - now_ms).max(1) as u64).div_ceil(1000),
                retry_at_ms: end,
            });
        }
        self.used += weight;
        Ok(self.used)
    }
}

/// The IP weight of a REST call (unknown paths: 1).
pub(crate) fn rest_weight(
    market: SimMarket,
    method: &Method,
    path: &str,
    has: impl Fn(&str) -> bool,
) -> u32 {
    let get = method == Method::GET;
    match (market, path) {
        (SimMarket::Spot, "/api/v3/account") => 20,
        (SimMarket::Spot, "/api/v3/openOrders") if get => {
            if has("symbol") {
                6
            } else {
                80
            }
        }
        (SimMarket::Spot, "/api/v3/allOrders") => 20,
        (SimMarket::Spot, "/api/v3/myTrades") => {
            if has("orderId") {
                5
            } else {
                20
            }
        }
        (SimMarket::Spot, "/api/v3/order") if get => 4,
        (SimMarket::Spot, "/api/v3/exchangeInfo") => 20,
        (
            SimMarket::Usdm,
            "/fapi/v3/account"
            | "/fapi/v2/account"
            | "/fapi/v3/balance"
            | "/fapi/v2/balance"
            | "/fapi/v3/positionRisk",
        ) => 5,
        (SimMarket::Usdm, "/fapi/v1/openOrders" | "/fapi/v1/openAlgoOrders") => {
            if has("symbol") {
                1
            } else {
                40
            }
        }
        (SimMarket::Usdm, "/fapi/v1/allOrders" | "/fapi/v1/userTrades") => 5,
        (SimMarket::Usdm, "/fapi/v1/order" | "/fapi/v1/algoOrder") if method == Method::POST => 0,
        _ => 1,
    }
}

/// The weight of a WS API method.
pub(crate) fn ws_weight(method: &str) -> u32 {
    match method {
        "ping" | "time" => 1,
        _ => 2,
    }
}

/// Weight of opening a WS API connection.
pub(crate) const WS_CONNECT_WEIGHT: u32 = 2;

fn too_many_msg(limit: u32) -> String {
    format!(
        "Too many requests; current limit of IP(127.0.0.1) request weight per minute is {limit}. Please use WebSocket Streams for live updates to avoid polling the API."
    )
}

/// HTTP 429 -1003 with `Retry-After` and the used weight.
pub(crate) fn too_many_response(r: &Refused) -> Response {
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json!({"code": -1003, "msg": too_many_msg(r.limit)}).to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_secs));
    set_used_header(&mut resp, r.used);
    resp
}

/// WS API error object past the limit.
pub(crate) fn too_many_ws_error(r: &Refused) -> Value {
    json!({"code": -1003, "msg": too_many_msg(r.limit), "data": {"retryAfter": r.retry_at_ms}})
}

pub(crate) fn set_used_header(resp: &mut Response, used: u32) {
    resp.headers_mut()
        .insert("x-mbx-used-weight-1m", HeaderValue::from(used));
}

/// The WS API `rateLimits` array for a response.
pub(crate) fn ws_rate_limits(limit: u32, used: u32) -> Value {
    json!([{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit, "count": used}])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_minute_budget() {
        let mut m = WeightMeter::default();
        let t = 1_700_000_080_000; // 40 s into a minute
        assert_eq!(m.charge(t, 20, 50).ok(), Some(20));
        assert_eq!(m.charge(t, 20, 50).ok(), Some(40));
        let r = m.charge(t + 500, 20, 50).expect_err("over");
        assert_eq!((r.used, r.retry_after_secs), (40, 20));
        assert_eq!(m.used(t + 500), 40);
        // The next minute starts from zero.
        assert_eq!(m.charge(t + 20_000, 20, 50).ok(), Some(20));
    }

    #[test]
    fn weights_follow_the_spec() {
        let none = |_: &str| false;
        let sym = |k: &str| k == "symbol";
        let get = Method::GET;
        assert_eq!(
            rest_weight(SimMarket::Spot, &get, "/api/v3/openOrders", none),
            80
        );
        assert_eq!(
            rest_weight(SimMarket::Spot, &get, "/api/v3/openOrders", sym),
            6
        );
        assert_eq!(
            rest_weight(SimMarket::Spot, &Method::DELETE, "/api/v3/openOrders", sym),
            1
        );
        assert_eq!(
            rest_weight(SimMarket::Spot, &get, "/api/v3/myTrades", |k| k
                == "orderId"),
            5
        );
        assert_eq!(
            rest_weight(SimMarket::Spot, &Method::POST, "/api/v3/order", none),
            1
        );
        assert_eq!(
            rest_weight(SimMarket::Usdm, &get, "/fapi/v1/openAlgoOrders", none),
            40
        );
        assert_eq!(
            rest_weight(SimMarket::Usdm, &Method::POST, "/fapi/v1/order", none),
            0
        );
        assert_eq!(
            rest_weight(SimMarket::Usdm, &get, "/fapi/v1/order", none),
            1
        );
        assert_eq!(
            rest_weight(SimMarket::Usdm, &get, "/fapi/v1/exchangeInfo", none),
            1
        );
    }
}
