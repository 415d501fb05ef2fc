use uuid::Uuid;

/// Wharf mints ids as UUIDv7 (time-ordered, so indexes stay append-mostly).
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}
