//! Opening one user-data session, the way `run` and `check` both do: the WebSocket connect
//! with its frame limits; Spot: `userDataStream.subscribe.signature` signed with the account's
//! key, waiting for its answer; USD-M: a listenKey and production's URL form
//! `{ws_url}/private/ws?listenKey=<key>&events=…` (SPEC §1.2), the key redacted everywhere it
//! could be shown. The stream task (`stream`) owns what happens on the session afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::convert::{self, Frame};
use super::rest::{RestClient, RestError};
use super::sign;
use crate::account::Market;
use crate::config::Settings;

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Timings and limits of the stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub ws_url: String,
    pub max_frame_bytes: usize,
    pub ping_every: Duration,
    /// A ping of ours unanswered (by any frame) this long: the connection is dead.
    pub pong_timeout: Duration,
    pub idle_timeout: Duration,
    pub rotate_after: Duration,
    pub keepalive_every: Duration,
    pub reconcile_every: Option<Duration>,
    /// Cap of the exponential reconnect backoff.
    pub max_backoff: Duration,
    /// USD-M: the event types asked for (`binance.usdm_events`).
    pub usdm_events: Vec<String>,
}

impl StreamConfig {
    pub fn from_settings(s: &Settings) -> StreamConfig {
        let b = &s.binance;
        StreamConfig {
            ws_url: s.ws_url(),
            max_frame_bytes: b.max_frame_bytes,
            ping_every: Duration::from_secs(b.idle_timeout_secs.div_ceil(4).clamp(1, 15)),
            pong_timeout: Duration::from_secs(b.pong_timeout_secs),
            idle_timeout: Duration::from_secs(b.idle_timeout_secs),
            rotate_after: Duration::from_secs(b.rotate_after_secs),
            keepalive_every: Duration::from_secs(b.keepalive_secs),
            reconcile_every: (b.reconcile_interval_secs > 0)
                .then(|| Duration::from_secs(b.reconcile_interval_secs)),
            max_backoff: Duration::from_millis(b.reconnect_max_backoff_ms),
            usdm_events: b.usdm_events.clone(),
        }
    }
}

pub(super) struct Session {
    pub(super) ws: Ws,
    pub(super) listen_key: Option<String>,
    /// The URL opened, the listenKey redacted.
    pub(super) url: String,
}

/// Opening a session failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("{0}")]
    Other(String),
}

async fn connect(cfg: &StreamConfig, url: &str) -> Result<Ws, OpenError> {
    let config = WebSocketConfig::default()
        .max_frame_size(Some(cfg.max_frame_bytes))
        .max_message_size(Some(cfg.max_frame_bytes));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(OpenError::Other(format!("websocket connect: {e}"))),
        Err(_) => Err(OpenError::Other("websocket connect timed out".into())),
    }
}

/// Connects and subscribes.
pub(super) async fn open(rest: &RestClient, cfg: &StreamConfig) -> Result<Session, OpenError> {
    match rest.market() {
        Market::Spot => {
            let mut ws = connect(cfg, &cfg.ws_url).await?;
            subscribe(rest, &mut ws).await?;
            tracing::info!(
                event = "stream_connected",
                "stream: connected and subscribed (spot WebSocket API)"
            );
            Ok(Session {
                ws,
                listen_key: None,
                url: cfg.ws_url.clone(),
            })
        }
        Market::Usdm => {
            let body = rest
                .key_call(Method::POST, "/fapi/v1/listenKey", &[])
                .await?;
            let key = convert::listen_key(&body).map_err(|e| OpenError::Other(e.to_string()))?;
            let url = usdm_url(cfg, &key);
            let redacted = usdm_url(cfg, LISTEN_KEY_REDACTED);
            let ws = connect(cfg, &url)
                .await
                .map_err(|e| OpenError::Other(e.to_string().replace(&key, LISTEN_KEY_REDACTED)))?;
            tracing::info!(
                event = "stream_connected",
                url = %redacted,
                "stream: connected (usdm listenKey stream)"
            );
            Ok(Session {
                ws,
                listen_key: Some(key),
                url: redacted,
            })
        }
    }
}

/// What stands for the listenKey in logs, errors and `check`.
const LISTEN_KEY_REDACTED: &str = "<listenKey>";

/// `{ws_url}/private/ws?listenKey=<key>&events=<E1>/<E2>/…` (SPEC §1.2).
fn usdm_url(cfg: &StreamConfig, key: &str) -> String {
    format!(
        "{}/private/ws?listenKey={key}&events={}",
        cfg.ws_url,
        cfg.usdm_events.join("/")
    )
}

/// Spot: `userDataStream.subscribe.signature`, then wait for its answer.
pub(super) async fn subscribe(rest: &RestClient, ws: &mut Ws) -> Result<(), OpenError> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = format!("sub-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let mut params: Vec<(&str, String)> = vec![
        ("apiKey", rest.api_key().expose().to_owned()),
        ("recvWindow", rest.recv_window_ms().to_string()),
        ("timestamp", rest.server_now().to_string()),
    ];
    let signature = rest.signer().sign(&sign::ws_payload(&params));
    params.push(("signature", signature));
    let params: serde_json::Map<String, serde_json::Value> = params
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "timestamp" || k == "recvWindow" {
                v.parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::String(v))
            } else {
                serde_json::Value::String(v)
            };
            (k.to_owned(), v)
        })
        .collect();
    let request = serde_json::json!({"id": id, "method": "userDataStream.subscribe.signature", "params": params});
    ws.send(Message::text(request.to_string()))
        .await
        .map_err(|e| OpenError::Other(format!("send subscribe: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| OpenError::Other("no answer to the subscription request".into()))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                return Err(OpenError::Other("closed during subscription".into()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(OpenError::Other(format!("read: {e}"))),
        };
        if let Ok(Frame::Response {
            id: Some(rid),
            status,
            error,
            ..
        }) = convert::parse_spot_frame(&text)
            && rid == id
        {
            return match error {
                None if status == 200 => Ok(()),
                Some(e) if matches!(e.code, -2015 | -1022 | -2014 | -1002) => {
                    Err(RestError::Credentials(e).into())
                }
                Some(e) => {
                    if e.code == -1021 {
                        let _ = rest.sync_time().await;
                    }
                    Err(OpenError::Other(format!("subscription refused: {e}")))
                }
                None => Err(OpenError::Other(format!(
                    "subscription refused with status {status}"
                ))),
            };
        }
    }
}

/// Opens a user-data session the way `run` does and closes it again: `acctstate check`'s
/// stream probe. Returns the URL it opened (listenKey redacted). (USD-M: the listenKey is left
/// alive; it is shared with a running daemon.)
pub async fn probe(rest: &RestClient, cfg: &StreamConfig) -> Result<String, String> {
    let mut session = open(rest, cfg).await.map_err(|e| e.to_string())?;
    let _ = session.ws.close(None).await;
    Ok(session.url)
}
