//! `WHARF_IMPORT_SCRATCH`: the disk one worker's imports may fill at once (each bundle as
//! downloaded, and the run files extracted from it). An import reserves what it will write
//! before writing it — the bundle's size, then the sum of its run files' declared sizes, which
//! extraction is held to byte for byte — and waits while other imports of the worker hold the
//! room; an import that could never fit is FAILED `BUNDLE_TOO_LARGE` before a byte is written.

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

    /// `reserve` from blocking code (an import's checks run on a blocking thread).
    pub fn reserve_blocking(&self, bytes: u64) -> Result<Room> {
        let units = self.units_for(bytes)?;
        let room = self.room.clone();
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| Error::Unexpected(e.into()))?;
        let permit = handle
            .block_on(room.acquire_many_owned(units))
            .map_err(|e| Error::Unexpected(e.into()))?;
        Ok(Room(permit))
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
        drop(a);
        assert!(budget.reserve(6 * UNIT).await.is_ok());
        assert!(matches!(
            budget.reserve(11 * UNIT).await,
            Err(Error::Refused {
                code: FailureCode::BundleTooLarge,
                ..
            })
        ));
    }
}
