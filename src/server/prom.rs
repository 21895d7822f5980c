//! Prometheus metrics at `GET /metrics`, in the text exposition format (version 0.0.4).
//!
//! Owns only the formatting: the values are the process-wide counters, gauges and latency
//! histograms of [`crate::metrics`], plus live figures read from the [`App`] (open
//! connections) and the hub (loaded streams, subscriptions). Hand-formatted: every metric is a
//! plain number, so no exporter crate is needed. Every name starts with `copanel_` and has its
//! `# HELP` and `# TYPE` lines.

use super::App;
use crate::metrics::{self, Counter, Gauge};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The metrics route.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/metrics", get(metrics_text))
}

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&app))
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, c: &Counter) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", c.get());
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn gauge_of(out: &mut String, name: &str, help: &str, g: &Gauge) {
    gauge(out, name, help, g.get());
}

/// Formats a bucket bound the way Prometheus clients do (`0.0005`, `1`, `+Inf`).
fn le(secs: f64) -> String {
    if secs.is_infinite() {
        "+Inf".to_owned()
    } else {
        format!("{secs}")
    }
}

/// The whole exposition.
fn render(app: &App) -> String {
    let mut out = String::with_capacity(4096);
    let (streams, subscriptions) = app.hub.counts();
    gauge(
        &mut out,
        "copanel_connections",
        "Open WebSocket connections.",
        app.live.load(Ordering::Relaxed) as u64,
    );
    gauge(
        &mut out,
        "copanel_subscriptions",
        "Live subscriptions registered in the hub (catching-up ones are not counted).",
        subscriptions as u64,
    );
    gauge(
        &mut out,
        "copanel_loaded_streams",
        "Streams whose committed state is held in memory.",
        streams as u64,
    );
    counter(
        &mut out,
        "copanel_connections_opened_total",
        "WebSocket connections accepted since start.",
        &metrics::CONNECTIONS_OPENED,
    );
    counter(
        &mut out,
        "copanel_connections_closed_total",
        "WebSocket connections ended since start.",
        &metrics::CONNECTIONS_CLOSED,
    );
    counter(
        &mut out,
        "copanel_events_appended_total",
        "Events appended to the log.",
        &metrics::EVENTS_APPENDED,
    );
    counter(
        &mut out,
        "copanel_commands_acked_total",
        "Commands acknowledged.",
        &metrics::COMMANDS_ACKED,
    );
    counter(
        &mut out,
        "copanel_commands_refused_total",
        "Commands refused, by the edge (rate limit, bad command_id) or the writer.",
        &metrics::COMMANDS_REFUSED,
    );
    counter(
        &mut out,
        "copanel_batches_total",
        "Write batches committed (one flush each).",
        &metrics::BATCHES,
    );
    counter(
        &mut out,
        "copanel_store_failures_total",
        "Appends and flushes of the writer that failed (full disk, I/O error).",
        &metrics::STORE_FAILURES,
    );
    counter(
        &mut out,
        "copanel_slow_consumer_fallbacks_total",
        "Subscriptions that overflowed their connection's queue and fell back to the log.",
        &metrics::SLOW_CONSUMER_FALLBACKS,
    );
    gauge_of(
        &mut out,
        "copanel_fanout_queue_depth",
        "Deepest connection queue (events not yet written to the socket) at the latest publish.",
        &metrics::FANOUT_QUEUE_DEPTH,
    );
    gauge_of(
        &mut out,
        "copanel_fanout_queue_depth_peak",
        "Deepest connection queue seen by any publish since start.",
        &metrics::FANOUT_QUEUE_DEPTH_PEAK,
    );
    gauge(
        &mut out,
        "copanel_fanout_queue_capacity",
        "Capacity of each connection's queue; reaching it sends the subscription to the log.",
        app.edge.outbound_queue as u64,
    );
    for (name, help, h) in [
        (
            "copanel_ack_latency_seconds",
            "WebSocket commands: from the connection taking a command for the writer to its task taking the ack.",
            &metrics::ACK_LATENCY,
        ),
        (
            "copanel_writer_ack_seconds",
            "Every acked command: from entering the writer's queue to the writer's ack (queue wait, append; with sync durability also flush and publish).",
            &metrics::WRITER_ACK,
        ),
        (
            "copanel_writer_append_seconds",
            "Per writer batch: deciding its commands and appending them to the store.",
            &metrics::WRITER_APPEND,
        ),
        (
            "copanel_writer_flush_seconds",
            "Per writer batch: the flush that makes its append durable.",
            &metrics::WRITER_FLUSH,
        ),
        (
            "copanel_writer_publish_seconds",
            "Per writer batch: publishing its events to subscribers and acking its commands.",
            &metrics::WRITER_PUBLISH,
        ),
    ] {
        histogram(&mut out, name, help, h);
    }
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &metrics::Histogram) {
    header(out, name, "histogram", help);
    let h = h.snapshot();
    for (bound_ms, n) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", le(bound_ms / 1000.0));
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum_secs);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::le;

    #[test]
    fn bounds_format_like_prometheus() {
        assert_eq!(le(0.0005), "0.0005");
        assert_eq!(le(1.0), "1");
        assert_eq!(le(f64::INFINITY), "+Inf");
    }
}
