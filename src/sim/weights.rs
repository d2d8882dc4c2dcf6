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
//! - The meter is per IP, so per sim: every account's REST calls and WS API requests share it
//!   ("The limits on the API are based on the IPs, not the API keys", [S-REST] / USD-M
//!   `general-info` "LIMITS"); 1,000 accounts' snapshots share 6,000/min (Spot) or 2,400/min
//!   (USD-M).
//! - "Repeatedly violating rate limits and/or failing to back off after receiving 429s will
//!   result in an automated IP ban (HTTP status 418)"; "IP bans are tracked and scale in
//!   duration for repeat offenders, from 2 minutes to 3 days"; "A `Retry-After` header is sent
//!   with a 418 or 429 responses and will give the number of seconds required to wait, in the
//!   case of a 429, to prevent a ban, or, in the case of a 418, until the ban is over" ([S-REST]
//!   "LIMITS"; the USD-M `general-info` page says the same). The 418 body is -1003 "Way too
//!   many requests; IP(…) banned until <ms>. Please use WebSocket Streams for live updates to
//!   avoid bans." ([S-ERR] -1003).
//!
//! Inference: the window is a fixed clock minute of the server time (the header resets at the
//! start of each minute); a refused request adds no weight. Binance does not say how many
//! refused requests make a ban: here the second request refused for weight within one window
//! (REST or WS API) is answered 418 and bans the IP until the end of that minute plus
//! [`BAN_EXTRA_MS`] (scaled down from Binance's 2 minutes, so tests stay short); during the
//! ban every request is answered 418 with `Retry-After` = the seconds left. A request that
//! still fits after a 429 is served.

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

/// How long an IP ban lasts past the end of the minute in which it was earned.
pub(crate) const BAN_EXTRA_MS: i64 = 5_000;

/// The weight used in the current fixed minute, the IP ban, and what tests ask about.
#[derive(Debug, Default)]
pub(crate) struct WeightMeter {
    minute: i64,
    used: u32,
    /// The minute in which the last 429 was sent.
    refused_minute: Option<i64>,
    /// The IP is banned (418) until this server time (ms).
    banned_until: i64,
    /// The highest `used` any minute reached.
    pub max_used: u32,
    /// How many requests were refused (429 or 418).
    pub rate_limited: u64,
}

/// A request refused for weight: the limit, the weight used and when the client may retry;
/// `banned`: 418 (IP ban) rather than 429.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub limit: u32,
    pub used: u32,
    pub retry_after_secs: u64,
    pub retry_at_ms: i64,
    pub banned: bool,
}

fn secs_until(now_ms: i64, at_ms: i64) -> u64 {
    ((at_ms - now_ms).max(1) as u64).div_ceil(1000)
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

    /// Add `weight` if the budget allows and the IP is not banned; returns the weight used.
    pub fn charge(&mut self, now_ms: i64, weight: u32, limit: u32) -> Result<u32, Refused> {
        self.roll(now_ms);
        let refuse = |used, at, banned| Refused {
            limit,
            used,
            retry_after_secs: secs_until(now_ms, at),
            retry_at_ms: at,
            banned,
        };
        if now_ms < self.banned_until {
            self.rate_limited += 1;
            return Err(refuse(self.used, self.banned_until, true));
        }
        if self.used.saturating_add(weight) > limit {
            self.rate_limited += 1;
            let end = (self.minute + 1) * 60_000;
            if self.refused_minute == Some(self.minute) {
                // Kept sending after a 429 in the same window.
                self.banned_until = end + BAN_EXTRA_MS;
                return Err(refuse(self.used, self.banned_until, true));
            }
            self.refused_minute = Some(self.minute);
            return Err(refuse(self.used, end, false));
        }
        self.used += weight;
        self.max_used = self.max_used.max(self.used);
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

/// The -1003 message of a 429.
pub(crate) fn too_many_msg(limit: u32) -> String {
    format!(
        "Too many requests; current limit of IP(127.0.0.1) request weight per minute is {limit}. Please use WebSocket Streams for live updates to avoid polling the API."
    )
}

/// The -1003 message of a 418.
pub(crate) fn banned_msg(until_ms: i64) -> String {
    format!(
        "Way too many requests; IP(127.0.0.1) banned until {until_ms}. Please use WebSocket Streams for live updates to avoid bans."
    )
}

impl Refused {
    fn status(&self) -> StatusCode {
        if self.banned {
            StatusCode::IM_A_TEAPOT
        } else {
            StatusCode::TOO_MANY_REQUESTS
        }
    }

    fn msg(&self) -> String {
        if self.banned {
            banned_msg(self.retry_at_ms)
        } else {
            too_many_msg(self.limit)
        }
    }
}

/// HTTP 429 (or 418 when banned) -1003 with `Retry-After` and the used weight.
pub(crate) fn too_many_response(r: &Refused) -> Response {
    let mut resp = (
        r.status(),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json!({"code": -1003, "msg": r.msg()}).to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_secs));
    set_used_header(&mut resp, r.used);
    resp
}

/// The WS API answer to a refused request: status 429 / 418, -1003 with
/// `error.data.retryAfter` (epoch ms), and the `rateLimits` count.
pub(crate) fn ws_refused_frame(id: &Value, r: &Refused) -> String {
    json!({
        "id": id,
        "status": r.status().as_u16(),
        "error": {"code": -1003, "msg": r.msg(), "data": {"retryAfter": r.retry_at_ms}},
        "rateLimits": ws_rate_limits(r.limit, r.used)
    })
    .to_string()
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
        assert_eq!((m.max_used, m.rate_limited), (40, 1));
    }

    #[test]
    fn a_second_refusal_in_the_window_bans_the_ip() {
        let mut m = WeightMeter::default();
        let t = 1_700_000_080_000; // 40 s into a minute
        assert!(m.charge(t, 50, 50).is_ok());
        let r = m.charge(t, 1, 50).expect_err("429");
        assert!(!r.banned);
        let r = m.charge(t + 1, 1, 50).expect_err("418");
        assert!(r.banned);
        assert_eq!(r.retry_at_ms, 1_700_000_100_000 + BAN_EXTRA_MS);
        assert_eq!(r.retry_after_secs, 25);
        // The ban outlasts the minute; then the budget is fresh.
        assert!(m.charge(1_700_000_101_000, 1, 50).expect_err("ban").banned);
        assert_eq!(
            m.charge(1_700_000_100_000 + BAN_EXTRA_MS, 1, 50).ok(),
            Some(1)
        );
        assert_eq!((m.max_used, m.rate_limited), (50, 3));
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
