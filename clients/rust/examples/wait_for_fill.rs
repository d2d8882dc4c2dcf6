//! Waits until an order is filled, as a trading engine would after placing it:
//!
//! ```sh
//! cargo run -p acctstate-client --example wait_for_fill -- BTCUSDT:12345 \
//!     [redis://127.0.0.1:6379] [acctstate] [main] [timeout_secs]
//! ```
//!
//! Prints each fill of the order as it arrives, then the order's final state; exits 0 when it
//! is FILLED, 1 when it ended otherwise (cancelled, expired, …) or the time ran out.

use std::time::{Duration, Instant};

use acctstate_client::{Entity, Mirror};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(order) = args.first().cloned() else {
        eprintln!(
            "usage: wait_for_fill SYMBOL:ORDERID [REDIS_URL] [PREFIX] [ACCOUNT] [TIMEOUT_SECS]"
        );
        std::process::exit(2);
    };
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let url = arg(1, "redis://127.0.0.1:6379");
    let prefix = arg(2, "acctstate");
    let account = arg(3, "main");
    let timeout = Duration::from_secs(arg(4, "300").parse().unwrap_or(300));

    let mut mirror = Mirror::connect(&url, &prefix, &account).await?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let changes = match mirror.poll(Duration::from_secs(1)).await {
            Ok(c) => c,
            Err(e) => {
                // Redis away: the mirror resumes where it stopped on the next poll.
                eprintln!("redis: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for change in changes {
            match &change.entity {
                Entity::Fill(f) if format!("{}:{}", f.symbol, f.order_id) == order => {
                    println!("fill {} qty {} at {}", f.trade_id, f.qty, f.price);
                }
                Entity::Order(o) if o.key() == order && o.is_final() => {
                    println!(
                        "order {order} {}: executed {} of {}",
                        o.status, o.executed_qty, o.orig_qty
                    );
                    std::process::exit(if o.status == "FILLED" { 0 } else { 1 });
                }
                _ => {}
            }
        }
    }
    eprintln!("order {order} not finished within {timeout:?}");
    std::process::exit(1);
}
