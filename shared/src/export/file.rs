//! An export of one run into one file of a registered format: the run's selected rows as one
//! COPY (a source), the format's encoder (from `formats::REGISTRY`), the pipeline between.

use async_trait::async_trait;
use sqlx::PgConnection;

use super::pipeline::{self, Attempt, Encode, Feeder, Produced, Source, Target};
use crate::domain::export::{self as dom, ExportSpec};
use crate::error::{Error, Result};
use crate::repo::export_query::{OpenRead, OutColumn, Plan};
use crate::repo::exports::Claimed;
use crate::store::ObjectMeta;

/// One run's rows as the export's plan selects and sorts them.
struct RunSource {
    plan: Plan,
    /// The run's row count, when the plan reads the whole run (no count needed).
    whole_run_rows: Option<i64>,
    open: Option<OpenRead>,
}

#[async_trait]
impl Source for RunSource {
    async fn open(&mut self, conn: &mut PgConnection) -> Result<i64> {
        let open = self.plan.open_read(conn, self.whole_run_rows).await?;
        let total = open.total;
        self.open = Some(open);
        Ok(total)
    }

    async fn read(&self, conn: &mut PgConnection, feed: &Feeder<'_>) -> Result<()> {
        feed.copy_part(conn, &self.plan.copy_sql(), 0).await
    }

    async fn close(&self, conn: &mut PgConnection) -> Result<()> {
        match &self.open {
            Some(open) => open.close(conn).await,
            None => Ok(()),
        }
    }
}

pub(super) async fn produce(
    at: &Attempt<'_>,
    claimed: &Claimed,
    read_conn: &mut super::ReadConn,
) -> Result<Produced> {
    let rec = &claimed.rec;
    // Read with the claim; None: the workflow was deleted since the export was asked for.
    let wf = claimed
        .workflow
        .as_ref()
        .ok_or(Error::NotFound("workflow"))?;
    let run_id = rec.run_id.ok_or(Error::NotFound("run"))?;
    let spec: &ExportSpec = &rec.params.0;
    let plan = Plan::new(wf, run_id, spec)?;
    let target = target(rec.id, at.claim.attempt, &wf.name, rec.created_at, spec);
    let mut source = RunSource {
        whole_run_rows: rec.run_row_count.filter(|_| plan.is_whole_run()),
        plan,
        open: None,
    };
    let encode = encoder(spec, source.plan.columns.clone());
    pipeline::run(at, read_conn, &mut source, target, encode).await
}

/// The object key, download name and type of an export's file.
fn target(
    export_id: uuid::Uuid,
    attempt: i32,
    workflow_name: &str,
    created_at: chrono::DateTime<chrono::Utc>,
    spec: &ExportSpec,
) -> Target {
    let date = created_at.date_naive();
    let file_name = dom::file_name(workflow_name, date, spec.format, spec.compression);
    let meta = ObjectMeta {
        content_type: dom::content_type(spec.format, spec.compression).to_string(),
        content_disposition: dom::content_disposition(&file_name),
    };
    let ext = file_name
        .rsplit_once(&format!("-{date}"))
        .map_or("", |(_, e)| e)
        .to_string();
    Target {
        key: format!("exports/{export_id}/attempt-{attempt}{ext}"),
        file_name,
        meta,
    }
}

/// The format's encoder over the one part of the feed.
pub(super) fn encoder(spec: &ExportSpec, columns: Vec<OutColumn>) -> Encode {
    let (format, compression) = (spec.format, spec.compression);
    Box::new(move |sink, rx, progress| {
        let mut enc = format.encoder(sink, &columns, compression)?;
        if pipeline::next_part(rx)? != Some(0) {
            return Err(super::stopped());
        }
        let rows = pipeline::decode_part(rx, progress, 0, |buf, f| enc.row(buf, f))?;
        if pipeline::next_part(rx)?.is_some() {
            return Err(super::stopped());
        }
        Ok((enc.finish()?, rows))
    })
}
