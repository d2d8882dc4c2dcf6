//! What an earlier run left in Postgres, read once at start (every read bounded by a timeout:
//! Postgres may be down, and the daemon starts anyway): the last seq, the orders left open, the
//! trade cursors, the last stream event, and the fills and finished orders recorded recently —
//! so the restart's recovery window, which overlaps what was already recorded, re-emits none
//! of them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::Row;

use crate::account::{Millis, Order};
use crate::binance::snapshot::{Cursor, TradeCursors};

/// How long each read may take before the daemon starts without it.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `Resume::read` found (empty parts where Postgres did not answer).
#[derive(Debug, Default)]
pub struct Resume {
    pub last_seq: Option<i64>,
    /// Orders an earlier run left open: the first snapshot closes those that ended since.
    pub open_orders: Vec<Order>,
    /// The highest trade id recorded per symbol, with its time.
    pub cursors: TradeCursors,
    /// The exchange time of the last stream event an earlier run recorded.
    pub last_event: Option<Millis>,
    /// `(symbol, trade_id)` of the fills recorded since `recorded_since`.
    pub recent_fills: Vec<(String, i64)>,
    /// `(symbol, order_id)` of the orders recorded as finished since `recorded_since`.
    pub recent_finished: Vec<(String, i64)>,
}

/// Runs a read within `READ_TIMEOUT`; `None` (with a warning naming `what`) otherwise.
async fn bounded<T>(
    what: &str,
    q: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Option<T> {
    match tokio::time::timeout(READ_TIMEOUT, q).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read {what} from Postgres");
            None
        }
        Err(_) => {
            tracing::warn!("Postgres did not answer for {what}");
            None
        }
    }
}

fn ms(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

impl Resume {
    /// Reads what an earlier run of `account_id` left. `recorded_since(last_event)` is where
    /// the restart's recovery window will begin: fills and finished orders from then on are
    /// read so that the cache knows them.
    pub async fn read(
        pool: &PgPool,
        account_id: &str,
        recorded_since: impl Fn(Option<Millis>) -> Millis,
    ) -> Resume {
        let Some(last_seq) = bounded(
            "the last seq",
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT max(seq) FROM account_changes WHERE account_id = $1",
            )
            .bind(account_id)
            .fetch_one(pool),
        )
        .await
        else {
            // Postgres is down: start from the clock and the exchange alone, at once, rather
            // than wait out a timeout per read.
            return Resume::default();
        };
        let open_orders = open_orders(pool, account_id).await;
        let cursors = bounded(
            "the trade cursors",
            sqlx::query_as::<_, (String, i64, DateTime<Utc>)>(
                "SELECT DISTINCT ON (symbol) symbol, trade_id, traded_at FROM fills
                 WHERE account_id = $1 ORDER BY symbol, trade_id DESC",
            )
            .bind(account_id)
            .fetch_all(pool),
        )
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(symbol, trade_id, at)| {
            (
                symbol,
                Cursor {
                    trade_id,
                    traded_at: ms(at),
                },
            )
        })
        .collect();
        let last_event = bounded(
            "the last stream event",
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT max(event_time) FROM account_changes
                 WHERE account_id = $1 AND source = 'stream' AND kind <> 'status'",
            )
            .bind(account_id)
            .fetch_one(pool),
        )
        .await
        .flatten()
        .map(ms);
        let since =
            DateTime::<Utc>::from_timestamp_millis(recorded_since(last_event)).unwrap_or_default();
        let recent_fills = bounded(
            "the recent fills",
            sqlx::query_as::<_, (String, i64)>(
                "SELECT symbol, trade_id FROM fills WHERE account_id = $1 AND traded_at >= $2",
            )
            .bind(account_id)
            .bind(since)
            .fetch_all(pool),
        )
        .await
        .unwrap_or_default();
        let recent_finished = bounded(
            "the recently finished orders",
            sqlx::query_as::<_, (String, i64)>(
                "SELECT symbol, order_id FROM orders WHERE account_id = $1 AND updated_at >= $2
                   AND status IN ('FILLED', 'CANCELED', 'EXPIRED', 'EXPIRED_IN_MATCH',
                                  'REJECTED', 'TRIGGERED', 'FINISHED')",
            )
            .bind(account_id)
            .bind(since)
            .fetch_all(pool),
        )
        .await
        .unwrap_or_default();
        Resume {
            last_seq,
            open_orders,
            cursors,
            last_event,
            recent_fills,
            recent_finished,
        }
    }
}

/// The orders Postgres holds as open for the account (empty, with a warning, if it does not
/// answer): what an earlier run left open.
async fn open_orders(pool: &PgPool, account_id: &str) -> Vec<Order> {
    let q = sqlx::query(
        "SELECT symbol, order_id, client_order_id, side, order_type, time_in_force, status,
                price, stop_price, orig_qty, executed_qty, cum_quote_qty, created_at, updated_at
         FROM orders WHERE account_id = $1
           AND status NOT IN ('FILLED', 'CANCELED', 'EXPIRED', 'EXPIRED_IN_MATCH', 'REJECTED')",
    )
    .bind(account_id)
    .fetch_all(pool);
    let Some(rows) = bounded("the open orders", q).await else {
        return Vec::new();
    };
    rows.into_iter()
        .filter_map(|r| {
            let status: String = r.get("status");
            Some(Order {
                symbol: r.get("symbol"),
                order_id: r.get("order_id"),
                client_order_id: r.get("client_order_id"),
                side: r.get("side"),
                order_type: r.get("order_type"),
                time_in_force: r.get("time_in_force"),
                status: serde_json::from_value(serde_json::Value::String(status)).ok()?,
                price: r.get("price"),
                stop_price: r.get("stop_price"),
                orig_qty: r.get("orig_qty"),
                executed_qty: r.get("executed_qty"),
                cum_quote_qty: r.get("cum_quote_qty"),
                created_at: ms(r.get("created_at")),
                updated_at: ms(r.get("updated_at")),
            })
        })
        .collect()
}
