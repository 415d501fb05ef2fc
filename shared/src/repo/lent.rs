//! A pooled connection lent to a COPY: given back to the pool only when its COPY and its
//! transaction ended cleanly, closed otherwise.
//!
//! sqlx 0.9 does not count a COPY's closing ReadyForQuery among the replies a connection owes
//! (`copy_in_raw` and `copy_out_raw` send their statement without raising
//! `pending_ready_for_query_count`). A COPY that stops before its end — its stream or its
//! `PgCopyIn` dropped, the future holding it cancelled because a client went away or stalled
//! past the body timeout, a panic — leaves the connection one reply out of step: the drain when
//! it is released takes the COPY's ReadyForQuery for the rollback's, and from then on every
//! statement on that connection reads the reply to the one before it (another tenant's key or
//! workflow among them: issue 21). No drain can be trusted on such a connection, so it is never
//! reused: unless `commit` or `rollback` ran to completion, dropping this closes it, and the
//! server ends its backend when the socket goes (a COPY OUT stops at its next write).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::Result;

/// The numbers `end` asks back (distinct within the process).
static NONCE: AtomicI64 = AtomicI64::new(1);

pub struct CopyConnection {
    conn: PoolConnection<Postgres>,
    clean: bool,
}

impl CopyConnection {
    /// A connection of `pool` with a transaction begun on it.
    pub async fn begin(pool: &PgPool) -> Result<Self> {
        let mut lent = CopyConnection {
            conn: pool.acquire().await?,
            clean: false,
        };
        sqlx::raw_sql("BEGIN").execute(&mut *lent.conn).await?;
        Ok(lent)
    }

    pub async fn commit(self) -> Result<()> {
        self.end("COMMIT").await
    }

    pub async fn rollback(self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    /// Ends the transaction and proves the connection in step in the same round trip: the
    /// statement is followed by a `SELECT` of a number never asked before, and the connection
    /// goes back to the pool only if that very number comes back (a connection one reply
    /// behind would hand back another statement's answer).
    async fn end(mut self, statement: &'static str) -> Result<()> {
        use sqlx::Row;
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        let sql = format!("{statement}; SELECT {nonce}::int8");
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *self.conn)
            .await?;
        let echoed = match rows.as_slice() {
            [row] => row.try_get::<i64, _>(0).ok(),
            _ => None,
        };
        self.clean = echoed == Some(nonce);
        if !self.clean {
            tracing::error!(
                expected = nonce,
                ?echoed,
                "a connection answered out of step after a COPY; closing it"
            );
        }
        Ok(())
    }
}

impl Deref for CopyConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for CopyConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for CopyConnection {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}
