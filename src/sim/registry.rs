//! The connection registry and event delivery: every live WebSocket connection (its writer
//! channel, the Spot user-data subscriptions or USD-M listenKeys it carries), every account's
//! mutable state (its model, listenKey and account-scoped faults), and which connection gets
//! which event of which account.
//!
//! What Binance does, and so what this does:
//! - Spot WS API: a connection carries any number of `userDataStream.subscribe.signature`
//!   subscriptions, at most one per account; each event of an account goes to every
//!   subscription of that account, wrapped `{"subscriptionId":<its id>,"event":{…}}`
//!   ([S-WSAPI] "User Data Stream requests", "Event format"; SPEC §1.1). Nothing of one account
//!   ever reaches another account's subscription.
//! - USD-M: a connection listens to the listenKeys named in its URL or `SUBSCRIBE`d; an event of
//!   an account goes to every connection listening to that account's live key (`usdm_stream`).
//!
//! Everything here sits behind one mutex (`Inner::lock`), never held across `.await`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::sync::mpsc;

use super::SimMarket;
use super::account::Model;
use super::faults::FailRest;
use super::payloads;
use super::usdm_stream::UsdmConn;

/// What a connection task is told to do.
#[derive(Debug)]
pub(crate) enum Out {
    Text(String),
    Binary(Vec<u8>),
    /// Drop the TCP connection without a close frame.
    Abort,
    /// Send a close frame after this delay, then end.
    CloseAfter(Duration),
    /// Half-open: stop reading and writing (no events, no pings, no pongs, no close) until
    /// aborted or the server stops.
    Stall,
}

pub(crate) struct Conn {
    pub tx: mpsc::UnboundedSender<Out>,
    /// Spot: the active user-data subscriptions on this connection, account -> subscription id.
    pub subs: BTreeMap<usize, u64>,
    /// Spot: next subscription id of this session (also how many were ever started).
    pub next_sub: u64,
    /// USD-M: the listenKeys and event types this connection listens to.
    pub usdm: UsdmConn,
}

pub(crate) struct ListenKey {
    pub key: String,
    pub expires_at: i64,
}

/// One account's mutable state.
pub(crate) struct Acct {
    pub model: Model,
    /// USD-M: the account's listenKey.
    pub listen_key: Option<ListenKey>,
    pub key_rng: StdRng,
    pub duplicate: bool,
    pub reorder: bool,
    pub pending: Option<Value>,
    /// Per mille of trading actions whose events are never delivered (their effect reaches REST
    /// only: Binance does not promise that a live stream carries every event).
    pub unannounced_per_mille: u32,
    /// How many actions went unannounced.
    pub unannounced: u64,
}

impl Acct {
    pub fn new(model: Model, seed: u64) -> Acct {
        Acct {
            model,
            listen_key: None,
            key_rng: StdRng::seed_from_u64(seed ^ 0x5eed_1157_e4ce_7a11),
            duplicate: false,
            reorder: false,
            pending: None,
            unannounced_per_mille: 0,
            unannounced: 0,
        }
    }

    /// The active listenKey if it has not expired.
    pub fn valid_key(&self, now: i64) -> Option<&str> {
        self.listen_key
            .as_ref()
            .filter(|k| k.expires_at > now)
            .map(|k| k.key.as_str())
    }
}

/// Everything mutable of a sim, behind one mutex.
pub(crate) struct Core {
    pub market: SimMarket,
    pub accounts: Vec<Acct>,
    pub conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    pub fail: Option<FailRest>,
    /// WebSocket upgrades are refused (HTTP 503) while set.
    pub refuse_ws: bool,
    /// The latest event time emitted, shared with `Inner::server_time` (see there).
    pub clock_floor: Arc<AtomicI64>,
}

impl Core {
    pub fn new(market: SimMarket, accounts: Vec<Acct>, clock_floor: Arc<AtomicI64>) -> Core {
        Core {
            market,
            accounts,
            conns: BTreeMap::new(),
            next_conn: 1,
            fail: None,
            refuse_ws: false,
            clock_floor,
        }
    }

    /// Does connection `c` carry a live subscription of account `a`?
    pub fn is_subscriber(&self, a: usize, c: &Conn) -> bool {
        match self.market {
            SimMarket::Spot => c.subs.contains_key(&a),
            SimMarket::Usdm => self
                .accounts
                .get(a)
                .and_then(|acct| acct.listen_key.as_ref())
                .is_some_and(|k| c.usdm.subs.iter().any(|s| s.key == k.key)),
        }
    }

    /// Connections carrying account `a`.
    pub fn subscriber_count(&self, a: usize) -> usize {
        self.conns
            .values()
            .filter(|c| self.is_subscriber(a, c))
            .count()
    }

    /// Connection ids carrying account `a`, lowest first.
    pub fn conns_of(&self, a: usize) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| self.is_subscriber(a, c))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Per connection: how many accounts it carries (Spot subscriptions, USD-M live keys).
    pub fn subscriptions_per_conn(&self) -> Vec<usize> {
        self.conns
            .values()
            .map(|c| match self.market {
                SimMarket::Spot => c.subs.len(),
                SimMarket::Usdm => (0..self.accounts.len())
                    .filter(|a| self.is_subscriber(*a, c))
                    .count(),
            })
            .collect()
    }

    /// Deliver one (unwrapped) event of account `a` to its subscribers; returns deliveries.
    pub fn deliver(&self, a: usize, ev: &Value) -> u64 {
        let key = self
            .accounts
            .get(a)
            .and_then(|acct| acct.listen_key.as_ref())
            .map(|k| k.key.as_str());
        self.deliver_for(a, ev, key)
    }

    /// Deliver one event of account `a`; USD-M: to the connections listening to `key` for
    /// its event type.
    fn deliver_for(&self, a: usize, ev: &Value, key: Option<&str>) -> u64 {
        let mut n = 0;
        let raw = production_layout(ev);
        let event_type = ev.get("e").and_then(Value::as_str).unwrap_or("");
        for c in self.conns.values() {
            let text = match (self.market, c.subs.get(&a), key) {
                // Binance's own wrapper layout, around the already serialized event (no clone
                // and second serialization of the event per connection).
                (SimMarket::Spot, Some(id), _) => {
                    format!(r#"{{"subscriptionId":{id},"event":{raw}}}"#)
                }
                (SimMarket::Usdm, _, Some(key)) => match c.usdm.frame(key, event_type, &raw) {
                    Some(t) => t,
                    None => continue,
                },
                _ => continue,
            };
            if c.tx.send(Out::Text(text)).is_ok() {
                n += 1;
            }
        }
        n
    }

    fn deliver_faulty(&self, a: usize, ev: &Value) -> u64 {
        let times = if self.accounts[a].duplicate { 2 } else { 1 };
        (0..times).map(|_| self.deliver(a, ev)).sum()
    }

    /// Deliver account `a`'s trading events, applying its duplicate / reorder faults.
    pub fn emit(&mut self, a: usize, events: Vec<Value>) -> u64 {
        self.clock_floor
            .fetch_max(self.accounts[a].model.last_event(), Ordering::Relaxed);
        let mut n = 0;
        for ev in events {
            if self.accounts[a].reorder {
                match self.accounts[a].pending.take() {
                    None => self.accounts[a].pending = Some(ev),
                    Some(prev) => {
                        n += self.deliver_faulty(a, &ev);
                        n += self.deliver_faulty(a, &prev);
                    }
                }
            } else {
                n += self.deliver_faulty(a, &ev);
            }
        }
        n
    }

    pub fn connections_opened(&self) -> u64 {
        self.next_conn - 1
    }

    pub fn register(&mut self, tx: mpsc::UnboundedSender<Out>, usdm: UsdmConn) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                tx,
                subs: BTreeMap::new(),
                next_sub: 0,
                usdm,
            },
        );
        id
    }

    /// Spot: push `eventStreamTerminated` on every subscription of account `a` and end them
    /// (the connections stay open); returns the deliveries.
    pub fn terminate_subscriptions(&mut self, a: usize, now: i64) -> u64 {
        let e = self.accounts[a].model.event_time(now);
        let n = self.deliver(a, &payloads::spot_event_stream_terminated(e));
        for c in self.conns.values_mut() {
            c.subs.remove(&a);
        }
        n
    }

    /// USD-M: push `listenKeyExpired` to the sockets that asked for it and forget account `a`'s
    /// key; the sockets stay open and deliver nothing more (as production); returns the
    /// deliveries.
    pub fn expire_listen_key(&mut self, a: usize, now: i64) -> u64 {
        let Some(lk) = self.accounts[a].listen_key.take() else {
            return 0;
        };
        let e = self.accounts[a].model.event_time(now);
        self.deliver_for(
            a,
            &payloads::usdm_listen_key_expired(e, &lk.key),
            Some(&lk.key),
        )
    }

    /// Expire account `a`'s listenKey if its 60 minutes have run out without a keepalive.
    pub fn expire_if_due(&mut self, a: usize, now: i64) -> u64 {
        if self.accounts[a]
            .listen_key
            .as_ref()
            .is_some_and(|k| k.expires_at <= now)
        {
            self.expire_listen_key(a, now)
        } else {
            0
        }
    }

    /// USD-M `DELETE /fapi/v1/listenKey`: close (with a close frame) the streams that listened
    /// to `key` and to no other live key; streams that also carry other accounts stay open
    /// and simply get nothing more for `key`.
    pub fn close_streams_of_key(&mut self, key: &str) {
        let live: Vec<String> = self
            .accounts
            .iter()
            .filter_map(|a| a.listen_key.as_ref().map(|k| k.key.clone()))
            .collect();
        let only_key = |c: &Conn| {
            c.usdm.subs.iter().any(|s| s.key == key)
                && !c
                    .usdm
                    .subs
                    .iter()
                    .any(|s| s.key != key && live.contains(&s.key))
        };
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| only_key(c))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(c) = self.conns.remove(&id) {
                let _ = c.tx.send(Out::CloseAfter(Duration::ZERO));
            }
        }
    }

    /// Forget every connection, telling each what to do (abort, stall, …).
    pub fn take_all_conns(&mut self, make: impl Fn() -> Out) {
        for (_, c) in std::mem::take(&mut self.conns) {
            let _ = c.tx.send(make());
        }
    }
}

/// An event's text as Binance lays it out: `"e"` first, then `"E"`, then the other fields
/// (serde_json's map sorts keys, which would put `"E"` and every capital before `"e"`). The
/// daemon reads `"e"` in first place without a second parse; a sim that sorted the keys would
/// send a layout production does not, and never exercise the one it does.
fn production_layout(ev: &Value) -> String {
    let Some(map) = ev.as_object() else {
        return ev.to_string();
    };
    let mut out = String::with_capacity(64 * map.len());
    out.push('{');
    let leading = ["e", "E"];
    let fields = leading
        .iter()
        .filter_map(|k| map.get_key_value(*k))
        .chain(map.iter().filter(|(k, _)| !leading.contains(&k.as_str())));
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(k.as_str()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// `"e"` then `"E"` lead, as production sends them; nothing is lost or changed.
    #[test]
    fn events_are_laid_out_as_production_sends_them() {
        let ev = json!({"s": "ETHBTC", "E": 1499405658658_i64, "C": "", "e": "executionReport", "q": "1.0"});
        let text = super::production_layout(&ev);
        assert!(
            text.starts_with(r#"{"e":"executionReport","E":1499405658658,"#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            ev
        );
    }
}
