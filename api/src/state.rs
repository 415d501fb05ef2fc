use std::sync::Arc;

use sqlx::PgPool;
use wharf_shared::config::Settings;
use wharf_shared::queue::JobQueue;
use wharf_shared::store::ObjectStore;

use crate::limits::{AuthFailures, IngestSlots, KeyLimiter};

/// What every handler may reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// The audit log's writer (`app::audit`).
    pub audit: crate::app::audit::AuditLog,
    pub pool: PgPool,
    /// Run uploads hold at most a few of the pool's connections, so reads and status never
    /// wait behind them.
    pub ingest_gate: wharf_shared::repo::IngestGate,
    pub queue: Arc<dyn JobQueue>,
    pub store: Arc<dyn ObjectStore>,
    pub limiter: KeyLimiter,
    /// Keys verified recently (revocations announced by PostgreSQL).
    pub keys: Arc<wharf_shared::auth::KeyCache>,
    pub ingest_slots: IngestSlots,
    /// `WHARF_PROJECT_READS`: data reads of one project at once.
    pub read_slots: IngestSlots,
    /// Long polls (`?wait=`) of one project open at once.
    pub long_polls: IngestSlots,
    /// `WHARF_AUTH_FAILURES`: wrong credentials per client address.
    pub auth_failures: AuthFailures,
    /// Keyset paging: where recent pages of filtered reads ended.
    pub page_keys: crate::compat::kadoa::PageKeys,
    pub metrics: Arc<wharf_shared::metrics::Metrics>,
    /// Long polls waiting for exports to finish.
    pub waiters: Arc<crate::waiters::Waiters>,
}
