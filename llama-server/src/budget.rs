//! The byte budget of large answers (collector configs, lists): every such
//! answer reserves its size before it is sent and releases it when the last
//! copy of its bytes is freed, i.e. once the connection has written it (or
//! closed). When the budget is spent the request gets 503 instead of the
//! server growing without bound under many slow readers.

use std::sync::Arc;

use axum::{body::Bytes, http::StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{error::ApiError, throttle::Throttle};

/// The unit of the budget: the semaphore counts permits in `u32`s.
const UNIT: usize = 1024;

/// Bytes of answers in flight, bounded.
#[derive(Debug)]
pub struct RenderBudget {
    permits: Arc<Semaphore>,
    units: u32,
    log: Throttle,
}

/// Part of the budget, held by an answer's bytes.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

/// Bytes that give their reservation back when freed.
struct Held {
    body: Vec<u8>,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl RenderBudget {
    /// A budget of `max_bytes` (rounded up to whole KiB).
    pub fn new(max_bytes: usize) -> Self {
        let units = max_bytes
            .div_ceil(UNIT)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        RenderBudget {
            permits: Arc::new(Semaphore::new(units)),
            units: units as u32,
            log: Throttle::default(),
        }
    }

    /// Reserves `len` bytes, or refuses with 503. An answer larger than the
    /// whole budget takes all of it (served alone rather than never).
    pub fn reserve(&self, len: usize) -> Result<Reservation, ApiError> {
        let units = len.div_ceil(UNIT).clamp(1, self.units as usize) as u32;
        match self.permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(Reservation { _permit: permit }),
            Err(_) => {
                if self.log.ready() {
                    tracing::warn!(
                        max_bytes = self.units as usize * UNIT,
                        "render budget spent: configs and lists being sent fill max_render_bytes; refusing with 503 (logged at most once a minute)"
                    );
                }
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many large answers being sent at once (limit max_render_bytes)",
                )
                .with_retry_after(1))
            }
        }
    }

    /// Bytes currently reserved.
    pub fn in_use(&self) -> usize {
        (self.units as usize - self.permits.available_permits()) * UNIT
    }
}

impl Reservation {
    /// The answer's bytes, holding this reservation until freed.
    pub fn body(self, body: impl Into<Vec<u8>>) -> Bytes {
        Bytes::from_owner(Held {
            body: body.into(),
            _reservation: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_hold_their_bytes_until_freed() {
        let b = RenderBudget::new(10 * UNIT);
        let one = b.reserve(6 * UNIT).unwrap().body(vec![0u8; 6 * UNIT]);
        assert_eq!(b.in_use(), 6 * UNIT);
        let err = b.reserve(5 * UNIT).unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        let copy = one.clone();
        drop(one);
        assert_eq!(b.in_use(), 6 * UNIT, "a copy still holds it");
        drop(copy);
        assert_eq!(b.in_use(), 0);
        // Larger than the whole budget: served alone.
        let big = b.reserve(100 * UNIT).unwrap();
        assert!(b.reserve(1).is_err());
        drop(big);
        assert!(b.reserve(1).is_ok());
    }
}
