//! Opening user-data connections, the way `run` and `check` both do: the WebSocket connect
//! with its frame limits; Spot: the `userDataStream.subscribe.signature` request signed with
//! the account's key and the reading of its answer (the connection task, `conn`, sends and
//! reads them); USD-M: a listenKey and production's URL form
//! `{ws_url}/private/ws?listenKey=<key>&events=…` (SPEC §1.2), the key redacted everywhere it
//! could be shown.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::convert::{self, ApiError};
use super::rest::{RestClient, RestError};
use super::sign;
use crate::account::Market;
use crate::config::Settings;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
    /// The timings of `s`, on the top-level account's endpoint.
    pub fn from_settings(s: &Settings) -> StreamConfig {
        StreamConfig::for_url(s, s.ws_url())
    }

    /// The timings of `s`, on `ws_url`.
    pub fn for_url(s: &Settings, ws_url: String) -> StreamConfig {
        let b = &s.binance;
        StreamConfig {
            ws_url,
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

/// Opening a session failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("{0}")]
    Other(String),
}

/// Bytes one socket read asks for. tungstenite zero-fills this much of its buffer before every
/// read attempt (those that find nothing included): at its 128 KiB default that memset was 28%
/// of the daemon's instructions at 20 events/s (BENCHMARKS.md) and swept the caches each time.
/// User-data frames are ~0.3–2 KiB: 8 KiB still takes several per read in a burst.
const READ_BUFFER: usize = 8 * 1024;

/// Opens a WebSocket with the configured frame limits (10 s to connect).
pub(super) async fn connect(cfg: &StreamConfig, url: &str) -> Result<Ws, OpenError> {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(Some(cfg.max_frame_bytes))
        .max_message_size(Some(cfg.max_frame_bytes));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(OpenError::Other(format!("websocket connect: {e}"))),
        Err(_) => Err(OpenError::Other("websocket connect timed out".into())),
    }
}

/// USD-M: a listenKey (the same one while it lives) and a connection carrying it.
/// Returns the socket and the key; the key never reaches a log line or an error.
pub(super) async fn open_usdm(
    rest: &RestClient,
    cfg: &StreamConfig,
) -> Result<(Ws, String), OpenError> {
    let body = rest
        .key_call(Method::POST, "/fapi/v1/listenKey", &[])
        .await?;
    let key = convert::listen_key(&body).map_err(|e| OpenError::Other(e.to_string()))?;
    let url = usdm_url(cfg, &key);
    let ws = connect(cfg, &url)
        .await
        .map_err(|e| OpenError::Other(e.to_string().replace(&key, LISTEN_KEY_REDACTED)))?;
    tracing::info!(
        event = "stream_connected",
        url = %usdm_url(cfg, LISTEN_KEY_REDACTED),
        "stream: connected (usdm listenKey stream)"
    );
    Ok((ws, key))
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

/// Spot: the `userDataStream.subscribe.signature` request of `rest`'s account, as sent.
pub(super) fn subscribe_request(rest: &RestClient, id: &str) -> String {
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
    serde_json::json!({"id": id, "method": "userDataStream.subscribe.signature", "params": params})
        .to_string()
}

/// Spot: the answer to a subscription request → its `subscriptionId`, or why not. A clock
/// error (-1021) resyncs the offset in the background for the next attempt.
pub(super) fn subscribe_outcome(
    status: u16,
    result: Option<&serde_json::Value>,
    error: Option<ApiError>,
    rest: &Arc<RestClient>,
) -> Result<u64, OpenError> {
    match error {
        None if status == 200 => result
            .and_then(|r| r.get("subscriptionId"))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| OpenError::Other("subscription answer without a subscriptionId".into())),
        Some(e) if matches!(e.code, -2015 | -1022 | -2014 | -1002) => {
            Err(RestError::Credentials(e).into())
        }
        Some(e) => {
            if e.code == -1021 {
                let rest = rest.clone();
                tokio::spawn(async move {
                    let _ = rest.sync_time().await;
                });
            }
            Err(OpenError::Other(format!("subscription refused: {e}")))
        }
        None => Err(OpenError::Other(format!(
            "subscription refused with status {status}"
        ))),
    }
}

/// Opens a user-data session the way `run` does and closes it again: `acctstate check`'s
/// stream probe. Returns the URL it opened (listenKey redacted). (USD-M: the listenKey is left
/// alive; it is shared with a running daemon.)
pub async fn probe(rest: Arc<RestClient>, cfg: &StreamConfig) -> Result<String, String> {
    match rest.market() {
        Market::Spot => {
            let pool = super::pool::SpotPool::new(cfg.clone(), 1);
            let (tx, _rx) = super::inbox::inbox();
            let sub = pool.subscribe(&rest, tx).await.map_err(|e| e.to_string())?;
            drop(sub);
            pool.close();
            Ok(cfg.ws_url.clone())
        }
        Market::Usdm => {
            let (mut ws, _key) = open_usdm(&rest, cfg).await.map_err(|e| e.to_string())?;
            let _ = ws.close(None).await;
            Ok(usdm_url(cfg, LISTEN_KEY_REDACTED))
        }
    }
}
