//! The USD-M user-data stream as production serves it (SPEC §1.2), apart from the connection
//! registry: which URL forms deliver, which listenKeys and event types a connection asked for,
//! the stream-mode envelope, and the `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS`
//! requests of stream mode.
//!
//! What production does, and so what this does:
//! - `/private/ws?listenKey=K&events=E1/E2` delivers the listed event types of K, raw;
//! - `/private/stream?listenKey=K1&events=…&listenKey=K2&events=…`, `/private/stream?streams=K1/K2`
//!   and `/private/stream` + `SUBSCRIBE` deliver wrapped as `{"stream":K,"data":{…}}`;
//! - `events` is an allow list (unknown names are accepted and match nothing). In ws mode a key
//!   without `events` gets `listenKeyExpired` only: unicorn-binance-websocket-api PR #446
//!   measured "without `&events=…` production delivers no payloads", another measurement saw
//!   `listenKeyExpired` arrive without it. Stream mode with a bare key (`streams=K`, `SUBSCRIBE
//!   ["K"]`, as Binance's own JS and Python SDKs use it) gets every event type;
//! - `/private/ws/<K>` and the legacy `/ws/<K>` accept the handshake and deliver nothing, ever
//!   (measured in production: the daemon must not rely on them);
//! - an unknown or expired key is accepted and delivers nothing; `listenKeyExpired` goes to the
//!   sockets that asked for it, and the socket stays open (Binance: expiry "is not related to
//!   socket disconnection");
//! - `SUBSCRIBE`/`UNSUBSCRIBE` answer `{"result":null,"id":N}` whatever they name (an ack proves
//!   nothing, as in production); `LIST_SUBSCRIPTIONS` lists `<key>@<EVENT>` (sorted) for a key
//!   with an allow list and `<key>` for a bare one; a bad request gets
//!   `{"error":{"code":2,"msg":…},"id":N}`, malformed JSON code 3 with a null id.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// One listenKey a connection listens to, with the event types it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySub {
    pub key: String,
    /// `None`: every event type.
    pub events: Option<BTreeSet<String>>,
}

impl KeySub {
    fn allows(&self, event_type: &str) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(event_type))
    }
}

/// How a USD-M connection was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UsdmConn {
    pub subs: Vec<KeySub>,
    /// Stream mode: events wrapped as `{"stream":key,"data":event}`; `SUBSCRIBE` is served.
    pub wrapped: bool,
}

fn events_of(v: &str) -> BTreeSet<String> {
    v.split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl UsdmConn {
    /// The subscriptions a `/private/ws` or `/private/stream` URL's query asks for: each
    /// `listenKey` takes the `events` that follow it; `streams` lists keys with every event.
    pub fn from_query(query: &str, wrapped: bool) -> UsdmConn {
        let mut subs: Vec<KeySub> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "listenKey" => subs.push(KeySub {
                    key: v.into_owned(),
                    events: None,
                }),
                "events" => {
                    if let Some(last) = subs.last_mut() {
                        last.events = Some(events_of(&v));
                    }
                }
                "streams" if wrapped => subs.extend(
                    events_of(&v)
                        .into_iter()
                        .map(|key| KeySub { key, events: None }),
                ),
                _ => {}
            }
        }
        if !wrapped {
            for s in subs.iter_mut().filter(|s| s.events.is_none()) {
                s.events = Some(BTreeSet::from(["listenKeyExpired".to_owned()]));
            }
        }
        UsdmConn { subs, wrapped }
    }

    /// The frame this connection gets for an event of `key` (already serialized as `raw`), if
    /// it asked for it.
    pub fn frame(&self, key: &str, event_type: &str, raw: &str) -> Option<String> {
        if !self
            .subs
            .iter()
            .any(|s| s.key == key && s.allows(event_type))
        {
            return None;
        }
        Some(if self.wrapped {
            let stream = serde_json::to_string(key).unwrap_or_default();
            format!(r#"{{"stream":{stream},"data":{raw}}}"#)
        } else {
            raw.to_owned()
        })
    }

    /// Answers a request (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`) as Binance's
    /// stream endpoints do (both modes take them).
    pub fn request(&mut self, text: &str) -> String {
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            return error(&Value::Null, 3, "Invalid JSON: malformed request");
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        if !(id.is_u64() || id.is_string() || id.is_null()) {
            return error(
                &id,
                2,
                "Invalid request: request ID must be an unsigned integer",
            );
        }
        let method = req.get("method").and_then(Value::as_str).unwrap_or("");
        let params: Vec<String> = match req.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => {
                return error(
                    &id,
                    2,
                    "Invalid request: params must be an array of strings",
                );
            }
        };
        match method {
            "SUBSCRIBE" => {
                for p in params {
                    let sub = parse_item(&p);
                    match self.subs.iter_mut().find(|s| s.key == sub.key) {
                        Some(s) => *s = sub,
                        None => self.subs.push(sub),
                    }
                }
                json!({"result": null, "id": id}).to_string()
            }
            "UNSUBSCRIBE" => {
                let gone: BTreeSet<String> = params.iter().map(|p| parse_item(p).key).collect();
                self.subs.retain(|s| !gone.contains(&s.key));
                json!({"result": null, "id": id}).to_string()
            }
            "LIST_SUBSCRIPTIONS" => {
                let names: Vec<String> = self
                    .subs
                    .iter()
                    .flat_map(|s| match &s.events {
                        Some(events) => events.iter().map(|e| format!("{}@{e}", s.key)).collect(),
                        None => vec![s.key.clone()],
                    })
                    .collect();
                json!({"result": names, "id": id}).to_string()
            }
            _ => error(&id, 2, "Invalid request: unknown method"),
        }
    }
}

/// A `SUBSCRIBE` item: `<listenKey>` (every event) or `<listenKey>@<E1>/<E2>`.
fn parse_item(p: &str) -> KeySub {
    match p.split_once('@') {
        Some((key, events)) => KeySub {
            key: key.to_owned(),
            events: Some(events_of(events)),
        },
        None => KeySub {
            key: p.to_owned(),
            events: None,
        },
    }
}

fn error(id: &Value, code: i64, msg: &str) -> String {
    json!({"error": {"code": code, "msg": msg}, "id": id}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_forms() {
        let c = UsdmConn::from_query(
            "listenKey=K&events=ORDER_TRADE_UPDATE/ACCOUNT_UPDATE",
            false,
        );
        assert_eq!(
            c.frame("K", "ORDER_TRADE_UPDATE", "{}").as_deref(),
            Some("{}")
        );
        assert_eq!(c.frame("K", "listenKeyExpired", "{}"), None);
        assert_eq!(c.frame("X", "ORDER_TRADE_UPDATE", "{}"), None);
        let c = UsdmConn::from_query(
            "listenKey=A&events=ACCOUNT_UPDATE&listenKey=B&events=ORDER_TRADE_UPDATE",
            true,
        );
        assert_eq!(
            c.frame("A", "ACCOUNT_UPDATE", "{}").as_deref(),
            Some(r#"{"stream":"A","data":{}}"#)
        );
        assert_eq!(c.frame("A", "ORDER_TRADE_UPDATE", "{}"), None);
        assert!(c.frame("B", "ORDER_TRADE_UPDATE", "{}").is_some());
        let bare = UsdmConn::from_query("listenKey=K", false);
        assert_eq!(bare.frame("K", "ORDER_TRADE_UPDATE", "{}"), None);
        assert!(bare.frame("K", "listenKeyExpired", "{}").is_some());
        let c = UsdmConn::from_query("streams=A/B", true);
        assert!(c.frame("B", "ALGO_UPDATE", "{}").is_some());
        assert!(UsdmConn::from_query("streams=A", false).subs.is_empty());
        assert!(UsdmConn::from_query("", true).subs.is_empty());
    }

    #[test]
    fn subscribe_unsubscribe_list() {
        let mut c = UsdmConn {
            wrapped: true,
            ..UsdmConn::default()
        };
        let v = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(
            v(c.request(r#"{"method":"SUBSCRIBE","params":["K"],"id":1}"#)),
            json!({"result": null, "id": 1})
        );
        assert!(c.frame("K", "ACCOUNT_UPDATE", "{}").is_some());
        assert_eq!(
            v(c.request(r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#)),
            json!({"result": ["K"], "id": 2})
        );
        c.request(r#"{"method":"SUBSCRIBE","params":["L@B_EV/A_EV"],"id":3}"#);
        assert_eq!(
            v(c.request(r#"{"method":"LIST_SUBSCRIPTIONS","id":"x"}"#)),
            json!({"result": ["K", "L@A_EV", "L@B_EV"], "id": "x"})
        );
        c.request(r#"{"method":"UNSUBSCRIBE","params":["K", "L"],"id":3}"#);
        assert!(c.subs.is_empty());
        let bad = c.request(r#"{"method":"SUBSCRIBE","params":"K","id":4}"#);
        assert!(bad.contains(r#""code":2"#), "{bad}");
        assert!(c.request("not json").contains(r#""code":3"#));
    }
}
