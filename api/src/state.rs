use std::sync::Arc;

use sqlx::PgPool;
use wharf_shared::config::Settings;
use wharf_shared::queue::Redis;
use wharf_shared::store::ObjectStore;

/// What every handler may reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub redis: Redis,
    pub store: Arc<dyn ObjectStore>,
}
