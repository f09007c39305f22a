//! Lanes: where async attempts get their first poll. The runner hands the
//! attempts it starts in one turn to lanes of up to [`LANE_SIZE`], each a
//! tokio task that begins its attempts one after another and polls each
//! once, right there. Most cleanups end in that first poll (a flush, a
//! close, a drop), and then cost no task of their own; one that returns
//! `Pending` goes on on a task of its own, which the runner can abort.
//!
//! A lane never keeps time: the runner does. A lane yields after each
//! attempt, so what that attempt woke (the runner, told of its end; its own
//! task, for one still pending), which tokio runs next on the same worker,
//! never waits behind the next first poll. A first poll that holds its
//! thread holds its lane, so the runner gives the rest of the lane's queue a
//! fresh task once that poll is seen under way at two of its looks
//! [`LANE_CHECK`] apart, or at once when
//! the held attempt is stopped; the held one is reported as its end comes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::attempt::{Attempt, End};
use super::contain::drop_contained;
use super::membership::{ACTIVE, Chain};
use super::scheduler::Runner;
use super::state::Stopper;

/// How many attempts one lane takes.
pub(super) const LANE_SIZE: usize = 64;

/// How often the runner looks at the lanes with attempts waiting: a first
/// poll under way at two looks in a row holds its thread.
pub(super) const LANE_CHECK: Duration = Duration::from_millis(1);

/// A queue of attempts to begin, and the one being begun.
pub(crate) struct Lane {
    /// The run its attempts are of (one handle for all of them).
    ctx: Arc<super::RunContext>,
    queue: Mutex<VecDeque<Attempt>>,
    /// The queue's length, kept beside it for reading without the lock.
    queued: AtomicUsize,
    /// The attempt in its first poll here (see [`key`]), or 0.
    current: AtomicU64,
    /// In the runner's list of lanes it looks at for a take-over.
    watched: AtomicBool,
}

std::thread_local! {
    /// The lane whose attempt this thread is running, if any.
    static WORKING: std::cell::RefCell<Option<Arc<Lane>>> = const { std::cell::RefCell::new(None) };
}

/// The lane whose attempt this thread is running, if any: where the tasks
/// that attempt's end frees begin.
pub(super) fn current() -> Option<Arc<Lane>> {
    WORKING.with(|w| w.borrow().clone())
}

/// A task's attempt as one number: never 0.
pub(super) fn key(index: u32, attempt: u32) -> u64 {
    (u64::from(index) + 1) << 32 | u64::from(attempt)
}

/// Per task, between its lane and the runner: where an attempt that went
/// on on a task of its own can be aborted, whether the runner stopped one
/// before that, and which attempt its lane has begun.
///
/// The runner's stop and the lane's begin of one attempt race: `stopped`
/// and `begun` are one word, changed by one atomic step each, so exactly
/// one of them comes first (a begun attempt is stopped as running; a
/// stopped one is never begun). The abort handle is set and used under its
/// lock, after `stopped` is read or written.
#[derive(Default)]
pub(crate) struct LaneCell {
    /// `begun << 32 | stopped`: the latest attempt its lane began (called
    /// the closure of), and the latest the runner stopped (that one and
    /// every earlier one are dropped, never begun or gone on with).
    state: AtomicU64,
    abort: Mutex<Option<(u32, AbortHandle)>>,
}

fn begun_of(state: u64) -> u32 {
    (state >> 32) as u32
}

fn stopped_of(state: u64) -> u32 {
    state as u32
}

impl LaneCell {
    fn abort(&self) -> std::sync::MutexGuard<'_, Option<(u32, AbortHandle)>> {
        self.abort.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops `attempt` (the runner's side): marked so its lane drops it
    /// rather than begin or go on with it, and, if it has a task of its
    /// own, the task's abort handle handed to `aborting`. Returns whether
    /// its lane had begun it.
    pub(super) fn stop(&self, attempt: u32, aborting: &mut Vec<AbortHandle>) -> bool {
        let stop = |state: u64| {
            let stopped = stopped_of(state).max(attempt);
            Some(state & !u64::from(u32::MAX) | u64::from(stopped))
        };
        let before = match self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, stop)
        {
            Ok(state) | Err(state) => state,
        };
        if let Some((_, abort)) = self.abort().take_if(|(number, _)| *number == attempt) {
            aborting.push(abort);
        }
        begun_of(before) >= attempt
    }

    fn is_stopped(&self, attempt: u32) -> bool {
        attempt <= stopped_of(self.state.load(Ordering::Acquire))
    }

    /// Begins `attempt`, its cleanup held, unless the runner stopped it:
    /// from here on it counts as an attempt.
    pub(super) fn begin(&self, attempt: u32) -> bool {
        let begin = |state: u64| {
            (stopped_of(state) < attempt)
                .then(|| u64::from(attempt) << 32 | u64::from(stopped_of(state)))
        };
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, begin)
            .is_ok()
    }

    /// `attempt` goes on on a task of its own: spawned by `go`, unless the
    /// runner stopped it meanwhile (then it comes back, to drop).
    fn go_on<T>(&self, attempt: u32, it: T, go: impl FnOnce(T) -> AbortHandle) -> Option<T> {
        let mut abort = self.abort();
        if self.is_stopped(attempt) {
            return Some(it);
        }
        *abort = Some((attempt, go(it)));
        None
    }
}

impl Lane {
    pub(super) fn new(ctx: Arc<super::RunContext>) -> Arc<Lane> {
        Arc::new(Lane {
            ctx,
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            current: AtomicU64::new(0),
            watched: AtomicBool::new(false),
        })
    }

    /// Adds an attempt to begin; returns how many are queued.
    pub(super) fn push(&self, attempt: Attempt) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push_back(attempt);
        self.queued.store(queue.len(), Ordering::Release);
        queue.len()
    }

    /// The attempt in its first poll here, as a [`key`] (0 for none).
    pub(super) fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Whether attempts wait in the queue.
    pub(super) fn has_queue(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// An attempt that goes straight to a task of its own (the first of
    /// its turn, which a lane would only delay).
    pub(super) fn send_alone(attempt: Attempt) {
        let (ctx, number) = (attempt.ctx.clone(), attempt.number);
        let cell = &ctx.headway[attempt.index as usize].lane;
        let stopped = cell.go_on(number, attempt, Attempt::spawn_async);
        drop(stopped);
    }

    /// Begins the lane's attempts on a task (another one, for a lane that
    /// holds its thread: both take from the same queue).
    pub(super) fn spawn(self: &Arc<Self>, chain: Chain) {
        let lane = self.clone();
        drop(tokio::spawn(ACTIVE.scope(chain, async move {
            let mut unfinished = Unfinished(Some(lane));
            if let Some(lane) = &unfinished.0 {
                poll_fn(|cx| Lane::work(lane, cx)).await;
            }
            unfinished.0 = None;
        })));
    }

    fn next(&self) -> Option<Attempt> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let next = queue.pop_front();
        self.queued.store(queue.len(), Ordering::Release);
        next
    }

    /// Begins the next attempt of the queue, polled once here, then yields
    /// (what it woke or spawned, the runner or a task the cleanup's own code
    /// spawned, runs first: tokio keeps it in this worker's slot, which no
    /// other worker takes from), to go on with the next.
    fn work(self: &Arc<Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        WORKING.with(|w| *w.borrow_mut() = Some(self.clone()));
        let begun = self.work_one(cx);
        WORKING.with(|w| *w.borrow_mut() = None);
        if !begun || !self.has_queue() {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Begins the next attempt of the queue, polled once here; `false` when
    /// the queue is empty.
    fn work_one(&self, cx: &mut std::task::Context<'_>) -> bool {
        let Some(mut attempt) = self.next() else {
            return false;
        };
        let (index, number) = (attempt.index, attempt.number);
        let cell = &self.ctx.headway[index as usize].lane;
        let Some(held) = self.ctx.slots.try_take(index) else {
            // A stopped attempt still has the cleanup out: this one waits
            // for it on a task of its own.
            if let Some(stopped) = cell.go_on(number, attempt, Attempt::spawn_async) {
                drop(stopped);
            }
            return true;
        };
        if !cell.begin(number) {
            self.ctx.slots.put_back(index, held);
            attempt.send(End::Lost("stopped before it began"), None);
            return true;
        }
        self.current.store(key(index, number), Ordering::Release);
        let span = attempt.span.clone();
        let entered = (!span.is_disabled()).then(|| span.enter());
        if let Some(mut running) = attempt.begin(held) {
            match running.poll(cx) {
                Poll::Ready(end) => running.finish(end),
                Poll::Pending => {
                    if let Some(stopped) = cell.go_on(number, running, |r| r.spawn()) {
                        // Its `Drop`s are the user's: contained.
                        let _ = drop_contained(stopped);
                    }
                }
            }
        }
        drop(entered);
        self.current.store(0, Ordering::Release);
        true
    }
}

/// A lane's task dropped before its queue was done (its runtime shut down,
/// perhaps before it ever ran): the attempts left are dropped, so each
/// reports itself lost rather than wait in a queue nobody works.
struct Unfinished(Option<Arc<Lane>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(lane) = self.0.take() {
            while let Some(left) = lane.next() {
                let _ = drop_contained(left);
            }
        }
    }
}

/// The runner's side of lanes: filling and sending the turn's lane, the
/// take-over of a held one, and stopping an attempt handed to one.
impl Runner {
    /// Sends the lane filled this turn on its way.
    pub(super) fn send_lane(&mut self) {
        self.lanes.first_out = false;
        let Some(lane) = self.lanes.open.take() else {
            return;
        };
        lane.spawn(self.ctx.chain.clone());
        self.watch(lane);
    }

    /// Looks at `lane` for a take-over from now on.
    fn watch(&mut self, lane: Arc<Lane>) {
        if !lane.watched.swap(true, Ordering::Relaxed) {
            self.lanes.watched.push((lane, 0, 0));
        }
        self.lanes
            .check
            .get_or_insert_with(|| Instant::now() + LANE_CHECK);
    }

    /// Keeps the lane filled this turn if it is the one running this code
    /// (it goes on with its queue): watched, not spawned again.
    pub(super) fn keep_lane(&mut self) {
        let running = current();
        match (&self.lanes.open, &running) {
            (Some(open), Some(running)) if Arc::ptr_eq(open, running) => {}
            _ => return,
        }
        if let Some(lane) = self.lanes.open.take() {
            if lane.has_queue() {
                self.watch(lane);
            }
        }
    }

    /// Gives a lane whose first poll under way was under way at the last
    /// look too, [`LANE_CHECK`] ago at least (it holds its thread), a fresh
    /// task for the rest of its queue, once per held poll.
    pub(super) fn check_lanes(&mut self, now: Instant) {
        if self.lanes.check.is_none_or(|at| now < at) {
            return;
        }
        // Only a lane with attempts waiting needs a take-over.
        self.lanes.watched.retain(|(lane, ..)| {
            let queued = lane.has_queue();
            if !queued {
                lane.watched.store(false, Ordering::Relaxed);
            }
            queued
        });
        for (lane, seen, taken_over) in &mut self.lanes.watched {
            let current = lane.current();
            let held = current != 0 && current == *seen;
            if held && current != *taken_over {
                lane.spawn(self.ctx.chain.clone());
                *taken_over = current;
            }
            *seen = current;
        }
        self.lanes.check = (!self.lanes.watched.is_empty()).then(|| now + LANE_CHECK);
    }

    /// Stops an attempt handed to `lane`; one the lane is polling right now
    /// holds it, so the rest of its queue gets a fresh task. Its task, if it
    /// has one, is left in `stopped.aborting` for the caller to abort
    /// ([`abort_stopped`](Self::abort_stopped)). Returns whether the lane
    /// had begun it.
    pub(super) fn stop_laned(&mut self, i: usize, attempt: u32, lane: Option<&Arc<Lane>>) -> bool {
        let begun = self.ctx.headway[i]
            .lane
            .stop(attempt, &mut self.stopped.aborting);
        if let Some(lane) = lane {
            if lane.current() == key(i as u32, attempt) && lane.has_queue() {
                lane.spawn(self.ctx.chain.clone());
            }
        }
        begun
    }

    /// Aborts the tasks of the attempts stopped so far.
    pub(super) fn abort_stopped(&mut self) {
        self.stopped.aborting.drain(..).for_each(|a| a.abort());
    }

    /// Hands an async attempt to the turn's lane; returns how to stop it.
    pub(super) fn hand_out(&mut self, attempt: Attempt) -> Stopper {
        if !self.lanes.first_out {
            self.lanes.first_out = true;
            Lane::send_alone(attempt);
            return Stopper::Lane(None);
        }
        let ctx = &self.ctx;
        let lane = self
            .lanes
            .open
            .get_or_insert_with(|| Lane::new(ctx.clone()))
            .clone();
        if lane.push(attempt) >= LANE_SIZE {
            self.send_lane();
            // The turn goes on: its next attempts make a new lane.
            self.lanes.first_out = true;
        }
        Stopper::Lane(Some(lane))
    }
}
