//! The audit log's writer: events recorded by the routes go into a bounded buffer and are
//! written in batches (every `FLUSH_EVERY` or `BATCH` events) by one task, off the request's
//! path. A full buffer makes the recording request wait for room (bounded memory, nothing
//! dropped); a clean stop flushes what is buffered before the process ends
//! (`Application::run_until_stopped`). A batch PostgreSQL refuses is retried, never dropped
//! while the process lives.

use std::time::Duration;

use actix_web::HttpRequest;
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use wharf_shared::auth::Principal;
use wharf_shared::repo::audit::{self, AuditEvent};

/// Events buffered at most; recording waits beyond it.
const BUFFER: usize = 10_000;
/// Events per INSERT at most.
const BATCH: usize = 500;
/// How long an event may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Event(Box<AuditEvent>),
    /// Write everything received so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// The handle routes record through (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl AuditLog {
    /// Starts the writer task on `pool`.
    pub fn start(pool: PgPool) -> AuditLog {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(write(pool, rx));
        AuditLog { tx }
    }

    /// Records an event of what the request did. With room in the buffer, at once; when it is
    /// full the request waits for room (backpressure), but through a task of its own, so a
    /// client that drops its request meanwhile cannot drop the event of what already happened.
    pub async fn record(&self, event: AuditEvent) {
        let msg = match self.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer gone; an event was not recorded");
                return;
            }
        };
        let tx = self.tx.clone();
        tokio::spawn(async move { tx.send(msg).await.ok() })
            .await
            .ok();
    }

    /// Records without waiting (from a `Drop`): into the buffer at once when it has room, else
    /// by a task that waits for room.
    pub fn record_now(&self, event: AuditEvent) {
        if let Err(mpsc::error::TrySendError::Full(msg)) =
            self.tx.try_send(Msg::Event(Box::new(event)))
        {
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(msg).await.ok() });
        }
    }

    /// Writes every buffered event (a clean stop; tests).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            wait.await.ok();
        }
    }
}

async fn write(pool: PgPool, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tick.tick() => {
                store(&pool, &mut batch).await;
                continue;
            }
        };
        match msg {
            Some(Msg::Event(e)) => {
                batch.push(*e);
                if batch.len() >= BATCH {
                    store(&pool, &mut batch).await;
                }
            }
            Some(Msg::Flush(done)) => {
                store(&pool, &mut batch).await;
                done.send(()).ok();
            }
            None => {
                store(&pool, &mut batch).await;
                return;
            }
        }
    }
}

/// Writes the batch, retrying with backoff until PostgreSQL takes it.
async fn store(pool: &PgPool, batch: &mut Vec<AuditEvent>) {
    let mut delay = Duration::from_millis(100);
    while !batch.is_empty() {
        match audit::insert(pool, batch).await {
            Ok(()) => batch.clear(),
            Err(e) => {
                tracing::warn!(error = %e, events = batch.len(), "audit events not written yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A new event of `kind` in `project_id` by `actor` from the request's client.
pub fn event(req: &HttpRequest, project_id: Uuid, kind: &str, actor: &str) -> AuditEvent {
    By {
        project_id,
        actor: actor.to_string(),
        client: req.peer_addr().map(|a| a.ip().to_string()),
    }
    .event(kind)
}

/// An event by the key of `principal`.
pub fn by_key(req: &HttpRequest, principal: &Principal, kind: &str) -> AuditEvent {
    By::key(req, principal).event(kind)
}

/// A download's event, recorded when its body is done (sent in full, or cut short): with the
/// bytes that went out.
pub struct Sent {
    log: AuditLog,
    event: Option<AuditEvent>,
    bytes: u64,
}

impl Sent {
    pub fn new(log: AuditLog, event: AuditEvent) -> Sent {
        Sent {
            log,
            event: Some(event),
            bytes: 0,
        }
    }

    /// Counts bytes that went out (a method, so a closure holds the whole `Sent`, and its
    /// drop is the body's).
    pub fn add(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some(mut e) = self.event.take() {
            e.bytes = Some(i64::try_from(self.bytes).unwrap_or(i64::MAX));
            self.log.record_now(e);
        }
    }
}

/// Who a request acts as, for the events it causes: the project, the key's prefix, the client.
#[derive(Debug, Clone)]
pub struct By {
    pub project_id: Uuid,
    pub actor: String,
    pub client: Option<String>,
}

impl By {
    pub fn key(req: &HttpRequest, principal: &Principal) -> By {
        By {
            project_id: principal.project_id,
            actor: principal.key_prefix.clone(),
            client: req.peer_addr().map(|a| a.ip().to_string()),
        }
    }

    pub fn event(&self, kind: &str) -> AuditEvent {
        AuditEvent {
            id: Uuid::now_v7(),
            project_id: self.project_id,
            at: Utc::now(),
            kind: kind.to_string(),
            actor: self.actor.clone(),
            export_id: None,
            route: None,
            bytes: None,
            range: None,
            client: self.client.clone(),
            detail: sqlx::types::Json(serde_json::json!({})),
        }
    }
}

/// A new export, bundle or import, created by `by`.
pub async fn created(log: &AuditLog, by: &By, rec: &wharf_shared::repo::exports::ExportRecord) {
    let kind = match rec.kind {
        wharf_shared::domain::states::JobKind::Import => "import.created",
        wharf_shared::domain::states::JobKind::Export => "export.created",
    };
    let mut e = by.event(kind);
    e.export_id = Some(rec.id);
    e.detail = sqlx::types::Json(serde_json::json!({
        "format": rec.format, "scope": rec.scope.as_str(), "workflowId": rec.workflow_id,
    }));
    log.record(e).await;
}

/// Something of the project's changed by `principal` (a key, a webhook, a cancel): `detail`
/// names it.
pub async fn changed(
    state: &crate::state::AppState,
    req: &HttpRequest,
    principal: &Principal,
    kind: &str,
    detail: serde_json::Value,
) {
    let mut e = By::key(req, principal).event(kind);
    e.detail = sqlx::types::Json(detail);
    state.audit.record(e).await;
}
