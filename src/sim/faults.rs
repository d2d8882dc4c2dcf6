//! Fault injection: dropped connections, expired listenKeys, terminated subscriptions,
//! server shutdown, silent account changes, raw frames, duplicated / reordered events,
//! failing REST calls (429/418 with Retry-After, 5xx) and a skewed server clock.
//!
//! Per account (`SimAccount`; the `Sim` methods of the same name act on account 0): the
//! terminated Spot subscription, the expired listenKey, silent changes, unannounced,
//! duplicated and reordered events, raw frames. Per connection or per IP (`Sim` only): dropped,
//! stalled and refused connections, `serverShutdown`, failing REST calls, the clock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::registry::Out;
use super::{Sim, SimAccount, SimMarket, payloads, weights};

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
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                json!({"code": -1003, "msg": weights::too_many_msg(6000)}).to_string(),
            )
                .into_response(),
            418 => {
                let until = server_time + 1000 * self.retry_after_secs.unwrap_or(120) as i64;
                (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    json!({"code": -1003, "msg": weights::banned_msg(until)}).to_string(),
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

impl SimAccount {
    /// USD-M: push `listenKeyExpired`, invalidate the account's key (PUT → -1125); its streams
    /// stay open and deliver nothing more.
    pub fn expire_listen_key(&self) {
        let inner = self.inner();
        let now = inner.server_time();
        let n = inner.lock().expire_listen_key(self.index(), now);
        inner.count_sent(self.index(), n);
    }

    /// Spot: push `eventStreamTerminated` on every subscription of this account and stop
    /// delivering on it (the connections stay open and may subscribe again).
    pub fn terminate_subscription(&self) {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        if core.market != SimMarket::Spot {
            return;
        }
        let n = core.terminate_subscriptions(self.index(), now);
        inner.count_sent(self.index(), n);
    }

    /// Change the account without any event: a balance, one open order cancelled, and (USD-M)
    /// the BTCUSDT position amount.
    pub fn silent_change(&self) {
        let now = self.inner().server_time();
        self.inner().lock().accounts[self.index()]
            .model
            .silent_change(now);
    }

    /// Deliver an arbitrary text frame to every connection carrying this account.
    pub fn send_raw_text(&self, text: String) {
        self.send_raw(|| Out::Text(text.clone()));
    }

    /// Deliver an arbitrary binary frame to every connection carrying this account.
    pub fn send_raw_binary(&self, bytes: Vec<u8>) {
        self.send_raw(|| Out::Binary(bytes.clone()));
    }

    fn send_raw(&self, make: impl Fn() -> Out) {
        let core = self.inner().lock();
        for c in core
            .conns
            .values()
            .filter(|c| core.is_subscriber(self.index(), c))
        {
            let _ = c.tx.send(make());
        }
    }

    /// USD-M: the account's current listenKey (tests check that it never reaches a log line).
    pub fn listen_key(&self) -> Option<String> {
        self.inner().lock().accounts[self.index()]
            .listen_key
            .as_ref()
            .map(|k| k.key.clone())
    }

    /// `per_mille` of the account's trading actions from now on happen without any event:
    /// orders placed, filled or cancelled and balances moved that only REST shows (Binance
    /// does not promise that a connected stream carries every event).
    pub fn set_unannounced(&self, per_mille: u32) {
        self.inner().lock().accounts[self.index()].unannounced_per_mille = per_mille.min(1000);
    }

    /// How many of the account's trading actions went unannounced.
    pub fn unannounced(&self) -> u64 {
        self.inner().lock().accounts[self.index()].unannounced
    }

    /// Every event of the account is sent twice.
    pub fn set_duplicate_events(&self, on: bool) {
        self.inner().lock().accounts[self.index()].duplicate = on;
    }

    /// Adjacent events of the account are swapped pairwise. Turning it off flushes a held
    /// event.
    pub fn set_reorder_events(&self, on: bool) {
        let inner = self.inner();
        let a = self.index();
        let mut core = inner.lock();
        core.accounts[a].reorder = on;
        if !on && let Some(ev) = core.accounts[a].pending.take() {
            let n = core.deliver(a, &ev);
            inner.count_sent(a, n);
        }
    }
}

/// Account 0's faults, as before there were many accounts.
impl Sim {
    /// USD-M: account 0's `listenKeyExpired` ([`SimAccount::expire_listen_key`]).
    pub fn expire_listen_key(&self) {
        self.first().expire_listen_key()
    }

    /// Spot: account 0's `eventStreamTerminated` ([`SimAccount::terminate_subscription`]).
    pub fn terminate_subscription(&self) {
        self.first().terminate_subscription()
    }

    /// [`SimAccount::silent_change`] of account 0.
    pub fn silent_change(&self) {
        self.first().silent_change()
    }

    /// [`SimAccount::send_raw_text`] of account 0.
    pub fn send_raw_text(&self, text: String) {
        self.first().send_raw_text(text)
    }

    /// [`SimAccount::send_raw_binary`] of account 0.
    pub fn send_raw_binary(&self, bytes: Vec<u8>) {
        self.first().send_raw_binary(bytes)
    }

    /// [`SimAccount::listen_key`] of account 0.
    pub fn listen_key(&self) -> Option<String> {
        self.first().listen_key()
    }

    /// [`SimAccount::set_unannounced`] of account 0.
    pub fn set_unannounced(&self, per_mille: u32) {
        self.first().set_unannounced(per_mille)
    }

    /// [`SimAccount::unannounced`] of account 0.
    pub fn unannounced(&self) -> u64 {
        self.first().unannounced()
    }

    /// [`SimAccount::set_duplicate_events`] of account 0.
    pub fn set_duplicate_events(&self, on: bool) {
        self.first().set_duplicate_events(on)
    }

    /// [`SimAccount::set_reorder_events`] of account 0.
    pub fn set_reorder_events(&self, on: bool) {
        self.first().set_reorder_events(on)
    }

    /// Abruptly close every WebSocket connection (no close frame).
    pub fn drop_connections(&self) {
        self.inner().lock().take_all_conns(|| Out::Abort);
    }

    /// Abruptly close (no close frame) the one WebSocket connection that carries account
    /// `account`'s subscription (Spot) or live listenKey (USD-M), and with it every other
    /// account on it; other connections stay. The lowest-numbered one if several carry it.
    /// `false`: no connection carries the account.
    pub fn drop_connection_of(&self, account: usize) -> bool {
        let mut core = self.inner().lock();
        let Some(id) = core.conns_of(account).first().copied() else {
            return false;
        };
        if let Some(c) = core.conns.remove(&id) {
            let _ = c.tx.send(Out::Abort);
        }
        true
    }

    /// Spot: push `serverShutdown` (unwrapped) on every connection, close them ~1 s later.
    pub fn server_shutdown(&self) {
        let inner = self.inner();
        let now = inner.server_time();
        let mut core = inner.lock();
        if core.market != SimMarket::Spot {
            return;
        }
        // A connection-level event; its time comes from account 0's (strictly increasing) clock.
        let e = core.accounts[0].model.event_time(now);
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

    /// Every connection goes half-open: it stops sending (events, pings), stops answering the
    /// client's pings and never closes, until the client gives up on it.
    pub fn stall_connections(&self) {
        self.inner().lock().take_all_conns(|| Out::Stall);
    }

    /// While on, WebSocket upgrades are refused with HTTP 503 (open connections stay).
    pub fn set_refuse_connections(&self, on: bool) {
        self.inner().lock().refuse_ws = on;
    }

    /// The next `count` REST calls answer `status` (429/418: Binance's -1003 JSON; others: a
    /// plain body), with a `Retry-After` header when `retry_after_secs` is set. These are not
    /// counted by [`Sim::rate_limited_count`] (which counts the weight meter's refusals).
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
