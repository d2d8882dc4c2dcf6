//! Logs and metrics setup: JSON lines on stdout (top-level `message`) or pretty text, level from
//! `RUST_LOG` or `log.level`; one process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global subscriber; later calls (tests) are no-ops.
pub fn init_logging(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = if settings.format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    };
}

/// The process-wide Prometheus handle, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = match builder().install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (only possible in tests): keep a detached one.
                Err(_) => builder().build_recorder().handle(),
            };
            metrics::gauge!("acctstate_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            register_zeroes();
            handle
        })
        .clone()
}

/// Bucket bounds (seconds) of every histogram: Postgres writes, Redis publishes, event lag.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Histograms are exported as Prometheus histograms (buckets), not summaries: bucket counts can
/// be aggregated and turned into quantiles over any window with `histogram_quantile`.
fn builder() -> PrometheusBuilder {
    // `set_buckets` only refuses an empty list.
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Exports the process-wide counters operators alert on at 0 from the start: a series that only
/// appears on its first increment makes `rate()`/`increase()` miss that increment and
/// absent-series alerts fire on a healthy daemon. (Account-scoped counters are registered at 0,
/// with their `account` label, when the account starts.)
fn register_zeroes() {
    for name in [
        "acctstate_parse_errors_total",
        "acctstate_oversized_frames_total",
        "acctstate_unroutable_frames_total",
        "acctstate_pg_write_errors_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}
