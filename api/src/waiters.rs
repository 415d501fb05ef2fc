//! Long polls: one `LISTEN wharf_export_done` per API process fans each finished export out to
//! the requests waiting on it, so a thousand waiting clients cost a map entry each, not a query
//! per tick. When the listener is down (reconnecting), waiters fall back to reading the record
//! every `FALLBACK_POLL`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use uuid::Uuid;
use wharf_shared::repo::exports::ExportRecord;

pub const CHANNEL: &str = "wharf_export_done";
/// How often a waiter reads the record itself while the listener is down.
pub const FALLBACK_POLL: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Waiters {
    /// Per export: its Notify and how many requests wait on it.
    map: Mutex<HashMap<Uuid, (Arc<Notify>, usize)>>,
    live: AtomicBool,
    /// Exports in a final status, as last read: they change only through a status change (to
    /// EXPIRED), which the listener hears and evicts. Used only while the listener is live.
    finished: Mutex<HashMap<Uuid, ExportRecord>>,
    /// Exports still QUEUED or IN_PROGRESS, as last read with their queue position and ETA:
    /// a poll within `RUNNING_TTL` of the read is answered from memory (a poller sees progress
    /// at most that late); a final status change evicts the entry at once, as for `finished`.
    running: Mutex<HashMap<Uuid, Running>>,
}

/// A running export's status as last read: the record, its queue position and ETA.
#[derive(Clone)]
pub struct Running {
    pub rec: ExportRecord,
    pub position: Option<i64>,
    pub eta: Option<f64>,
    read_at: std::time::Instant,
}

/// How long a running export's status is answered from memory: pollers of 64 running exports
/// made 2,600 requests/s at 2-3 queries each; this makes it at most 10 reads a second an
/// export, while a poller still sees a change within a tenth of a second (a worker writes its
/// progress once a second; a test's, every 100 ms).
pub const RUNNING_TTL: Duration = Duration::from_millis(100);

/// Finished exports kept in memory at most (a poll of another is one query, as before).
pub const FINISHED_CACHE: usize = 10_000;

/// One request's registration; removed from the map with the last one.
pub struct Watch {
    waiters: Arc<Waiters>,
    id: Uuid,
    pub notify: Arc<Notify>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.map.lock()
            && let Some((_, n)) = map.get_mut(&self.id)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl Waiters {
    pub fn new() -> Arc<Self> {
        Arc::new(Waiters::default())
    }

    /// The listener is connected: notifications will arrive.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn watch(self: &Arc<Self>, id: Uuid) -> Watch {
        let notify = match self.map.lock() {
            Ok(mut map) => {
                let entry = map
                    .entry(id)
                    .or_insert_with(|| (Arc::new(Notify::new()), 0));
                entry.1 += 1;
                entry.0.clone()
            }
            Err(_) => Arc::new(Notify::new()),
        };
        Watch {
            waiters: self.clone(),
            id,
            notify,
        }
    }

    /// A finished export as last read, while notifications flow (else None: read it).
    pub fn finished(&self, id: Uuid) -> Option<ExportRecord> {
        if !self.is_live() {
            return None;
        }
        self.finished.lock().ok()?.get(&id).cloned()
    }

    /// Keeps a record read from the database if it is final (not QUEUED or IN_PROGRESS).
    pub fn remember(&self, rec: &ExportRecord) {
        if !self.is_live() || rec.status.is_active() {
            return;
        }
        if let Ok(mut m) = self.finished.lock() {
            if m.len() >= FINISHED_CACHE {
                m.clear();
            }
            m.insert(rec.id, rec.clone());
        }
    }

    /// A running export's status read within `RUNNING_TTL`, while notifications flow.
    pub fn running(&self, id: Uuid) -> Option<Running> {
        if !self.is_live() {
            return None;
        }
        let m = self.running.lock().ok()?;
        m.get(&id)
            .filter(|r| r.read_at.elapsed() < RUNNING_TTL)
            .cloned()
    }

    /// Keeps a running export's status as just read (`remember` keeps finished ones).
    pub fn remember_running(&self, rec: &ExportRecord, position: Option<i64>, eta: Option<f64>) {
        if !self.is_live() || !rec.status.is_active() {
            return;
        }
        if let Ok(mut m) = self.running.lock() {
            if m.len() >= FINISHED_CACHE {
                m.retain(|_, r| r.read_at.elapsed() < RUNNING_TTL);
                if m.len() >= FINISHED_CACHE {
                    m.clear();
                }
            }
            m.insert(
                rec.id,
                Running {
                    rec: rec.clone(),
                    position,
                    eta,
                    read_at: std::time::Instant::now(),
                },
            );
        }
    }

    /// Forgets what this process read of an export (it changed here: a cancel).
    pub fn forget(&self, id: Uuid) {
        if let Ok(mut m) = self.running.lock() {
            m.remove(&id);
        }
        if let Ok(mut m) = self.finished.lock() {
            m.remove(&id);
        }
    }

    fn wake(&self, id: Uuid) {
        self.forget(id);
        if let Ok(map) = self.map.lock()
            && let Some((n, _)) = map.get(&id)
        {
            n.notify_waiters();
        }
    }

    fn wake_all(&self) {
        if let Ok(mut m) = self.finished.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.running.lock() {
            m.clear();
        }
        if let Ok(map) = self.map.lock() {
            for (n, _) in map.values() {
                n.notify_waiters();
            }
        }
    }

    /// Listens for finished exports for as long as the process runs, reconnecting after a loss
    /// (waking every waiter then, so none waits on a notification that may have been missed).
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            let listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => l.listen(CHANNEL).await.map(|()| l),
                Err(e) => Err(e),
            };
            match listener {
                Ok(mut l) => {
                    self.live.store(true, Ordering::Release);
                    while let Ok(n) = l.recv().await {
                        if let Ok(id) = Uuid::parse_str(n.payload()) {
                            self.wake(id);
                        }
                    }
                    tracing::warn!("lost the finished-export notifications; reconnecting");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for finished exports yet; retrying")
                }
            }
            self.live.store(false, Ordering::Release);
            self.wake_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
