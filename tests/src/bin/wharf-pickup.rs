//! wharf-pickup: how soon an idle worker starts an export after its create (created → claimed,
//! from the status's createdAt and startedAt), over N exports one at a time, on each queue:
//! PostgreSQL (LISTEN/NOTIFY, the embedded default) and Redis (apalis). Prints p50/p99/max.
//!
//! Run (services up, see scripts/services.sh):
//!   cargo build --release --bin wharf-worker --bin wharf-pickup
//!   $CARGO_TARGET_DIR/release/wharf-pickup [N]

use std::net::TcpListener;
use std::time::Duration;

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
    Ok(())
}

async fn measure(server: &str, queue: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let db = format!("wharf_pickup_{queue}");
    let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
    let (mut admin, database_url, pool) = wharf_tests::bench::fresh_database(server, &db).await?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let name = format!("wharf-pickup:{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(format!("wharf-pickup-{}", uuid::Uuid::new_v4().simple()));
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
    let worker_bin = std::env::current_exe()?.with_file_name("wharf-worker");
    let mut worker = wharf_tests::worker_command(&worker_bin, &settings, &database_url)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let client = reqwest::Client::new();
    let schema = json!([{"name": "n", "type": "integer"}]);
    let (key, wf_id) =
        wharf_tests::bench::project_and_workflow(&client, &base, "pickup", schema).await?;
    client
        .post(format!("{base}/v1/workflows/{wf_id}/runs"))
        .header("x-api-key", &key)
        .header("content-type", "text/csv")
        .body("n\n1\n")
        .send()
        .await?;
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
            wharf_tests::bench::wait_done(&client, &base, &key, &id, Duration::from_millis(5))
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
    pool.close().await;
    admin.execute(sqlx::AssertSqlSafe(drop)).await.ok();
    std::fs::remove_dir_all(&dir).ok();
    if let Some(url) = &settings.redis_url {
        let conn = redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
        if let Ok(mut conn) = conn {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{name}*"))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}
