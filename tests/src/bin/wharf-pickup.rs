//! wharf-pickup: how soon an idle worker starts an export after its create (created → claimed,
//! from the status's createdAt and startedAt), over N exports one at a time, on each queue:
//! PostgreSQL (LISTEN/NOTIFY, the embedded default) and Redis (apalis, woken by its push
//! notifications). Prints p50/p99/max. Then throughput: 2,000 one-row exports of 4 projects
//! created while no worker runs, drained by 1 and by 2 worker processes (concurrency 4 each);
//! exports/s from the first claim to the last completion. Last, as clients see it: 8 clients
//! create 600 exports over HTTP while 2 workers run, and long-poll each until COMPLETED.
//!
//! Run (services up, see scripts/services.sh):
//!   cargo build --release --bin wharf-worker --bin wharf-pickup
//!   $CARGO_TARGET_DIR/release/wharf-pickup [N]

use std::net::TcpListener;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Executor;
use wharf_api::startup::Application;
use wharf_shared::config::{Settings, StoreKind};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[i.saturating_sub(1).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let server = std::env::var("WHARF_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    println!("wharf-pickup: {n} exports one at a time, idle worker (concurrency 4)\n");
    println!("| queue | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    for queue in ["postgres", "redis"] {
        let ms = measure(&server, queue, n).await?;
        println!(
            "| {queue} | {:.1} | {:.1} | {:.1} |",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or_default()
        );
    }
    println!("\nsmall exports (one row, CSV), 2,000 queued over 4 projects, then drained\n");
    println!(
        "CPU seconds used while draining, per second of the drain (this machine has {} cores): \
         PostgreSQL (every postgres process), the workers, this process (the API); and how busy \
         the whole machine was (kernel included, from /proc/stat)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| queue | worker processes | exports/s | PostgreSQL CPU/s | workers CPU/s | API CPU/s | machine busy |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for queue in ["postgres", "redis"] {
        for workers in [1, 2] {
            let (rate, cpu) = throughput(&server, queue, workers, 500).await?;
            println!(
                "| {queue} | {workers} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.0} % |",
                cpu.postgres,
                cpu.workers,
                cpu.api,
                cpu.machine * 100.0
            );
        }
    }
    println!(
        "\nsmall exports as clients see them: 8 clients create 600 one-row CSV exports over HTTP \
         (75 each, one after another) while 2 worker processes run, then long-poll each until \
         COMPLETED; exports/s from the first create to the last COMPLETED a client saw\n"
    );
    println!(
        "| queue | exports/s | first create → last COMPLETED s | create p50 ms | create p99 ms |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for queue in ["postgres", "redis"] {
        let e = end_to_end(&server, queue, 8, 75).await?;
        println!(
            "| {queue} | {:.0} | {:.2} | {:.1} | {:.1} |",
            e.exports as f64 / e.secs,
            e.secs,
            percentile(&e.create_ms, 0.5),
            percentile(&e.create_ms, 0.99)
        );
    }
    Ok(())
}

struct EndToEnd {
    exports: usize,
    secs: f64,
    /// Create requests' latencies, sorted.
    create_ms: Vec<f64>,
}

/// `clients` clients, each creating `each` exports of its own project's one-row workflow as
/// fast as the API answers, then long-polling every one of them until it is COMPLETED.
async fn end_to_end(
    server: &str,
    queue: &str,
    clients: usize,
    each: usize,
) -> anyhow::Result<EndToEnd> {
    let bench = Bench::start(server, queue, &format!("wharf_e2e_{queue}")).await?;
    let client = reqwest::Client::new();
    let mut projects = Vec::new();
    for c in 0..clients {
        projects.push(bench.one_row(&client, &format!("c{c}")).await?);
    }
    let procs = [bench.worker()?, bench.worker()?];
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = std::time::Instant::now();
    let runs = projects.into_iter().map(|(key, wf)| {
        let (client, base) = (client.clone(), bench.base.clone());
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(each);
            let mut create_ms = Vec::with_capacity(each);
            for _ in 0..each {
                let t = std::time::Instant::now();
                let created: Value = client
                    .post(format!("{base}/v1/workflows/{wf}/exports"))
                    .header("x-api-key", &key)
                    .json(&json!({}))
                    .send()
                    .await?
                    .json()
                    .await?;
                create_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                let id = created["exportId"].as_str().unwrap_or_default().to_string();
                anyhow::ensure!(!id.is_empty(), "create refused: {created}");
                ids.push(id);
            }
            for id in ids {
                loop {
                    let s: Value = client
                        .get(format!("{base}/v1/exports/{id}?wait=30"))
                        .header("x-api-key", &key)
                        .send()
                        .await?
                        .json()
                        .await?;
                    match s["status"].as_str() {
                        Some("COMPLETED") => break,
                        Some("QUEUED" | "IN_PROGRESS") => continue,
                        _ => anyhow::bail!("export ended {s}"),
                    }
                }
            }
            Ok::<_, anyhow::Error>(create_ms)
        })
    });
    let mut create_ms = Vec::new();
    for run in futures::future::join_all(runs).await {
        create_ms.extend(run??);
    }
    let secs = started.elapsed().as_secs_f64();
    for mut p in procs {
        let _ = p.kill();
        let _ = p.wait();
    }
    bench.finish().await;
    create_ms.sort_by(f64::total_cmp);
    Ok(EndToEnd {
        exports: clients * each,
        secs,
        create_ms,
    })
}

/// A fresh installation on `queue`: its API in process, a database, a directory store.
struct Bench {
    admin: sqlx::PgConnection,
    database_url: String,
    pool: sqlx::PgPool,
    settings: Settings,
    base: String,
    name: String,
    dir: std::path::PathBuf,
    db: String,
}

impl Bench {
    async fn start(server: &str, queue: &str, db: &str) -> anyhow::Result<Bench> {
        let (admin, database_url, pool) = wharf_tests::bench::fresh_database(server, db).await?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let name = format!("wharf-pickup-{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(format!("{name}-store"));
        let mut settings: Settings = wharf_tests::test_settings(
            "wharf-pickup",
            &[
                ("WHARF_QUEUE", &name),
                ("WHARF_PUBLIC_URL", &base),
                ("DATABASE_URL", &database_url),
                ("WHARF_RATE_LIMIT", "0"),
            ],
        );
        settings.store = StoreKind::Dir(dir.clone());
        if queue == "postgres" {
            settings.redis_url = None;
        }
        let app = Application::build_with(settings.clone(), pool.clone(), listener).await?;
        tokio::spawn(app.run_until_stopped());
        Ok(Bench {
            admin,
            database_url,
            pool,
            settings,
            base,
            name,
            dir,
            db: db.to_string(),
        })
    }

    fn worker(&self) -> anyhow::Result<std::process::Child> {
        let bin = std::env::current_exe()?.with_file_name("wharf-worker");
        Ok(
            wharf_tests::worker_command(&bin, &self.settings, &self.database_url)
                // WHARF_PICKUP_LOG=info shows each export's phases (`export completed`).
                .env(
                    "RUST_LOG",
                    std::env::var("WHARF_PICKUP_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .spawn()?,
        )
    }

    /// A project with a one-row workflow: (key, workflow id).
    async fn one_row(
        &self,
        client: &reqwest::Client,
        slug: &str,
    ) -> anyhow::Result<(String, String)> {
        let schema = json!([{"name": "n", "type": "integer"}]);
        let (key, wf_id) =
            wharf_tests::bench::project_and_workflow(client, &self.base, slug, schema).await?;
        client
            .post(format!("{}/v1/workflows/{wf_id}/runs", self.base))
            .header("x-api-key", &key)
            .header("content-type", "text/csv")
            .body("n\n1\n")
            .send()
            .await?;
        Ok((key, wf_id))
    }

    /// Drops the database, the store and the queue's Redis keys.
    async fn finish(mut self) {
        self.pool.close().await;
        self.admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db
            )))
            .await
            .ok();
        std::fs::remove_dir_all(&self.dir).ok();
        if let Some(url) = &self.settings.redis_url {
            wharf_tests::bench::remove_redis_keys(url, &format!("*{}*", self.name));
        }
    }
}

/// CPU seconds a process has used (user + system), from /proc (clock ticks of 1/100 s, Linux's
/// USER_HZ on every architecture it runs on).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of every PostgreSQL process on the machine (backends, WAL writer, checkpointer).
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_secs)
        .sum()
}

/// The machine's CPU ticks so far from /proc/stat's first line: (busy, total). Busy is
/// everything but idle and iowait.
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn busy_share((b0, t0): (f64, f64), (b1, t1): (f64, f64)) -> f64 {
    if t1 > t0 { (b1 - b0) / (t1 - t0) } else { 0.0 }
}

/// Where the CPU went during a drain, in CPU seconds per second of it.
struct CpuShare {
    postgres: f64,
    workers: f64,
    api: f64,
    /// Of the whole machine (every core), 0–1.
    machine: f64,
}

/// Exports per second that `workers` processes drain from a queue of `per_project` × 4, and
/// the CPU each side used meanwhile.
async fn throughput(
    server: &str,
    queue: &str,
    workers: usize,
    per_project: usize,
) -> anyhow::Result<(f64, CpuShare)> {
    let bench = Bench::start(
        server,
        queue,
        &format!("wharf_throughput_{queue}_{workers}"),
    )
    .await?;
    let client = reqwest::Client::new();
    let mut projects = Vec::new();
    for p in 0..4 {
        projects.push(bench.one_row(&client, &format!("p{p}")).await?);
    }
    let creates = projects.iter().flat_map(|(key, wf)| {
        let (client, base) = (client.clone(), bench.base.clone());
        (0..per_project).map(move |_| {
            let (client, url, key) = (
                client.clone(),
                format!("{base}/v1/workflows/{wf}/exports"),
                key.clone(),
            );
            async move {
                client
                    .post(url)
                    .header("x-api-key", key)
                    .json(&json!({}))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
            }
        })
    });
    let created = futures::stream::iter(creates)
        .buffer_unordered(16)
        .filter(|r| futures::future::ready(matches!(r, Ok(true))))
        .count()
        .await;
    anyhow::ensure!(created == per_project * 4, "only {created} exports created");
    let (pg0, machine0, api0, t0) = (
        postgres_cpu_secs(),
        machine_ticks(),
        cpu_secs(std::process::id()),
        std::time::Instant::now(),
    );
    let mut procs = Vec::new();
    for _ in 0..workers {
        procs.push(bench.worker()?);
    }
    let total = (per_project * 4) as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM exports WHERE completed_at IS NOT NULL")
                .fetch_one(&bench.pool)
                .await?;
        if done >= total || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = CpuShare {
        postgres: (postgres_cpu_secs() - pg0) / wall,
        workers: procs.iter().map(|p| cpu_secs(p.id())).sum::<f64>() / wall,
        api: (cpu_secs(std::process::id()) - api0) / wall,
        machine: busy_share(machine0, machine_ticks()),
    };
    let (completed, secs): (i64, f64) = sqlx::query_as(concat!(
        "SELECT count(*) FILTER (WHERE status = ",
        wharf_shared::sql_status!(Completed),
        "), extract(epoch FROM max(completed_at) - min(started_at))::float8 FROM exports"
    ))
    .fetch_one(&bench.pool)
    .await?;
    for mut p in procs {
        let _ = p.kill();
        let _ = p.wait();
    }
    bench.finish().await;
    anyhow::ensure!(
        completed == total,
        "{completed} of {total} exports completed"
    );
    Ok((total as f64 / secs, cpu))
}

async fn measure(server: &str, queue: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let bench = Bench::start(server, queue, &format!("wharf_pickup_{queue}")).await?;
    let mut worker = bench.worker()?;
    let client = reqwest::Client::new();
    let (key, wf_id) = bench.one_row(&client, "pickup").await?;
    let base = &bench.base;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let created: Value = client
            .post(format!("{base}/v1/workflows/{wf_id}/exports"))
            .header("x-api-key", &key)
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["exportId"].as_str().unwrap_or_default().to_string();
        let done =
            wharf_tests::bench::wait_done(&client, base, &key, &id, Duration::from_millis(5))
                .await?;
        let at =
            |k: &str| chrono::DateTime::parse_from_rfc3339(done[k].as_str().unwrap_or_default());
        if let (Ok(c), Ok(s)) = (at("createdAt"), at("startedAt")) {
            ms.push((s - c).as_seconds_f64() * 1000.0);
        }
        // Idle again before the next one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    bench.finish().await;
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}
