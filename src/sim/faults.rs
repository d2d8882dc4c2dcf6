//! Fault injection: dropped connections, expired listenKeys, terminated subscriptions,
//! server shutdown, silent account changes, raw frames, duplicated / reordered events,
//! failing REST calls (429/418 with Retry-After, 5xx) and a skewed server clock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::server::Out;
use super::{Sim, SimMarket, payloads};

/// "The next `remaining` REST calls answer `status`."
#[derive(Debug, Clone)]
pub(crate) struct FailRest {
    pub status: u16,
    pub remaining: u32,
    pub retry_after_secs: Option<u64>,
}

impl FailRest {
    pub(crate) fn response(&self, server_time: i64) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = match self.status {
            429 => (
                status,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                json!({"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) request weight per minute is 6000. Please use WebSocket Streams for live updates to avoid polling the API."}).to_string(),
            )
                .into_response(),
            418 => {
                let until = server_time + 1000 * self.retry_after_secs.unwrap_or(120) as i64;
                (
                    status,
                    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    json!({"code": -1003, "msg": format!("Way too many requests; IP(127.0.0.1) banned until {until}. Please use WebSocket Streams for live updates to avoid bans.")}).to_string(),
                )
                    .into_response()
            }
            _ => (status, "Service Unavailable.").into_response(),
        };
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl Sim {
    /// Abruptly close every WebSocket connection (no close frame).
    pub fn drop_connections(&self) {
        let mut core = self.inner().lock();
        for (_, c) in std::mem::take(&mut core.conns) {
            let _ = c.tx.send(Out::Abort);
        }
    }

    /// USD-M: push `listenKeyExpired`, invalidate the key (PUT → -1125) and close the streams.
    pub fn expire_listen_key(&self) {
        let inner = self.inner();
        let now = inner.server_time();
        let n = inner.lock().expire_listen_key(now);
        inner.events_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Spot: push `eventStreamTerminated` on every subscription and stop delivering on it
    /// (the connection stays open and may subscribe again).
    pub fn terminate_subscription(&self) {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        if core.model.market != SimMarket::Spot {
            return;
        }
        let e = core.model.event_time(now);
        let n = core.deliver(&payloads::spot_event_stream_terminated(e));
        inner.events_sent.fetch_add(n, Ordering::Relaxed);
        for c in core.conns.values_mut() {
            c.sub = None;
        }
    }

    /// Spot: push `serverShutdown` (unwrapped) on every connection, close them ~1 s later.
    pub fn server_shutdown(&self) {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        if core.model.market != SimMarket::Spot {
            return;
        }
        let e = core.model.event_time(now);
        let text = json!({"event": payloads::spot_server_shutdown(e)}).to_string();
        let mut n = 0;
        for c in core.conns.values() {
            if c.tx.send(Out::Text(text.clone())).is_ok() {
                n += 1;
            }
            let _ = c.tx.send(Out::CloseAfter(Duration::from_secs(1)));
        }
        inner.events_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Change the account without any event: a balance, one open order cancelled, and (USD-M)
    /// the BTCUSDT position amount.
    pub fn silent_change(&self) {
        let now = self.inner().server_time();
        self.inner().lock().model.silent_change(now);
    }

    /// Deliver an arbitrary text frame to every subscriber.
    pub fn send_raw_text(&self, text: String) {
        self.send_raw(|| Out::Text(text.clone()));
    }

    /// Deliver an arbitrary binary frame to every subscriber.
    pub fn send_raw_binary(&self, bytes: Vec<u8>) {
        self.send_raw(|| Out::Binary(bytes.clone()));
    }

    fn send_raw(&self, make: impl Fn() -> Out) {
        let core = self.inner().lock();
        for c in core.conns.values().filter(|c| core.is_subscriber(c)) {
            let _ = c.tx.send(make());
        }
    }

    /// Every connection goes half-open: it stops sending (events, pings), stops answering the
    /// client's pings and never closes, until the client gives up on it.
    pub fn stall_connections(&self) {
        let mut core = self.inner().lock();
        for (_, c) in std::mem::take(&mut core.conns) {
            let _ = c.tx.send(Out::Stall);
        }
    }

    /// USD-M: the current listenKey (tests check that it never reaches a log line).
    pub fn listen_key(&self) -> Option<String> {
        self.inner()
            .lock()
            .listen_key
            .as_ref()
            .map(|k| k.key.clone())
    }

    /// `per_mille` of the trading actions from now on happen without any event: orders placed,
    /// filled or cancelled and balances moved that only REST shows (Binance does not promise
    /// that a connected stream carries every event).
    pub fn set_unannounced(&self, per_mille: u32) {
        self.inner().lock().unannounced_per_mille = per_mille.min(1000);
    }

    /// How many trading actions went unannounced.
    pub fn unannounced(&self) -> u64 {
        self.inner().lock().unannounced
    }

    /// While on, WebSocket upgrades are refused with HTTP 503 (open connections stay).
    pub fn set_refuse_connections(&self, on: bool) {
        self.inner().lock().refuse_ws = on;
    }

    /// Every event is sent twice.
    pub fn set_duplicate_events(&self, on: bool) {
        self.inner().lock().duplicate = on;
    }

    /// Adjacent events are swapped pairwise. Turning it off flushes a held event.
    pub fn set_reorder_events(&self, on: bool) {
        let inner = self.inner();
        let mut core = inner.lock();
        core.reorder = on;
        if !on && let Some(ev) = core.pending.take() {
            let n = core.deliver(&ev);
            inner.events_sent.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The next `count` REST calls answer `status` (429/418: Binance's -1003 JSON; others: a
    /// plain body), with a `Retry-After` header when `retry_after_secs` is set.
    pub fn fail_rest(&self, status: u16, count: u32, retry_after_secs: Option<u64>) {
        self.inner().lock().fail = (count > 0).then_some(FailRest {
            status,
            remaining: count,
            retry_after_secs,
        });
    }

    /// Skew the sim's server clock (REST serverTime, timestamp checks, event times).
    pub fn set_clock_offset_ms(&self, offset: i64) {
        self.inner()
            .clock_offset_ms
            .store(offset, Ordering::Relaxed);
    }
}
