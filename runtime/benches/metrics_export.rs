//! What the built-in request metrics cost per request, and the metrics outputs per exported
//! point: `cargo bench -p swarmtel --bench metrics_export`.
//!
//! - `request_metrics/record`: one request into the aggregator (5 endpoints, 1% failures),
//!   Locust's rounding included.
//! - `export/*`: 200 endpoints x (200, 500) of one run, plus the runtime's counters: the
//!   snapshot (rebuilt after a change), the Prometheus text of a scrape, and the OTLP metrics
//!   request (protobuf, then gzip). Throughput is per exported point: an OTLP data point, or
//!   a sample line of the exposition.
//! - `plugin_metrics/*`: what the host does with a plugin's metric points (contract 0.2.0):
//!   checking and merging one call's 100 counter points (each with 3 attributes, 20 series)
//!   or 100 response-time points (5 buckets each), and rebuilding the snapshot of 1,000
//!   series.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use swarmtel::bindings::types as wit;
use swarmtel::config::Limits;
use swarmtel::pipeline::Summary;
use swarmtel::pipeline::enrich::RunContext;
use swarmtel::pipeline::plugin_metrics::PluginMetrics;
use swarmtel::pipeline::request_metrics::{RequestMetrics, RequestMetricsConfig};
use swarmtel::sinks::otlp::encode::metrics_request;
use swarmtel::sinks::prometheus::exposition::{Snapshot, encode};
use swarmtel::sources::ingest::RequestRecord;

const ENDPOINTS: [(&str, &str); 5] = [
    ("GET", "/"),
    ("GET", "/items"),
    ("GET", "/items/[id]"),
    ("POST", "/orders"),
    ("GET", "/flaky"),
];

fn request(index: usize, name: &str) -> RequestRecord<'_> {
    let failed = index % 100 == 99;
    RequestRecord {
        request_type: Cow::Borrowed(if index % 5 == 3 { "POST" } else { "GET" }),
        name: Cow::Borrowed(name),
        response_time_ms: 1.0 + (index * 37 % 997) as f64 / 10.0,
        response_length: 154,
        start_time: 1.0,
        status_code: if failed { 500 } else { 200 },
        exception: failed.then_some(Cow::Borrowed("HTTPError('500')")),
        exception_type: failed.then_some(Cow::Borrowed("HTTPError")),
        url: None,
        context: None,
    }
}

fn run() -> Vec<RunContext> {
    vec![RunContext {
        run_id: "bench".into(),
        testplan: "bench".into(),
    }]
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_metrics");
    let requests: Vec<RequestRecord<'_>> = (0..1024)
        .map(|i| request(i, ENDPOINTS[i % ENDPOINTS.len()].1))
        .collect();
    group.throughput(Throughput::Elements(requests.len() as u64));
    let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
    group.bench_function("record", |b| {
        b.iter(|| {
            for (i, request) in requests.iter().enumerate() {
                metrics.record_request(0, (i % ENDPOINTS.len()) as u32, request, 1.0);
            }
        })
    });
    group.finish();

    // 200 endpoints, each with a 200 and a 500 series.
    let names: Vec<String> = (0..200).map(|i| format!("/endpoint/{i}")).collect();
    let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
    for round in 0..20 {
        for (id, name) in names.iter().enumerate() {
            metrics.record_request(0, id as u32, &request(round * 200 + id, name), 1.0);
        }
    }
    let runs = run();
    let snapshot = metrics.snapshot(&runs);
    let runtime = Summary::default().metrics(0);
    let points: usize = snapshot[0]
        .metrics
        .iter()
        .chain(&runtime)
        .map(|metric| metric.points.len())
        .sum();
    let prometheus = Arc::new(Snapshot {
        runtime: runtime.clone(),
        runs: snapshot.clone(),
    });
    let samples = encode(&prometheus)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .count();

    let mut group = c.benchmark_group("export");
    group.throughput(Throughput::Elements(points as u64));
    group.bench_function("snapshot", |b| {
        b.iter_batched(
            || {
                let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
                for (id, name) in names.iter().enumerate() {
                    metrics.record_request(0, id as u32, &request(id, name), 1.0);
                    metrics.record_request(0, id as u32, &request(id * 100 + 99, name), 1.0);
                }
                metrics
            },
            |mut metrics| metrics.snapshot(&runs),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("otlp_protobuf_gzip", |b| {
        b.iter(|| {
            let request = metrics_request(&runtime, 1.0, 2.0, &snapshot);
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            gzip.write_all(&request.encode_to_vec()).unwrap();
            gzip.finish().unwrap()
        })
    });
    group.throughput(Throughput::Elements(samples as u64));
    group.bench_function("prometheus_text", |b| {
        b.iter(|| encode(&prometheus).unwrap())
    });
    group.finish();
    eprintln!("export: {points} OTLP data points, {samples} Prometheus samples per export");
}

fn counter_point(index: usize) -> wit::MetricPoint {
    let attribute = |key: &str, value: wit::AttributeValue| wit::Attribute {
        key: key.into(),
        value,
    };
    wit::MetricPoint {
        name: "checkout.orders".into(),
        unit: "{order}".into(),
        description: "Orders placed".into(),
        attributes: vec![
            attribute(
                "endpoint",
                wit::AttributeValue::Text(ENDPOINTS[index % 5].1.into()),
            ),
            attribute(
                "status",
                wit::AttributeValue::Integer(200 + (index % 4) as i64),
            ),
            attribute("failed", wit::AttributeValue::Boolean(false)),
        ],
        value: wit::MetricValue::Counter(1),
    }
}

fn plugin_metrics(c: &mut Criterion) {
    let limits = Limits::default();
    let runs = run();
    let mut group = c.benchmark_group("plugin_metrics");
    group.throughput(Throughput::Elements(100));
    let counters: Vec<wit::MetricPoint> = (0..100).map(counter_point).collect();
    let mut metrics = PluginMetrics::new();
    group.bench_function("record_counters", |b| {
        b.iter_batched(
            || counters.clone(),
            |points| metrics.record(0, 0, 1.0, points, &limits),
            BatchSize::SmallInput,
        )
    });
    let times: Vec<wit::MetricPoint> = (0..100)
        .map(|index| wit::MetricPoint {
            name: "checkout.duration".into(),
            value: wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                buckets: vec![(3, 10), (12, 4), (140, 2), (1_200, 1), (12_000, 1)],
                sum_ms: 13_500.0,
            }),
            ..counter_point(index)
        })
        .collect();
    group.bench_function("record_response_times", |b| {
        b.iter_batched(
            || times.clone(),
            |points| metrics.record(0, 0, 1.0, points, &limits),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("snapshot_1000_series", |b| {
        b.iter_batched(
            || {
                let mut metrics = PluginMetrics::new();
                let points = (0..1_000)
                    .map(|index| {
                        let mut point = counter_point(index);
                        point.attributes[0].value =
                            wit::AttributeValue::Text(format!("/endpoint/{index}"));
                        point
                    })
                    .collect();
                metrics.record(0, 0, 1.0, points, &limits);
                metrics
            },
            |mut metrics| metrics.snapshot(&runs),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(metrics_export, benches, plugin_metrics);
criterion_main!(metrics_export);
