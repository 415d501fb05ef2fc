//! Setup the benches share: a fresh database, and a project with a key and a workflow.

use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// A fresh database `db` on `server` (dropped first if it exists): the admin connection (to
/// drop it at the end), its URL and a pool on it.
pub async fn fresh_database(
    server: &str,
    db: &str,
) -> anyhow::Result<(PgConnection, String, PgPool)> {
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await?;
    let database_url = format!("{server}/{db}");
    let pool = wharf_shared::repo::no_reaper(PgPoolOptions::new())
        .max_connections(10)
        .connect(&database_url)
        .await?;
    Ok((admin, database_url, pool))
}

/// A project (through the admin token) and a workflow of `schema`: (key, workflow id).
pub async fn project_and_workflow(
    client: &reqwest::Client,
    base: &str,
    slug: &str,
    schema: Value,
) -> anyhow::Result<(String, String)> {
    let project: Value = client
        .post(format!("{base}/v1/projects"))
        .bearer_auth(crate::ADMIN_TOKEN)
        .json(&json!({"slug": slug, "name": slug}))
        .send()
        .await?
        .json()
        .await?;
    let key = project["apiKey"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let wf: Value = client
        .post(format!("{base}/v1/workflows"))
        .header("x-api-key", &key)
        .json(&json!({"name": slug, "schema": schema}))
        .send()
        .await?
        .json()
        .await?;
    Ok((key, wf["id"].as_str().unwrap_or_default().to_string()))
}

/// Polls an export every `every` until it leaves QUEUED and IN_PROGRESS; its last status.
pub async fn wait_done(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    every: std::time::Duration,
) -> anyhow::Result<Value> {
    loop {
        let s: Value = client
            .get(format!("{base}/v1/exports/{id}"))
            .header("x-api-key", key)
            .send()
            .await?
            .json()
            .await?;
        if !matches!(s["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")) {
            return Ok(s);
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes a queue's traces from the Redis at `url`, best effort: the keys matching `pattern`
/// (e.g. `{queue}*`), and the queue's entries in apalis's registry of queues (a sorted set
/// shared by every queue, `core:apalis:queues:list`, holding `{queue}:workers`).
pub fn remove_redis_keys(url: &str, pattern: &str) {
    let Ok(mut conn) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut conn)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
    }
    let registered: Vec<String> = redis::cmd("ZRANGE")
        .arg(APALIS_QUEUES)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap_or_default();
    let ours: Vec<&String> = registered
        .iter()
        .filter(|m| glob_match(pattern, m))
        .collect();
    if !ours.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("ZREM")
            .arg(APALIS_QUEUES)
            .arg(ours)
            .query(&mut conn);
    }
}

/// apalis's registry of queues (every worker registers `{queue}:workers` in it).
pub const APALIS_QUEUES: &str = "core:apalis:queues:list";

/// Redis's glob, for the `*` patterns used here (no `?` or classes).
fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(p) => p,
        None => return s.is_empty(),
    };
    let Some(mut tail) = s.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.ends_with(last)
}

/// The run's rows copied into a plain table of their own (no primary key, no other runs),
/// vacuumed and analyzed: what a user compares an export with.
pub fn plain_table(
    database_url: &str,
    table: &str,
    run_id: &str,
    fields: usize,
) -> anyhow::Result<String> {
    let plain = format!("{table}_plain");
    let cols: Vec<String> = (1..=fields).map(|i| format!("c{i}")).collect();
    for sql in [
        format!("DROP TABLE IF EXISTS {plain}"),
        format!(
            "CREATE TABLE {plain} AS SELECT {} FROM {table} WHERE run_id = '{run_id}' ORDER BY _id",
            cols.join(", ")
        ),
        format!("VACUUM ANALYZE {plain}"),
    ] {
        let status = std::process::Command::new("psql")
            .arg(database_url)
            .args(["-qXc", &sql])
            .status()?;
        anyhow::ensure!(status.success(), "psql failed: {sql}");
    }
    Ok(plain)
}

/// PostgreSQL's own floor, measured the honest way: `psql -c "COPY (query) TO STDOUT …"` into
/// a file, best of two. `format`: `csv` (with a header) or `binary`.
pub fn copy_floor(database_url: &str, query: &str, format: &str) -> anyhow::Result<f64> {
    let header = if format == "csv" { ", HEADER" } else { "" };
    let sql = format!("COPY ({query}) TO STDOUT (FORMAT {format}{header})");
    let path = std::env::temp_dir().join(format!("wharf-bench-floor.{format}"));
    let mut best = f64::MAX;
    for _ in 0..2 {
        let file = std::fs::File::create(&path)?;
        let t = std::time::Instant::now();
        let status = std::process::Command::new("psql")
            .arg(database_url)
            .args(["-qXc", &sql])
            .stdout(file)
            .status()?;
        anyhow::ensure!(status.success(), "psql failed: {status}");
        best = best.min(t.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(&path);
    Ok(best)
}

/// A process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_matches_like_redis_for_stars() {
        use super::glob_match;
        assert!(glob_match("q1*", "q1:workers"));
        assert!(glob_match("*q1*", "wharf:q1:workers"));
        assert!(!glob_match("q1*", "q2:workers"));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-c"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact-not"));
    }
}
