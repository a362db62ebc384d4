//! How many request body bytes the hub holds while reading them, across
//! all requests at once (`--max-inflight-body`).
//!
//! `--max-body` bounds one body; without a shared bound, many slow bodies
//! read at once could still take all the memory there is. A request holds
//! a [`BodyReservation`] for the buffer its body is read into, taken before
//! the buffer grows; one that cannot get it is refused (503) instead of
//! waiting, since waiting would hold its connection and its share anyway.
//! The reservation is given back when it is dropped, whatever ended the
//! read: done, refused or the client gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The shared budget of body bytes being read.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    max: usize,
    held: Arc<AtomicUsize>,
}

/// The bytes one request's body buffer holds of the budget.
#[derive(Debug)]
pub struct BodyReservation {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> BodyBudget {
        BodyBudget {
            max,
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Bytes held by all requests now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A reservation of `bytes`, or `None` when the budget has no room.
    pub fn reserve(&self, bytes: usize) -> Option<BodyReservation> {
        let mut reservation = BodyReservation {
            held: self.held.clone(),
            bytes: 0,
        };
        self.grow(&mut reservation, bytes).then_some(reservation)
    }

    /// Grows `reservation` to `bytes` in all; false (and unchanged) when
    /// the budget has no room.
    pub fn grow(&self, reservation: &mut BodyReservation, bytes: usize) -> bool {
        let more = bytes.saturating_sub(reservation.bytes);
        if more == 0 {
            return true;
        }
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|total| *total <= self.max)
            });
        if taken.is_ok() {
            reservation.bytes = bytes;
        }
        taken.is_ok()
    }
}

impl BodyReservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_are_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve(60);
        assert!(a.is_some());
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40);
        assert!(b.is_some());
        assert_eq!(budget.held(), 100);
        if let Some(a) = a.as_mut() {
            assert!(!budget.grow(a, 61), "no room left");
            assert_eq!(a.bytes(), 60);
            assert!(budget.grow(a, 10), "shrinking is not growing");
        }
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        assert_eq!(budget.held(), 0);
        assert!(budget.reserve(100).is_some());
        assert_eq!(budget.held(), 0);
    }
}
