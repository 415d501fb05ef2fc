//! The SQL that reads an export's rows. COPY takes no bind parameters, so every client value
//! travels as a bind parameter of `set_config('wharf.pN', $1, true)` (transaction-local) and
//! the query reads it back with `current_setting('wharf.pN')::type`. The SQL text holds only
//! generated names (`rows_<hex>`, `c1..cn`, `_id`) and fixed keywords.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::workflows::Workflow;
use crate::domain::dataset::{FileCut, FileStart, Granularity, MAX_PARTITIONS, PartitionKey};
use crate::domain::export::{Column, ExportSpec, Filter, Op, Order, resolve};
use crate::domain::schema::{Field, FieldType};
use crate::domain::states::FailureCode;
use crate::error::{Error, Result};

/// One output column: its name in the file and its type (`None` for `_id`).
#[derive(Debug, Clone)]
pub struct OutColumn {
    pub name: String,
    pub field_type: Option<FieldType>,
    pub nullable: bool,
}

/// Where a page of rows starts: by `_id` (keyset: an index range, however deep the page),
/// or by skipping rows (OFFSET) when no key is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Start,
    /// Rows with `_id` ≥ (ascending) or ≤ (descending) this id.
    FromId(i64),
    /// Rows with `_id` > (ascending) or < (descending) this id: the page after one ending there.
    AfterId(i64),
    Skip(u64),
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Every row of the run: nothing filters it.
    whole_run: bool,
    /// Sorted by `_id` (keyset paging applies), in this order.
    id_order: Option<Order>,
    pub columns: Vec<OutColumn>,
    settings: Vec<String>,
    from_where: String,
    select: String,
    order_by: String,
}

/// The WHERE clause's conditions: the run, each filter, the row ids; their values go into
/// `settings` (bound as `wharf.pN`, never spliced into the SQL).
fn conditions(
    fields: &[Field],
    spec: &ExportSpec,
    settings: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut conds = vec!["run_id = current_setting('wharf.p0')::uuid".to_string()];
    for f in &spec.filters {
        let Some(Column::Field(i)) = resolve(fields, &f.field) else {
            return Err(Error::invalid(format!("unknown field \"{}\"", f.field)));
        };
        conds.push(filter_sql(f, i, fields[i].field_type, settings)?);
    }
    if let Some(ids) = &spec.row_ids {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        settings.push(format!("{{{}}}", list.join(",")));
        conds.push(format!(
            "_id = ANY(current_setting('wharf.p{}')::bigint[])",
            settings.len() - 1
        ));
    }
    Ok(conds)
}

impl OutColumn {
    fn of(fields: &[Field], col: Column) -> OutColumn {
        match col {
            Column::Id => OutColumn {
                name: "_id".into(),
                field_type: None,
                nullable: false,
            },
            Column::Field(i) => OutColumn {
                name: fields[i].name.clone(),
                field_type: Some(fields[i].field_type),
                nullable: fields[i].nullable,
            },
        }
    }
}

fn column_sql(col: Column) -> String {
    match col {
        Column::Id => "_id".into(),
        Column::Field(i) => Field::column(i),
    }
}

impl Plan {
    pub fn new(wf: &Workflow, run_id: Uuid, spec: &ExportSpec) -> Result<Plan> {
        let fields = &wf.fields;
        let unknown = |name: &str| Error::invalid(format!("unknown field \"{name}\""));
        let mut settings = vec![run_id.to_string()];
        let conds = conditions(fields, spec, &mut settings)?;
        let sort = resolve(fields, &spec.sort_by).ok_or_else(|| unknown(&spec.sort_by))?;
        let dir = if spec.order == Order::Desc {
            "DESC"
        } else {
            "ASC"
        };
        let order_by = match sort {
            Column::Id => format!("_id {dir}"),
            col => format!("{} {dir}, _id ASC", column_sql(col)),
        };
        let mut columns = Vec::with_capacity(spec.columns.len());
        let mut exprs = Vec::with_capacity(spec.columns.len());
        for name in &spec.columns {
            let col = resolve(fields, name).ok_or_else(|| unknown(name))?;
            exprs.push(column_sql(col));
            columns.push(OutColumn::of(fields, col));
        }
        Ok(Plan {
            whole_run: spec.filters.is_empty() && spec.row_ids.is_none(),
            id_order: (sort == Column::Id).then_some(spec.order),
            columns,
            settings,
            from_where: format!("FROM {} WHERE {}", wf.table_name, conds.join(" AND ")),
            select: exprs.join(", "),
            order_by,
        })
    }

    /// Opens a read of this plan on a slot's own connection and says how many rows it holds.
    /// A whole run's count is known (`whole_run_rows`, from its record: a run never changes),
    /// so its read is one COPY and needs no transaction: two round trips fewer for a small
    /// export. Otherwise the count and the COPY share a transaction (one snapshot).
    pub async fn open_read(
        &self,
        conn: &mut PgConnection,
        whole_run_rows: Option<i64>,
    ) -> Result<OpenRead> {
        if let (true, Some(total)) = (self.whole_run, whole_run_rows) {
            self.apply_to_session(conn).await?;
            return Ok(OpenRead {
                total,
                in_transaction: false,
            });
        }
        sqlx::Executor::execute(&mut *conn, "BEGIN").await?;
        self.apply(conn).await?;
        let total = self.count(conn).await?;
        Ok(OpenRead {
            total,
            in_transaction: true,
        })
    }

    /// Binds this plan's values for the current transaction.
    pub async fn apply(&self, conn: &mut PgConnection) -> Result<()> {
        self.set(conn, true).await
    }

    /// Binds this plan's values for the connection's session, for a read outside a
    /// transaction. Only for a connection of the caller's own (a worker slot's), never a
    /// pool's; its next read sets its own values before it runs.
    pub async fn apply_to_session(&self, conn: &mut PgConnection) -> Result<()> {
        self.set(conn, false).await
    }

    async fn set(&self, conn: &mut PgConnection, local: bool) -> Result<()> {
        // One statement for all of them (one round trip); only generated numbers join the text.
        let mut sql = (0..self.settings.len())
            .map(|i| format!("set_config('wharf.p{i}', ${}, {local})", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        // A read in `_id` order is the primary key's order (run_id, _id): it walks the index and
        // never sorts, whatever the table's statistics say. A run stored a second ago has none
        // (nothing has analyzed the table yet), and the planner, guessing ~0.5 % of the rows,
        // chose a bitmap scan and an on-disk sort of the whole run: 1.9-2.5 s for 1M rows
        // against 0.47 s by the index (EXPLAIN ANALYZE in the note on issue 23). Set both ways:
        // a worker's slot connection keeps session settings from one read to the next.
        let sort = if self.id_order.is_some() { "off" } else { "on" };
        sql.push_str(&format!(", set_config('enable_sort', '{sort}', {local})"));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {sql}")));
        for value in &self.settings {
            query = query.bind(value);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }

    /// The number of rows the export will hold (after `apply`): the run's own count when
    /// nothing filters it (a scan of a million rows saved), else a count of the selection.
    pub async fn count(&self, conn: &mut PgConnection) -> Result<i64> {
        if self.whole_run {
            return Ok(sqlx::query_scalar(
                "SELECT row_count FROM runs WHERE id = current_setting('wharf.p0')::uuid",
            )
            .fetch_one(conn)
            .await?);
        }
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) {}",
            self.from_where
        )))
        .fetch_one(conn)
        .await?)
    }

    /// Every row of the run, unfiltered.
    pub fn is_whole_run(&self) -> bool {
        self.whole_run
    }

    /// The order when rows are sorted by `_id`.
    pub fn id_order(&self) -> Option<Order> {
        self.id_order
    }

    /// One page: at most `limit` rows from `seek` on. Only generated numbers join the SQL text.
    pub fn page_copy_sql(&self, seek: Seek, limit: u64) -> String {
        let desc = self.id_order == Some(Order::Desc);
        let (cond, offset) = match seek {
            Seek::Start => (String::new(), 0),
            Seek::FromId(id) => (
                format!(" AND _id {} {id}", if desc { "<=" } else { ">=" }),
                0,
            ),
            Seek::AfterId(id) => (format!(" AND _id {} {id}", if desc { "<" } else { ">" }), 0),
            Seek::Skip(n) => (String::new(), n),
        };
        format!(
            "COPY (SELECT {} {}{cond} ORDER BY {} LIMIT {limit} OFFSET {offset}) TO STDOUT (FORMAT binary)",
            self.select, self.from_where, self.order_by
        )
    }

    pub fn copy_sql(&self) -> String {
        format!(
            "COPY (SELECT {} {} ORDER BY {}) TO STDOUT (FORMAT binary)",
            self.select, self.from_where, self.order_by
        )
    }
}

/// A partition key's value as text, the same expression for grouping and for selecting one
/// partition: a string as it is, an integer or boolean as PostgreSQL writes it, a timestamp as
/// its UTC day (`2026-03-29`) or month (`2026-03`).
fn partition_expr(fields: &[Field], key: &PartitionKey) -> Result<String> {
    let i = fields
        .iter()
        .position(|f| f.name == key.field)
        .ok_or_else(|| Error::invalid(format!("partitionBy: unknown field \"{}\"", key.field)))?;
    let c = Field::column(i);
    Ok(match (fields[i].field_type, key.by) {
        (FieldType::Timestamp, Some(Granularity::Month)) => {
            format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM')")
        }
        (FieldType::Timestamp, _) => format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        (FieldType::String, _) => c,
        _ => format!("{c}::text"),
    })
}

/// How a dataset's rows are cut into files: at most `per_file` rows each (None: one file a
/// partition, or `files` files of even rows when nothing partitions).
pub struct Cutting<'a> {
    pub per_file: Option<i64>,
    pub files: usize,
    pub partition_by: &'a [PartitionKey],
}

impl Plan {
    /// Only the rows of one partition: `(field, value or None for null)` for each key.
    pub fn restrict(
        &mut self,
        fields: &[Field],
        keys: &[PartitionKey],
        values: &[(String, Option<String>)],
    ) -> Result<()> {
        for (key, (_, value)) in keys.iter().zip(values) {
            let expr = partition_expr(fields, key)?;
            let cond = match value {
                None => format!("{expr} IS NULL"),
                Some(v) => {
                    self.settings.push(v.clone());
                    format!(
                        "{expr} = current_setting('wharf.p{}')",
                        self.settings.len() - 1
                    )
                }
            };
            self.from_where.push_str(&format!(" AND {cond}"));
        }
        self.whole_run = self.whole_run && keys.is_empty();
        Ok(())
    }

    /// Counts the selection and cuts it into files in the export's order (one snapshot): by
    /// the `_id` each file starts at when sorted by `_id`, else by rows skipped; with
    /// partitions, each partition's files in turn, partitions in their values' order. More than
    /// `MAX_PARTITIONS` partitions is an error before anything is written.
    pub async fn cut_files(
        &self,
        conn: &mut PgConnection,
        fields: &[Field],
        cutting: &Cutting<'_>,
    ) -> Result<(i64, Vec<FileCut>)> {
        sqlx::Executor::execute(&mut *conn, "BEGIN").await?;
        let cut = self.cut_in_transaction(conn, fields, cutting).await;
        let end = sqlx::Executor::execute(&mut *conn, "ROLLBACK").await;
        let cut = cut?;
        end?;
        Ok(cut)
    }

    async fn cut_in_transaction(
        &self,
        conn: &mut PgConnection,
        fields: &[Field],
        cutting: &Cutting<'_>,
    ) -> Result<(i64, Vec<FileCut>)> {
        self.apply(conn).await?;
        let groups: Vec<(Vec<Option<String>>, i64)> = if cutting.partition_by.is_empty() {
            vec![(Vec::new(), self.count(conn).await?)]
        } else {
            self.partitions(conn, fields, cutting.partition_by).await?
        };
        let total: i64 = groups.iter().map(|(_, n)| n).sum();
        let per_file = match (cutting.per_file, cutting.partition_by.is_empty()) {
            (Some(n), _) => n,
            (None, true) => {
                let files = cutting.files.max(1) as i64;
                (total / files + i64::from(total % files != 0)).max(1)
            }
            (None, false) => i64::MAX,
        };
        let mut cuts = Vec::new();
        for (values, rows) in groups {
            let partition: Vec<(String, Option<String>)> = cutting
                .partition_by
                .iter()
                .map(|k| k.field.clone())
                .zip(values)
                .collect();
            let n = (rows / per_file + i64::from(rows % per_file != 0)).max(1);
            let starts = match (self.id_order, partition.is_empty() && n > 1) {
                (Some(_), true) => Some(self.id_starts(conn, per_file).await?),
                _ => None,
            };
            for k in 0..n {
                let start = match &starts {
                    Some(ids) => FileStart::FromId(ids.get(k as usize).copied().unwrap_or(0)),
                    None => FileStart::Skip((k * per_file) as u64),
                };
                cuts.push(FileCut {
                    seq: cuts.len() as i32,
                    start,
                    rows: (rows - k * per_file).min(per_file),
                    partition: partition.clone(),
                    number: k as i32,
                });
            }
        }
        Ok((total, cuts))
    }

    /// The `_id` every `per_file`-th row of the selection starts at, in the export's order.
    async fn id_starts(&self, conn: &mut PgConnection, per_file: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT _id FROM (SELECT _id, row_number() OVER (ORDER BY {}) - 1 AS rn {}) s
             WHERE rn % $1 = 0 ORDER BY rn",
            self.order_by, self.from_where
        )))
        .bind(per_file)
        .fetch_all(conn)
        .await?)
    }

    /// The selection's partitions, in their values' order, and the rows of each.
    async fn partitions(
        &self,
        conn: &mut PgConnection,
        fields: &[Field],
        keys: &[PartitionKey],
    ) -> Result<Vec<(Vec<Option<String>>, i64)>> {
        let exprs = keys
            .iter()
            .map(|k| partition_expr(fields, k))
            .collect::<Result<Vec<_>>>()?;
        let list = exprs.join(", ");
        let rows: Vec<(Vec<Option<String>>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT ARRAY[{list}]::text[], count(*) {} GROUP BY {list} ORDER BY {list} LIMIT $1",
            self.from_where
        )))
        .bind(MAX_PARTITIONS + 1)
        .fetch_all(conn)
        .await?;
        if rows.len() as i64 > MAX_PARTITIONS {
            return Err(Error::Refused {
                code: FailureCode::TooManyPartitions,
                message: format!(
                    "partitionBy: the rows hold more than {MAX_PARTITIONS} distinct partitions"
                ),
            });
        }
        Ok(rows)
    }
}

fn filter_sql(f: &Filter, i: usize, ty: FieldType, settings: &mut Vec<String>) -> Result<String> {
    let c = Field::column(i);
    let cast = if ty == FieldType::String {
        String::new()
    } else {
        format!("::{}", ty.sql_type())
    };
    let mut param = |v: String| {
        settings.push(v);
        format!("current_setting('wharf.p{}')", settings.len() - 1)
    };
    let value = || {
        f.value
            .clone()
            .ok_or_else(|| Error::invalid(format!("filter on \"{}\" needs a value", f.field)))
    };
    Ok(match f.op {
        Op::IsNull => format!("{c} IS NULL"),
        Op::NotNull => format!("{c} IS NOT NULL"),
        Op::Contains => format!("strpos({c}, {}) > 0", param(text_of(&value()?))),
        Op::In => {
            let items = value()?;
            let p = param(items.to_string());
            format!(
                "{c} = ANY(ARRAY(SELECT jsonb_array_elements_text({p}::jsonb))::{}[])",
                ty.sql_type()
            )
        }
        op => {
            let sym = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Gt => ">",
                Op::Gte => ">=",
                Op::Lt => "<",
                _ => "<=",
            };
            let text = if ty == FieldType::Json {
                value()?.to_string()
            } else {
                text_of(&value()?)
            };
            format!("{c} {sym} {}{cast}", param(text))
        }
    })
}

/// A scalar's text for a cast back in SQL (strings bare, the rest as JSON writes them).
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A read opened by `Plan::open_read`.
#[must_use = "a read in a transaction must be closed"]
pub struct OpenRead {
    /// The rows the read will return.
    pub total: i64,
    in_transaction: bool,
}

impl OpenRead {
    /// Ends a read that ran to its end (its transaction, if it had one), so the connection can
    /// serve the next one.
    pub async fn close(&self, conn: &mut PgConnection) -> Result<()> {
        if self.in_transaction {
            sqlx::Executor::execute(&mut *conn, "ROLLBACK").await?;
        }
        Ok(())
    }
}
