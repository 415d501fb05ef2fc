//! The job ledger's vocabulary (table `jobs`, migration 20261204000002): the kinds of
//! background work, their states, the one trait every kind implements, and how a failed
//! attempt is told apart (worth another attempt, or final with a code). Claiming, leasing,
//! heartbeats, fenced completion, release with backoff and the reconciler are written once
//! (`repo::exports` ledger functions, `export::attempt`) for every kind: a kind decides only
//! what one attempt does.

use async_trait::async_trait;

use crate::domain::states::FailureCode;
use crate::error::{Error, ErrorCode};

/// A kind of job: the ledger's `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One run's rows into one file of a registered format, or, for a dataset, the plan that
    /// cuts them into parts and, once every part is done, the manifest.
    Export,
    /// Some files of a dataset (`parent_id` its export): claimed, leased and retried alone.
    Part,
    /// Definitions (and runs) as one ZIP.
    Bundle,
    /// An uploaded bundle made into workflows.
    Import,
    /// One event posted to one webhook endpoint (`webhook_deliveries` is its record). Claimed
    /// by endpoint (`repo::webhooks::claim_due`), never pushed to the queue.
    Webhook,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Export,
        Kind::Part,
        Kind::Bundle,
        Kind::Import,
        Kind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Export => "export",
            Kind::Part => "part",
            Kind::Bundle => "bundle",
            Kind::Import => "import",
            Kind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A job's state in the ledger. Its export's own status (QUEUED, IN_PROGRESS, COMPLETED, …)
/// changes in the same statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting, due at `due_at` (a retry's backoff) or now.
    Queued,
    /// Leased to one worker until `lease_expires_at`; every write is fenced on the lease.
    Running,
    /// A dataset's export waiting on its parts (no lease: the last part takes it again).
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "QUEUED",
            State::Running => "RUNNING",
            State::Waiting => "WAITING",
            State::Succeeded => "SUCCEEDED",
            State::Failed => "FAILED",
            State::Cancelled => "CANCELLED",
        }
    }
}

/// Why an attempt failed, as the ledger acts on it: another attempt after a backoff (while
/// attempts are left), or the job FAILED with a stable code and a message a user can act on
/// (internals stay in the logs, with `cause`).
#[derive(Debug)]
pub enum JobError {
    Retryable(Error),
    Fatal {
        code: FailureCode,
        message: String,
        cause: Error,
    },
}

impl From<Error> for JobError {
    fn from(e: Error) -> JobError {
        if is_transient(&e) {
            return JobError::Retryable(e);
        }
        let (code, message) = failure(&e);
        JobError::Fatal {
            code,
            message,
            cause: e,
        }
    }
}

/// The stable code and the message a job's status shows when `e` ends it.
pub fn failure(e: &Error) -> (FailureCode, String) {
    match e {
        Error::Invalid(m) => (FailureCode::InvalidRequest, m.clone()),
        Error::Refused { code, message } => (*code, message.clone()),
        Error::NotFound(what) => (FailureCode::NotFound, format!("{what} no longer exists")),
        Error::Storage(_) => (
            FailureCode::StorageError,
            "the object store failed; create the export again".into(),
        ),
        Error::Database(_) | Error::Unavailable(_) => (
            FailureCode::ServiceUnavailable,
            "a backing service was unavailable; create the export again".into(),
        ),
        _ => (
            FailureCode::Internal,
            "the export failed unexpectedly".into(),
        ),
    }
}

/// Worth another attempt: a backing service failed (down, out of connections, a lost race),
/// not the request.
fn is_transient(e: &Error) -> bool {
    matches!(e.code(), ErrorCode::ServiceUnavailable)
        || matches!(e, Error::Storage(s) if s.is_unavailable())
        || matches!(
            e,
            Error::Database(sqlx::Error::Io(_) | sqlx::Error::Protocol(_))
        )
}

/// One kind of background work. `run` is one attempt of a claimed job: it reads its input,
/// writes its output fenced on the claim, and ends in `Done`; an error it returns is
/// classified by `JobError::from` (or built as a `JobError` by the kind itself) and settled by
/// the ledger: released for a retry with backoff, or FAILED with its code.
///
/// Kinds: `export::RowsJob` (exports and bundles), `export::ImportJob`, and the worker's
/// `webhooks::Deliver`.
#[async_trait]
pub trait Job: Send + Sync {
    /// What every attempt of this kind needs from its process (pools, store, settings).
    type Context: Send + Sync;
    /// A job of this kind as its claim hands it out (with the lease that fences it).
    type Claimed: Send + Sync;
    /// What the slot that runs it keeps from one attempt to the next (a read connection).
    type Slot: Send;
    /// What a finished attempt reports.
    type Done: Send;
    fn kind(&self) -> Kind;
    async fn run(
        &self,
        ctx: &Self::Context,
        claimed: &Self::Claimed,
        slot: &mut Self::Slot,
    ) -> Result<Self::Done, JobError>;
}

impl From<JobError> for Error {
    fn from(e: JobError) -> Error {
        match e {
            JobError::Retryable(e) | JobError::Fatal { cause: e, .. } => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_retryable_or_fatal_with_a_code() {
        let busy = Error::Database(sqlx::Error::PoolTimedOut);
        assert!(matches!(JobError::from(busy), JobError::Retryable(_)));
        let bad = Error::invalid("filters[0]: unknown field");
        assert!(matches!(
            JobError::from(bad),
            JobError::Fatal {
                code: FailureCode::InvalidRequest,
                ..
            }
        ));
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
