//! The tasks' cleanups between their attempts, one place per task for the
//! whole run (allocated once, with the run's shared state). An attempt
//! takes its task's cleanup out for as long as it runs and puts it back
//! when it is done (empty, if no attempt follows), so a cleanup never runs
//! twice at once: a retry after an attempt that was stopped but has not let
//! go yet (its code holds its thread) waits for it, as does the runner's
//! disposal of a task's cleanup.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::task::cleanup::BoxCleanup;

/// One task's place.
#[derive(Default)]
struct Place {
    cleanup: Option<BoxCleanup>,
    /// An attempt (or the disposal) has it out.
    out: bool,
    /// Those waiting to take it out, woken as it is put back: only this
    /// place's (a retry, the disposal), so a hundred thousand disposals
    /// at a deadline each wake once, not each on every return.
    waiters: Vec<Waker>,
}

pub(crate) struct Slots {
    places: Box<[Mutex<Place>]>,
}

impl Slots {
    pub(crate) fn new(tasks: usize) -> Slots {
        Slots {
            places: (0..tasks).map(|_| Mutex::default()).collect(),
        }
    }

    fn place(&self, task: u32) -> MutexGuard<'_, Place> {
        self.places[task as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a task's cleanup in its place, as the task starts (or, never
    /// started, as it is let go of).
    pub(crate) fn fill(&self, task: u32, cleanup: BoxCleanup) {
        self.place(task).cleanup = Some(cleanup);
    }

    /// Takes the task's cleanup out (`None` inside: gone already), unless
    /// an attempt has it out: then `None`.
    pub(crate) fn try_take(&self, task: u32) -> Option<Option<BoxCleanup>> {
        let mut place = self.place(task);
        if place.out {
            return None;
        }
        place.out = true;
        Some(place.cleanup.take())
    }

    /// Takes the task's cleanup out, once no attempt has it. A waiter
    /// dropped while it waits leaves only a waker that wakes nobody.
    pub(crate) async fn take(&self, task: u32) -> Option<BoxCleanup> {
        std::future::poll_fn(|cx| {
            let mut place = self.place(task);
            if !place.out {
                place.out = true;
                return Poll::Ready(place.cleanup.take());
            }
            if !place.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                place.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// [`take`](Self::take), on a thread that may block (a blocking
    /// cleanup's own): looks again every millisecond.
    pub(crate) fn take_blocking(&self, task: u32) -> Option<BoxCleanup> {
        loop {
            if let Some(cleanup) = self.try_take(task) {
                return cleanup;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Puts the cleanup an attempt had out back (`None`: it is gone).
    pub(crate) fn put_back(&self, task: u32, cleanup: Option<BoxCleanup>) {
        let waiters = {
            let mut place = self.place(task);
            place.cleanup = cleanup;
            place.out = false;
            std::mem::take(&mut place.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Whether the task's cleanup may still be there: out with an attempt,
    /// or in its place.
    pub(crate) fn holds(&self, task: u32) -> bool {
        let place = self.place(task);
        place.out || place.cleanup.is_some()
    }
}
