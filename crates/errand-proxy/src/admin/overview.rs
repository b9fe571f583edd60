//! The process's metrics: Prometheus text, and the same numbers read back (by
//! [`errand::metrics::names`]) into the JSON the dashboard polls.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use errand::metrics::names;
use errand::pattern::Timestamp;
use serde_json::{Value, json};

use super::Admin;
use super::api::store_error;

pub(super) async fn metrics_text(State(admin): State<Admin>) -> Response {
    // Gauges come from the store at scrape time; counters are already in the recorder.
    if let Ok(stats) = admin.store.stats().await {
        errand::metrics::record_stats(&stats);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

/// `GET /api/overview`: the process's counters (the numbers `/metrics` shows, read back from
/// the same recorder) and the shared store's figures, in one JSON document: what the
/// dashboard polls.
pub(super) async fn overview(State(admin): State<Admin>) -> Response {
    let store = match admin.store.stats().await {
        Ok(stats) => stats,
        Err(e) => return store_error(&e),
    };
    let text = admin.metrics.render();
    let scrape = match prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) {
        Ok(scrape) => scrape,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": format!("cannot read the metrics back: {e}")})),
            )
                .into_response();
        }
    };
    axum::Json(overview_json(&scrape, &store, admin.store.now())).into_response()
}

/// Whether `metric` is the `_count` or `_sum` series of the job-duration histogram.
fn duration_part(metric: &str) -> bool {
    metric
        .strip_prefix(names::JOB_DURATION)
        .is_some_and(|rest| rest == "_count" || rest == "_sum")
}

fn overview_json(
    scrape: &prometheus_parse::Scrape,
    store: &errand::store::Stats,
    now: Timestamp,
) -> Value {
    use prometheus_parse::Value as V;
    let number = |v: &V| match v {
        V::Counter(n) | V::Gauge(n) | V::Untyped(n) => *n,
        _ => 0.0,
    };
    let mut requests = serde_json::Map::new();
    for phase in errand::pattern::Phase::ALL {
        requests.insert(phase.as_str().to_owned(), json!(0));
    }
    let mut waits = json!({"ready": 0, "timeout": 0});
    let mut jobs = json!({
        "claimed": 0, "deduplicated": 0, "retried": 0, "redelivered": 0, "lease_lost": 0,
    });
    for outcome in errand::pattern::JobOutcome::ENDED {
        jobs[outcome.as_str()] = json!(0);
    }
    let mut evictions = 0;
    let mut durations = serde_json::Map::new();
    for sample in &scrape.samples {
        let label = |name: &str| sample.labels.get(name).unwrap_or("").to_owned();
        let value = number(&sample.value);
        // Counters are whole numbers (exposed as floats by the text format).
        let n = value.max(0.0).round() as u64;
        match sample.metric.as_str() {
            names::REQUESTS => {
                requests.insert(label("outcome"), json!(n));
            }
            names::WAITS => waits[label("outcome")] = json!(n),
            names::JOBS_COMPLETED => jobs[label("outcome")] = json!(n),
            names::JOBS_CLAIMED => jobs["claimed"] = json!(n),
            names::JOBS_DEDUPLICATED => jobs["deduplicated"] = json!(n),
            names::JOBS_RETRIED => jobs["retried"] = json!(n),
            names::JOBS_REDELIVERED => jobs["redelivered"] = json!(n),
            names::JOBS_LEASE_LOST => jobs["lease_lost"] = json!(n),
            names::EVICTIONS => evictions = n,
            names::JOB_DURATION => {
                if let V::Histogram(buckets) = &sample.value {
                    let route = durations.entry(label("route")).or_insert_with(|| json!({}));
                    route["buckets"] = buckets
                        .iter()
                        .map(|b| json!([b.less_than, b.count.max(0.0).round() as u64]))
                        .collect();
                }
            }
            count_or_sum if duration_part(count_or_sum) => {
                let route = durations.entry(label("route")).or_insert_with(|| json!({}));
                if count_or_sum.ends_with("_sum") {
                    route["sum"] = json!(value);
                } else {
                    route["count"] = json!(n);
                }
            }
            _ => {}
        }
    }
    json!({
        "now_ms": now.0,
        "requests": requests,
        "waits": waits,
        "jobs": jobs,
        "evictions": evictions,
        "durations": durations,
        "store": store,
    })
}

pub(super) async fn stats(State(admin): State<Admin>) -> Response {
    match admin.store.stats().await {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => store_error(&e),
    }
}
