//! The Spot WebSocket API connections of one endpoint, shared by its accounts: a subscription
//! goes on the first connection that still has room (`binance.max_subscriptions_per_connection`,
//! below Binance's 1,000 per session), else on a new connection. The pool owns the list; each
//! connection's task (`conn`) owns its socket. Dropping a `Subscription` ends it (on Binance's
//! side too, unless the connection is gone).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::conn::{self, Conn, Inbox};
use super::connect::{OpenError, StreamConfig, connect};
use super::rest::RestClient;
use super::weight;

/// The shared Spot connections of one `ws_url`.
pub struct SpotPool {
    cfg: StreamConfig,
    max_per_conn: usize,
    conns: tokio::sync::Mutex<Vec<Conn>>,
    cancel: CancellationToken,
}

/// One account's subscription on a shared connection.
pub struct Subscription {
    pub conn: Conn,
    pub id: u64,
    /// Set when the connection is known gone (nothing to tell the server).
    pub gone: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.conn.unsubscribe(self.id, !self.gone);
    }
}

impl SpotPool {
    pub fn new(cfg: StreamConfig, max_per_conn: usize) -> SpotPool {
        SpotPool {
            cfg,
            max_per_conn: max_per_conn.max(1),
            conns: tokio::sync::Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
        }
    }

    /// Subscribes `rest`'s account; its frames go to `inbox`.
    pub async fn subscribe(
        &self,
        rest: &Arc<RestClient>,
        inbox: Inbox,
    ) -> Result<Subscription, OpenError> {
        let conn = {
            let mut conns = self.conns.lock().await;
            conns.retain(Conn::accepting);
            let conn = match conns.iter().find(|c| c.load() < self.max_per_conn) {
                Some(c) => c.clone(),
                None => {
                    rest.budget()
                        .spend(weight::WS_CONNECT_WEIGHT, || rest.server_now())
                        .await;
                    let ws = connect(&self.cfg, &self.cfg.ws_url).await?;
                    let c = conn::spawn_spot(ws, self.cfg.clone(), self.cancel.child_token());
                    tracing::info!(
                        event = "stream_connected",
                        conn = c.id,
                        connections = conns.len() + 1,
                        "stream: new spot WebSocket API connection"
                    );
                    conns.push(c.clone());
                    c
                }
            };
            // Under the lock: the next subscriber sees this place taken.
            conn.reserve();
            conn
        };
        // Spent here, not in the connection's task, which must never stop reading its socket.
        rest.budget()
            .spend(weight::WS_SUBSCRIBE_WEIGHT, || rest.server_now())
            .await;
        let id = conn.subscribe(rest.clone(), inbox).await?;
        Ok(Subscription {
            conn,
            id,
            gone: false,
        })
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.cancel.cancel();
    }
}

impl Drop for SpotPool {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
