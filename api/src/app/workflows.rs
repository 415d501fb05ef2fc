//! Finding a workflow of the caller's project.

use wharf_shared::Error;
use wharf_shared::repo::workflows::{self, Workflow};

use crate::auth::parse_id;
use crate::error::ApiError;
use crate::state::AppState;

/// Finds a workflow of the caller's project; another project's is 404, as is an unknown one.
pub async fn find(
    state: &AppState,
    project_id: uuid::Uuid,
    raw_id: &str,
) -> Result<Workflow, ApiError> {
    let id = parse_id("workflowId", raw_id)?;
    Ok(workflows::get(&state.pool, project_id, id)
        .await?
        .ok_or(Error::NotFound("workflow"))?)
}
