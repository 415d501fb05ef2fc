//! `WHARF_IMPORT_SCRATCH`: the disk one worker's imports may fill at once (each bundle as
//! downloaded, and the run files extracted from it). An import reserves what it will write
//! before writing it — the bundle's size (waiting while other imports hold the room), then the
//! sum of its run files' declared sizes, which extraction is held to byte for byte (taken at
//! once or the attempt is retried later, so no import waits while holding room); an import that
//! could never fit is FAILED `BUNDLE_TOO_LARGE` before a byte is written.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::states::FailureCode;
use crate::error::{Error, Result};

/// Reservations are counted in MiB (a semaphore's permits), rounded up.
const UNIT: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct ScratchBudget {
    room: Arc<Semaphore>,
    units: u32,
}

/// Room held on the worker's scratch disk until dropped.
#[derive(Debug)]
pub struct Room(#[allow(dead_code)] OwnedSemaphorePermit);

impl ScratchBudget {
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        ScratchBudget {
            room: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    fn units_for(&self, bytes: u64) -> Result<u32> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units > u64::from(self.units) {
            return Err(Error::Refused {
                code: FailureCode::BundleTooLarge,
                message: format!(
                    "the import needs {bytes} bytes of scratch space; a worker has {} \
                     (WHARF_IMPORT_SCRATCH)",
                    u64::from(self.units) * UNIT
                ),
            });
        }
        Ok(units as u32)
    }

    /// Holds room for `bytes`, waiting while other imports hold it.
    pub async fn reserve(&self, bytes: u64) -> Result<Room> {
        let units = self.units_for(bytes)?;
        let permit = self
            .room
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|e| Error::Unexpected(e.into()))?;
        Ok(Room(permit))
    }

    /// Room for `bytes` now, or not at all: for an import that already holds room (its bundle),
    /// so that two imports never wait on each other while each holds a part. No room now is a
    /// transient failure (the job gives its claim back and is retried later, holding nothing).
    pub fn try_reserve(&self, bytes: u64) -> Result<Room> {
        let units = self.units_for(bytes)?;
        match self.room.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(Room(permit)),
            Err(_) => Err(Error::Unavailable(
                "room on this worker's import scratch space (WHARF_IMPORT_SCRATCH)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_is_held_and_given_back_and_too_much_is_refused() {
        let budget = ScratchBudget::new(10 * UNIT);
        let a = budget.reserve(6 * UNIT).await;
        assert!(a.is_ok());
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budget.reserve(6 * UNIT),
        )
        .await;
        assert!(waiting.is_err(), "the second import waits for room");
        assert!(matches!(
            budget.try_reserve(6 * UNIT),
            Err(Error::Unavailable(_))
        ));
        drop(a);
        assert!(budget.try_reserve(6 * UNIT).is_ok());
        assert!(matches!(
            budget.reserve(11 * UNIT).await,
            Err(Error::Refused {
                code: FailureCode::BundleTooLarge,
                ..
            })
        ));
    }
}
