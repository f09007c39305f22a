//! The runner's side of a task's attempts: starting each one, its timeout
//! and the grace of one that observes its token, the retry after a failure
//! (after its backoff), and how a running attempt is stopped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::attempt::{Attempt, End, Ended};
use super::clock::{Due, Timer, after};
use super::contain::let_go;
use super::scheduler::Runner;
use super::state::{Failure, State, Stopper};
use crate::event::Event;
use crate::report::{Interruption, Outcome};

impl Runner {
    pub(super) fn timeout(&self, i: usize) -> Duration {
        self.plan.tasks[i]
            .spec()
            .timeout
            .unwrap_or(self.config.default_timeout)
    }

    /// Whether attempt `number` of task `i` is its last.
    pub(super) fn is_last(&self, i: usize, number: u32) -> bool {
        number > self.plan.tasks[i].spec().retries || number == u32::MAX
    }

    pub(super) fn attempt(&mut self, index: u32, number: u32, now: Instant) {
        let i = index as usize;
        let last = self.is_last(i, number);
        let timeout = self.timeout(i);
        let task = &mut self.tasks[i];
        self.ctx.note_attempt(i, number, now, false);
        let token = task.observes_token.then(|| self.ctx.attempt_token());
        let attempt = Attempt {
            ctx: self.ctx.clone(),
            index,
            number,
            token: token.clone(),
            last,
            // A span per attempt: a field recorded again would be shown
            // twice ("attempt=1 attempt=2").
            span: match task.span.is_disabled() {
                true => tracing::Span::none(),
                false => tracing::info_span!(parent: &task.span, "attempt", number),
            },
            told: false,
            lost: super::attempt::RUNTIME_GONE,
        };
        let blocking = task.blocking;
        let stop = match blocking {
            true => Stopper::Thread(attempt.spawn_blocking()),
            false => self.hand_out(attempt),
        };
        let due = after(now, timeout);
        self.tasks[i].state = State::Running {
            attempt: number,
            due,
            stop: Some(stop),
            token,
            grace: false,
        };
        self.clock.timers.add(due, index, number, Due::Timeout);
    }

    /// An attempt's report of its end.
    pub(super) fn on_end(&mut self, ended: Ended) {
        let i = ended.index as usize;
        if !self.stopped.attempts.is_empty()
            && self.stopped.attempts.remove(&(ended.index, ended.attempt))
        {
            // A stopped attempt's future is gone.
            return;
        }
        let (grace, due) = match &self.tasks[i].state {
            State::Running {
                attempt,
                grace,
                due,
                ..
            } if *attempt == ended.attempt => (*grace, *due),
            // Its last attempt, left running when the task finished (a
            // blocking one abandoned at its timeout), has returned: it is
            // no longer running.
            State::Finished
                if ended.attempt == self.ctx.headway[i].attempts.load(Ordering::Relaxed) =>
            {
                self.books.record.returned_late(ended.index);
                return;
            }
            // An attempt stopped earlier, or a task finished already.
            _ => return,
        };
        if grace {
            // It stopped on its token after its timeout.
            return self.failed(i, ended.attempt, Failure::TimedOut(Interruption::Stopped));
        }
        // Returned (or failed) only after its time ran out, before the
        // runner could stop it: what it returned does not count. The
        // attempt took itself for the last and let go of its cleanup, so no
        // retry follows.
        let returned = matches!(ended.end, End::Ok(_) | End::Err(_));
        let overran = Some(Interruption::Overran);
        let late = if returned && self.clock.deadline.is_some_and(|d| ended.at > d) {
            Some(Outcome::Cancelled)
        } else if returned && due.is_some_and(|due| ended.at > due) {
            Some(Outcome::TimedOut)
        } else {
            None
        };
        if let Some(outcome) = late {
            // What it returned (an error the user made) goes unread.
            let_go(ended.end);
            return self.finish(i, outcome, overran, None, ended.at);
        }
        match ended.end {
            End::Ok(freed) => {
                self.books.record.freed(i as u32, freed);
                self.finish(i, Outcome::Succeeded, None, ended.strong, ended.at);
            }
            End::Released => {
                // The closure was not called this time.
                let attempts = &self.ctx.headway[i].attempts;
                attempts.store(ended.attempt - 1, Ordering::Relaxed);
                self.finish(i, Outcome::Released, None, None, ended.at);
            }
            End::Panicked(message) => {
                self.finish(i, Outcome::Panicked(message), None, ended.strong, ended.at);
            }
            End::Err(error) => self.failed(i, ended.attempt, Failure::Error(error)),
            End::Lost(why) => self.finish(i, Outcome::Failed(why.into()), None, None, ended.at),
        }
    }

    pub(super) fn on_timer(&mut self, timer: Timer, now: Instant) {
        let i = timer.index as usize;
        let task = &mut self.tasks[i];
        match (&mut task.state, timer.due) {
            (
                State::Running {
                    attempt,
                    token,
                    grace,
                    ..
                },
                Due::Timeout,
            ) if *attempt == timer.attempt && !*grace => {
                if let Some(token) = token {
                    // It may stop on its token within the grace.
                    token.cancel();
                    *grace = true;
                    let end = after(now, self.config.cancel_grace);
                    self.clock
                        .timers
                        .add(end, timer.index, timer.attempt, Due::Grace);
                    return;
                }
                let how = self.stop(i);
                self.abort_stopped();
                self.failed(i, timer.attempt, Failure::TimedOut(how));
            }
            (
                State::Running {
                    attempt,
                    grace: true,
                    ..
                },
                Due::Grace,
            ) if *attempt == timer.attempt => {
                let how = self.stop(i);
                self.abort_stopped();
                self.failed(i, timer.attempt, Failure::TimedOut(how));
            }
            (State::Retrying { attempt }, Due::Retry) if *attempt == timer.attempt => {
                let next = *attempt + 1;
                self.attempt(timer.index, next, now);
            }
            _ => {}
        }
    }

    /// Stops a running attempt: an async one is dropped, a blocking one
    /// abandoned.
    pub(super) fn stop(&mut self, i: usize) -> Interruption {
        if matches!(self.tasks[i].state, State::Running { .. }) {
            if let Some(scope) = self.tasks[i].scope.take() {
                // Cut off: the scope runs nothing more (its shutdown, if
                // the attempt had not begun it, runs at once, halted), and
                // the report waits for its own.
                scope.halt(self.halted().unwrap_or(crate::report::SkipReason::Halted));
                self.stopped.scopes.push((i as u32, scope));
            }
        }
        let State::Running {
            stop,
            token,
            attempt,
            ..
        } = &mut self.tasks[i].state
        else {
            return Interruption::Dropped;
        };
        let attempt = *attempt;
        if let Some(token) = token.take() {
            token.cancel();
        }
        match stop.take() {
            Some(Stopper::Thread(abandon)) => {
                let _ = abandon.send(());
                Interruption::Abandoned
            }
            Some(Stopper::Lane(lane)) => {
                let begun = self.stop_laned(i, attempt, lane.as_ref());
                // Dropped once its future is gone; see `await_stopped`.
                self.stopped.attempts.insert((i as u32, attempt));
                if !begun {
                    // Never called: not an attempt the report may count.
                    let attempts = &self.ctx.headway[i].attempts;
                    attempts.store(attempt - 1, Ordering::Relaxed);
                }
                Interruption::Dropped
            }
            None if self.tasks[i].blocking => Interruption::Abandoned,
            None => Interruption::Dropped,
        }
    }

    /// After an attempt that did not succeed: the next attempt after its
    /// backoff, or the task's end.
    pub(super) fn failed(&mut self, i: usize, attempt: u32, failure: Failure) {
        let now = Instant::now();
        if self.is_last(i, attempt) {
            let (outcome, how) = match failure {
                Failure::Error(error) => (Outcome::Failed(error), None),
                Failure::TimedOut(how) => (Outcome::TimedOut, Some(how)),
            };
            return self.finish(i, outcome, how, None, now);
        }
        let error = match failure {
            Failure::Error(error) => error,
            Failure::TimedOut(_) => format!("attempt timed out after {:?}", self.timeout(i)).into(),
        };
        let spec = self.plan.tasks[i].spec();
        let backoff = spec
            .backoff
            .as_deref()
            .copied()
            .unwrap_or(self.config.backoff);
        let delay = backoff.next_delay(attempt);
        let name = &self.ctx.names[i];
        tracing::warn!(task = %name, attempt, %error, ?delay, "cleanup attempt failed; retrying");
        self.ctx.emit(|| Event::TaskRetrying {
            name: name.clone(),
            attempt,
            delay,
            error: error.to_string(),
        });
        let_go(error);
        self.tasks[i].state = State::Retrying { attempt };
        self.ctx.note_attempt(i, attempt, now, true);
        self.clock
            .timers
            .add(after(now, delay), i as u32, attempt, Due::Retry);
    }
}
