use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::workflows::Workflow;
use super::{Page, paginate};
use crate::domain::schema::Field;
use crate::error::{Error, Result};
use crate::ingest::WideRows;
use crate::ingest::writer::Loc;
use crate::ingest::writer::{COPY_HEADER, COPY_TRAILER};

pg_row! {
    #[derive(Debug, Clone)]
    pub struct Run {
        pub id: Uuid,
        pub workflow_id: Uuid,
        pub row_count: i64,
        pub first_row_id: i64,
        pub executed_at: DateTime<Utc>,
    }
}

const COLUMNS: &str = "id, workflow_id, row_count, first_row_id, executed_at";

pub async fn list(
    pool: &PgPool,
    workflow_id: Uuid,
    page: Page,
) -> Result<(Vec<Run>, Option<Uuid>)> {
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM runs WHERE workflow_id = "));
    q.push_bind(workflow_id);
    if let Some(before) = page.before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit + 1);
    let rows: Vec<Run> = q.build_query_as().fetch_all(pool).await?;
    Ok(paginate(rows, page, |r| r.id))
}

/// A run of the workflow, or its latest when `id` is None.
pub async fn get_or_latest(
    pool: &PgPool,
    workflow_id: Uuid,
    id: Option<Uuid>,
) -> Result<Option<Run>> {
    Ok(sqlx::query_as::<_, Run>(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM runs WHERE workflow_id = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY id DESC LIMIT 1"
    )))
    .bind(workflow_id)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Every run of the workflow, oldest first (bundles).
pub async fn all_of_workflow(pool: &PgPool, workflow_id: Uuid) -> Result<Vec<Run>> {
    Ok(sqlx::query_as::<_, Run>(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM runs WHERE workflow_id = $1 ORDER BY id"
    )))
    .bind(workflow_id)
    .fetch_all(pool)
    .await?)
}

/// The channels that feed one run's rows into `copy_run`.
pub struct RunFeed {
    /// The parser asks for the first `_id` once its first batch is ready; until then no
    /// connection is taken. Dropped without asking: the input failed before that.
    pub ask: oneshot::Receiver<()>,
    /// Receives the `_id` of the run's first row once the workflow is locked.
    pub first_row_id: oneshot::Sender<i64>,
    /// Binary COPY tuples in batches, in order; closed when the input ends.
    pub batches: mpsc::Receiver<Vec<u8>>,
    /// The input's verdict: `Ok(rows)` commits, `Err` rolls back. Sent after `batches` closes.
    pub verdict: oneshot::Receiver<Result<u64, ()>>,
    /// Rows that may be too wide for PostgreSQL, to name their line if it refuses one.
    pub wide: WideRows,
}

/// Stores a run all-or-nothing: locks the workflow (runs into one workflow take turns, so ids
/// stay contiguous per run), COPYs the batches into its table, and commits only on an `Ok`
/// verdict whose row count matches what PostgreSQL received.
pub async fn copy_run(
    pool: &PgPool,
    gate: &super::IngestGate,
    wf: &Workflow,
    run_id: Uuid,
    feed: RunFeed,
) -> Result<Option<Run>> {
    let RunFeed {
        ask,
        first_row_id,
        batches,
        verdict,
        wide,
    } = feed;
    if ask.await.is_err() {
        return Ok(None);
    }
    let _admitted = gate.enter().await?;
    // The COPY's connection is closed, never given back, unless the run is committed: an upload
    // cut short (client gone, stalled, refused) leaves its COPY unfinished.
    let mut lent = super::lent::CopyConnection::begin(pool).await?;
    let next: i64 =
        sqlx::query_scalar("SELECT next_row_id FROM workflows WHERE id = $1 FOR UPDATE")
            .bind(wf.id)
            .fetch_one(&mut *lent)
            .await?;
    if first_row_id.send(next).is_err() {
        return Ok(None);
    }
    let rows = match copy_batches(&mut lent, &copy_statement(wf), batches, verdict, &wide).await? {
        Copied::Rows(rows) => rows,
        Copied::Rejected { in_step } => {
            // A bad row (a 400, not rare): an aborted COPY is in step, and its connection goes
            // back once its transaction is ended (proven by `rollback`).
            if in_step {
                lent.rollback().await.ok();
            }
            return Ok(None);
        }
    };
    let run = insert_run(&mut lent, wf.id, run_id, rows, next).await?;
    lent.commit().await?;
    note_commit_lsn(pool, run.id).await;
    Ok(Some(run))
}

/// Records where the primary's WAL stands now that the run is committed: a replica that has
/// replayed past it holds the run. Best effort: without it the run is read on the primary.
async fn note_commit_lsn(pool: &PgPool, run_id: Uuid) {
    let noted = sqlx::query("UPDATE runs SET commit_lsn = pg_current_wal_lsn() WHERE id = $1")
        .bind(run_id)
        .execute(pool)
        .await;
    if let Err(e) = noted {
        tracing::warn!(error = %e, %run_id, "run's commit position not noted; it is read on the primary");
    }
}

enum Copied {
    Rows(i64),
    /// The input's verdict was no; `in_step`: the COPY's abort was read to its end.
    Rejected {
        in_step: bool,
    },
}

/// The run's batches as a series of binary COPYs of at most COPY_SPAN bytes each: PostgreSQL
/// buffers up to 1,000 binary tuples before inserting them, whatever their size (it counts
/// bytes only in text mode), so one COPY of wide rows could hold ~1 GB in its backend. Ending
/// a COPY flushes that buffer. Measured: 600 rows of 900 KB in one binary COPY took the
/// backend to 561 MB; in text, 34 MB. The rows copied must be the rows the input parsed.
async fn copy_batches(
    lent: &mut super::lent::CopyConnection,
    statement: &str,
    mut batches: mpsc::Receiver<Vec<u8>>,
    verdict: oneshot::Receiver<Result<u64, ()>>,
    wide: &WideRows,
) -> Result<Copied> {
    let mut copy = lent.copy_in_raw(statement).await?;
    copy.send(COPY_HEADER).await?;
    let (mut span, mut copied) = (0usize, 0u64);
    while let Some(batch) = batches.recv().await {
        if span >= COPY_SPAN {
            copy.send(COPY_TRAILER)
                .await
                .map_err(|e| refused_row(e, wide))?;
            copied += copy.finish().await.map_err(|e| refused_row(e, wide))?;
            copy = lent.copy_in_raw(statement).await?;
            copy.send(COPY_HEADER).await?;
            span = 0;
        }
        span += batch.len();
        if let Err(e) = copy.send(batch).await {
            drop(batches);
            return Err(refused_row(e, wide));
        }
    }
    let Ok(Ok(rows)) = verdict.await else {
        let in_step = copy.abort("input rejected").await.is_ok();
        return Ok(Copied::Rejected { in_step });
    };
    copy.send(COPY_TRAILER)
        .await
        .map_err(|e| refused_row(e, wide))?;
    copied += copy.finish().await.map_err(|e| refused_row(e, wide))?;
    if copied != rows {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "copied {copied} rows, parsed {rows}"
        )));
    }
    Ok(Copied::Rows(
        i64::try_from(rows).map_err(|e| Error::Unexpected(e.into()))?,
    ))
}

/// The run's row, its rows' ids taken from the workflow's counter.
async fn insert_run(
    conn: &mut sqlx::PgConnection,
    workflow_id: Uuid,
    run_id: Uuid,
    count: i64,
    first_row_id: i64,
) -> Result<Run> {
    sqlx::query("UPDATE workflows SET next_row_id = next_row_id + $2 WHERE id = $1")
        .bind(workflow_id)
        .bind(count)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_as::<_, Run>(AssertSqlSafe(format!(
        "INSERT INTO runs (id, workflow_id, row_count, first_row_id, executed_at)
         VALUES ($1, $2, $3, $4, now()) RETURNING {COLUMNS}"
    )))
    .bind(run_id)
    .bind(workflow_id)
    .bind(count)
    .bind(first_row_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// Bytes of tuples per COPY statement (see `copy_run`).
const COPY_SPAN: usize = 16 << 20;

/// PostgreSQL refusing a row that validation let through: "row is too big" (54000, a row too
/// wide for one 8 KiB page after TOAST) is the client's input, named by its line; anything
/// else stays an internal error. Binary COPY buffers tuples before inserting them, so the
/// "line N" of PostgreSQL's error is where reading had got to, not the row refused: the row is
/// named from the writer's list of rows that could be too wide (those whose values, if none
/// compressed, would not fit a page) — one row when the input has one such row.
fn refused_row(e: sqlx::Error, wide: &WideRows) -> Error {
    let Some(db) = e.as_database_error() else {
        return e.into();
    };
    if db.code().as_deref() != Some("54000") {
        return e.into();
    }
    let mut suspects: Vec<(u64, Loc)> = wide
        .lock()
        .map(|w| w.iter().map(|(row, loc)| (*row, *loc)).collect())
        .unwrap_or_default();
    suspects.sort_by_key(|(row, _)| *row);
    let place = match suspects.as_slice() {
        [] => "a row".to_string(),
        [(_, loc)] => loc.to_string(),
        many => {
            let named: Vec<String> = many.iter().take(5).map(|(_, l)| l.to_string()).collect();
            let more = if many.len() > 5 { ", …" } else { "" };
            format!("one of the rows at {}{more}", named.join(", "))
        }
    };
    Error::invalid(format!(
        "{place}: the row is too wide to store (over PostgreSQL's 8160-byte row limit after \
         compression and out-of-line storage: too many long text or json fields)"
    ))
}

/// Only generated names: `rows_<hex>` and `c1..cn`.
pub(crate) fn copy_statement(wf: &Workflow) -> String {
    let cols: Vec<String> = (0..wf.fields.len()).map(Field::column).collect();
    format!(
        "COPY {} (_id, run_id, {}) FROM STDIN (FORMAT binary)",
        wf.table_name,
        cols.join(", ")
    )
}

/// Counts a run's stored rows (tests and checks read this, not the run record).
pub async fn stored_rows(pool: &PgPool, wf: &Workflow, run_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE run_id = $1",
        wf.table_name
    )))
    .bind(run_id)
    .fetch_one(pool)
    .await?)
}

/// Every stored row of a workflow's table, as JSON objects keyed by field name, in `_id` order.
pub async fn stored_rows_json(pool: &PgPool, wf: &Workflow) -> Result<Vec<serde_json::Value>> {
    let mut select = String::from("SELECT jsonb_build_object('_id', _id");
    for i in 0..wf.fields.len() {
        // Field names are bound as parameters; only generated column names are spliced.
        select.push_str(&format!(", ${}::text, {}", i + 1, Field::column(i)));
    }
    select.push_str(&format!(") FROM {} ORDER BY _id", wf.table_name));
    let mut q = sqlx::query_scalar::<_, serde_json::Value>(AssertSqlSafe(select));
    for f in &wf.fields {
        q = q.bind(f.name.clone());
    }
    Ok(q.fetch_all(pool).await?)
}
