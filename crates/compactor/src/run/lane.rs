//! Lanes: where async attempts get their first poll. The runner hands the
//! attempts it starts in one turn to lanes of up to [`LANE_SIZE`], each a
//! tokio task that begins its attempts one after another and polls each
//! once, right there. Most cleanups end in that first poll (a flush, a
//! close, a drop), and then cost no task of their own; one that returns
//! `Pending` goes on on a task of its own, which the runner can abort.
//!
//! A lane never keeps time: the runner does. A first poll that holds its
//! thread holds its lane, so the runner gives the rest of a lane's queue a
//! fresh task when the lane has taken nothing new for [`LANE_CHECK`] or the
//! held attempt is stopped; the held one is then reported as its end comes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::task::AbortHandle;

use super::attempt::{ACTIVE, Attempt, Chain, End, Reply, drop_contained};

/// How many attempts one lane takes.
pub(super) const LANE_SIZE: usize = 64;

/// How often the runner looks for lanes that took nothing new.
pub(super) const LANE_CHECK: Duration = Duration::from_millis(2);

/// A queue of attempts to begin, and the one being begun.
pub(crate) struct Lane {
    queue: Mutex<VecDeque<(Attempt, Reply)>>,
    /// The attempt in its first poll here (see [`key`]), or 0.
    current: AtomicU64,
    /// How many attempts the lane has taken so far.
    taken: AtomicU64,
}

/// A task's attempt as one number: never 0.
pub(super) fn key(index: u32, attempt: u32) -> u64 {
    (u64::from(index) + 1) << 32 | u64::from(attempt)
}

/// Per task, between its lane and the runner: where an attempt that went
/// on on a task of its own can be aborted, and whether the runner stopped
/// one before that.
#[derive(Default)]
pub(crate) struct LaneCell {
    /// The attempt the runner stopped while it had no task of its own.
    stopped: u32,
    abort: Option<(u32, AbortHandle)>,
}

impl LaneCell {
    fn lock(cell: &Mutex<LaneCell>) -> std::sync::MutexGuard<'_, LaneCell> {
        cell.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops `attempt` (the runner's side): aborted if it has a task of its
    /// own, else marked so its lane drops it rather than go on with it.
    pub(super) fn stop(cell: &Mutex<LaneCell>, attempt: u32) {
        let mut cell = LaneCell::lock(cell);
        match cell.abort.take() {
            Some((number, abort)) if number == attempt => abort.abort(),
            _ => cell.stopped = attempt,
        }
    }

    /// Whether the runner stopped `attempt` before it had a task.
    fn is_stopped(cell: &Mutex<LaneCell>, attempt: u32) -> bool {
        LaneCell::lock(cell).stopped == attempt
    }

    /// `attempt` goes on on a task of its own: spawned by `go`, unless the
    /// runner stopped it meanwhile (then `None` comes back to drop).
    fn go_on<T>(
        cell: &Mutex<LaneCell>,
        attempt: u32,
        it: T,
        go: impl FnOnce(T) -> AbortHandle,
    ) -> Option<T> {
        let mut cell = LaneCell::lock(cell);
        if cell.stopped == attempt {
            return Some(it);
        }
        cell.abort = Some((attempt, go(it)));
        None
    }
}

impl Lane {
    pub(super) fn new() -> Arc<Lane> {
        Arc::new(Lane {
            queue: Mutex::new(VecDeque::new()),
            current: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        })
    }

    /// Adds an attempt to begin; returns how many are queued.
    pub(super) fn push(&self, attempt: Attempt, reply: Reply) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push_back((attempt, reply));
        queue.len()
    }

    /// The attempt in its first poll here, as a [`key`] (0 for none).
    pub(super) fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// Whether the lane has nothing left to begin.
    pub(super) fn is_idle(&self) -> bool {
        self.current() == 0
            && self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    /// Begins the lane's attempts on a task (another one, for a lane that
    /// holds its thread: both take from the same queue).
    pub(super) fn spawn(self: &Arc<Self>, chain: Chain) {
        let lane = self.clone();
        drop(tokio::spawn(ACTIVE.scope(chain, async move {
            poll_fn(|cx| {
                lane.work(cx);
                Poll::Ready(())
            })
            .await;
        })));
    }

    fn next(&self) -> Option<(Attempt, Reply)> {
        let next = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        self.taken.fetch_add(1, Ordering::AcqRel);
        next
    }

    /// Begins every attempt of the queue, each polled once here.
    fn work(&self, cx: &mut std::task::Context<'_>) {
        while let Some((attempt, reply)) = self.next() {
            let (index, number) = (attempt.index, attempt.number);
            let ctx = attempt.ctx.clone();
            let cell = &ctx.progress[index as usize].lane;
            if LaneCell::is_stopped(cell, number) {
                reply.send(End::Lost("stopped before it began"), None);
                continue;
            }
            let Ok(held) = attempt.slot.clone().try_lock_owned() else {
                // A stopped attempt still holds the cleanup: this one waits
                // for it on a task of its own.
                if let Some((attempt, reply)) =
                    LaneCell::go_on(cell, number, (attempt, reply), |(a, r)| a.spawn_async(r))
                {
                    drop((attempt, reply));
                }
                continue;
            };
            self.current.store(key(index, number), Ordering::Release);
            let span = attempt.span.clone();
            let entered = (!span.is_disabled()).then(|| span.enter());
            if let Some(mut running) = attempt.begin(held, reply) {
                match running.poll(cx) {
                    Poll::Ready(end) => running.finish(end),
                    Poll::Pending => {
                        if let Some(stopped) = LaneCell::go_on(cell, number, running, |r| r.spawn())
                        {
                            // Its `Drop`s are the user's: contained.
                            let _ = drop_contained(stopped);
                        }
                    }
                }
            }
            drop(entered);
            self.current.store(0, Ordering::Release);
        }
    }
}
