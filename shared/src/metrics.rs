//! Metrics (API.md, Operations), through `prometheus-client`: a registry per process role (an
//! API, a worker), never a global one, so processes in one test binary each count their own.
//! Queue figures come from PostgreSQL (the record) at scrape time, one indexed query cached for a
//! second, so any API or worker answers them. Labels are bounded: formats, statuses and route
//! patterns only — never raw paths, ids or tenants.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use sqlx::PgPool;

use crate::error::Result;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    pub format: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub format: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub server: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_buckets() -> Histogram {
    // 1 ms to ~16 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn request_buckets() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    gauges: Gauges,
    pub exports: ExportCounts,
    http: HttpCounts,
    /// When the queue figures were last read.
    read_at: Mutex<Option<Instant>>,
}

/// Figures read at scrape time: the queue (from PostgreSQL) and the process's pool.
struct Gauges {
    queue: Family<StatusLabel, Gauge>,
    oldest: Gauge<f64, AtomicU64>,
    pool_size: Gauge<i64, AtomicI64>,
    pool_idle: Gauge<i64, AtomicI64>,
}

/// What workers count of the exports they run.
pub struct ExportCounts {
    pub finished: Family<FinishedLabels, Counter>,
    pub duration: HistogramFamily<FormatLabel>,
    pub rows: Counter,
    pub bytes: Counter,
    pub pickup: Histogram,
    /// Reads of runs' rows, by the server that served them (primary, replica).
    pub reads: Family<ServerLabel, Counter>,
}

/// What an API counts of the requests it answers.
struct HttpCounts {
    requests: Family<HttpLabels, Counter>,
    duration: HistogramFamily<RouteLabel>,
}

/// How long queue figures read from PostgreSQL are reused.
pub const QUEUE_CACHE: Duration = Duration::from_secs(1);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `metric`, registered under `name` with its help text.
fn add<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

impl Gauges {
    fn register(r: &mut Registry) -> Self {
        Gauges {
            queue: add(
                r,
                "wharf_exports",
                "Exports by status: queued (waiting) and running (claimed); from PostgreSQL",
                Family::default(),
            ),
            oldest: add(
                r,
                "wharf_export_oldest_queued_seconds",
                "Age of the oldest queued export (0 when none waits)",
                Gauge::default(),
            ),
            pool_size: add(
                r,
                "wharf_db_pool_connections",
                "Connections the process's PostgreSQL pool holds",
                Gauge::default(),
            ),
            pool_idle: add(
                r,
                "wharf_db_pool_idle_connections",
                "Idle connections of the pool",
                Gauge::default(),
            ),
        }
    }
}

impl ExportCounts {
    fn register(r: &mut Registry) -> Self {
        let help =
            "Export attempts that ended, by format and status (completed, failed, cancelled)";
        ExportCounts {
            finished: add(r, "wharf_exports_finished", help, Family::default()),
            duration: add(
                r,
                "wharf_export_duration_seconds",
                "Claim to completion of completed exports, by format",
                Family::new_with_constructor(seconds_buckets),
            ),
            rows: add(
                r,
                "wharf_export_rows",
                "Rows written by completed exports",
                Counter::default(),
            ),
            bytes: add(
                r,
                "wharf_export_bytes",
                "Bytes stored by completed exports",
                Counter::default(),
            ),
            pickup: add(
                r,
                "wharf_queue_pickup_seconds",
                "Created to claimed, for first attempts",
                seconds_buckets(),
            ),
            reads: add(
                r,
                "wharf_run_reads",
                "Reads of runs' rows by the server that served them (primary, replica)",
                Family::default(),
            ),
        }
    }
}

impl HttpCounts {
    fn register(r: &mut Registry) -> Self {
        HttpCounts {
            requests: add(
                r,
                "wharf_http_requests",
                "HTTP requests by route pattern and status",
                Family::default(),
            ),
            duration: add(
                r,
                "wharf_http_request_duration_seconds",
                "HTTP request latency by route pattern",
                Family::new_with_constructor(request_buckets),
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let gauges = Gauges::register(&mut registry);
        let exports = ExportCounts::register(&mut registry);
        let http = HttpCounts::register(&mut registry);
        Metrics {
            registry,
            gauges,
            exports,
            http,
            read_at: Mutex::new(None),
        }
    }

    /// An export attempt that ended: `status` is completed, failed or cancelled.
    pub fn finished(&self, format: &str, status: &'static str) {
        self.exports
            .finished
            .get_or_create(&FinishedLabels {
                format: format.to_string(),
                status,
            })
            .inc();
    }

    pub fn completed(&self, format: &str, rows: u64, bytes: u64, seconds: f64) {
        self.finished(format, "completed");
        self.exports
            .duration
            .get_or_create(&FormatLabel {
                format: format.to_string(),
            })
            .observe(seconds);
        self.exports.rows.inc_by(rows);
        self.exports.bytes.inc_by(bytes);
    }

    /// A read of a run's rows served by `server`.
    pub fn read_on(&self, server: crate::export::Server) {
        self.exports
            .reads
            .get_or_create(&ServerLabel {
                server: server.as_str(),
            })
            .inc();
    }

    pub fn http(&self, route: &str, status: u16, seconds: f64) {
        self.http
            .requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.http
            .duration
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The exposition in `format`, queue figures fresh within `QUEUE_CACHE`.
    pub async fn render(&self, pool: &PgPool, format: Exposition) -> Result<String> {
        let stale = self
            .read_at
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= QUEUE_CACHE))
            .unwrap_or(true);
        if stale {
            let q = crate::repo::ops::queue_figures(pool).await?;
            self.gauges
                .queue
                .get_or_create(&StatusLabel { status: "queued" })
                .set(q.queued);
            self.gauges
                .queue
                .get_or_create(&StatusLabel { status: "running" })
                .set(q.running);
            self.gauges.oldest.set(q.oldest_queued_seconds);
            if let Ok(mut t) = self.read_at.lock() {
                *t = Some(Instant::now());
            }
        }
        self.gauges.pool_size.set(i64::from(pool.size()));
        self.gauges.pool_idle.set(pool.num_idle() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| crate::error::Error::Unexpected(anyhow::anyhow!("metrics: {e}")))?;
        Ok(match format {
            Exposition::OpenMetrics => out,
            Exposition::Prometheus => classic(&out),
        })
    }
}

/// The two text formats scrapers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0.0, as `prometheus-client` encodes it.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: what a scraper gets unless it asks for OpenMetrics
    /// (promtool, the classic parser, most agents).
    Prometheus,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics only when it names it.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a)
                if a.to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Exposition::OpenMetrics
            }
            _ => Exposition::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => OPENMETRICS,
            Exposition::Prometheus => PROMETHEUS,
        }
    }
}

/// The OpenMetrics exposition's content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The library's OpenMetrics exposition as the Prometheus text format 0.0.4. The samples are
/// the same; the formats differ in three things only: a counter's family is named with its
/// `_total` suffix in `# HELP`/`# TYPE` (OpenMetrics names the family without it, so classic
/// parsers see `x_total` samples with no help and no type), there is no `# UNIT`, and no
/// `# EOF`.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_with_their_suffix() {
        let om = "# HELP a_rows Rows.\n# TYPE a_rows counter\na_rows_total 3\n\
                  # HELP a_q Queued.\n# TYPE a_q gauge\na_q{status=\"queued\"} 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_rows_total Rows.\n# TYPE a_rows_total counter\na_rows_total 3\n\
             # HELP a_q Queued.\n# TYPE a_q gauge\na_q{status=\"queued\"} 1\n"
        );
        assert_eq!(Exposition::from_accept(None), Exposition::Prometheus);
        assert_eq!(
            Exposition::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::from_accept(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            Exposition::Prometheus
        );
    }
}
