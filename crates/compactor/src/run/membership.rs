//! Run membership: which instances' runs the code running here is part
//! of, carried by a task-local for async cleanups and a thread-local for
//! blocking ones, so a cleanup that asks its own instance (or a parent's)
//! for the report gets the report so far instead of waiting on itself.

use std::cell::RefCell;
use std::sync::Arc;

/// The instances whose runs the current code is part of: a cleanup's own
/// instance, and the instances whose cleanups began that run (a scope's
/// parent). A `shutdown()` of any of them from here gets the report so far.
pub(crate) type Chain = Arc<[u64]>;

tokio::task_local! {
    pub(crate) static ACTIVE: Chain;
}

thread_local! {
    pub(crate) static ACTIVE_BLOCKING: RefCell<Option<Chain>> = const { RefCell::new(None) };
}

/// The chain of the cleanup running here, if any.
pub(crate) fn current_chain() -> Option<Chain> {
    ACTIVE
        .try_with(Clone::clone)
        .ok()
        .or_else(|| ACTIVE_BLOCKING.with(|a| a.borrow().clone()))
}

/// `future`, part of the run the caller is part of (if any): see
/// [`crate::cleanup::inherit_run`].
pub(crate) fn carried<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let chain = current_chain();
    async move {
        match chain {
            Some(chain) => ACTIVE.scope(chain, future).await,
            None => future.await,
        }
    }
}

/// `f`, part of the run the caller is part of (if any), on whatever thread
/// calls it: see [`crate::cleanup::inherit_run_blocking`].
pub(crate) fn carried_blocking<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let chain = current_chain();
    move || {
        /// Puts the thread's previous run back, also if `f` panics.
        struct Restore(Option<Chain>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                ACTIVE_BLOCKING.with(|a| *a.borrow_mut() = previous);
            }
        }
        let _restore = Restore(ACTIVE_BLOCKING.with(|a| a.replace(chain)));
        f()
    }
}

/// Whether the caller is part of a run of `instance`.
pub(crate) fn inside_cleanup_of(instance: u64) -> bool {
    current_chain().is_some_and(|chain| chain.contains(&instance))
}

/// Whether the caller is any instance's cleanup.
pub(crate) fn inside_any_cleanup() -> bool {
    current_chain().is_some()
}

thread_local! {
    /// While a task's cleanup (or attempt's future) is dropped here: what
    /// its `Drop`s left to be told to that task (see [`dropping`]).
    static DROPPING: RefCell<Option<Vec<ToTell>>> = const { RefCell::new(None) };
}

/// Something a cleanup's `Drop` has to tell the task it belonged to (a
/// child process it killed), once the task is known.
pub(crate) type ToTell = Box<dyn FnOnce(Option<Owner>) + Send>;

/// A task of a run, as what it owns is dropped: told of a child process
/// killed on the way (see [`super::RunContext::killing`]).
#[derive(Clone)]
#[cfg_attr(not(feature = "process"), allow(dead_code))]
pub(crate) struct Owner {
    pub(crate) ctx: Arc<super::RunContext>,
    pub(crate) index: u32,
}

/// Runs `f` (which drops what task `index` owned); what its `Drop`s left to
/// tell (see [`tell_dropping_task`]) is told to that task after. Nothing is
/// cloned unless something was left.
pub(crate) fn dropping<T>(ctx: &Arc<super::RunContext>, index: u32, f: impl FnOnce() -> T) -> T {
    // Only a child process's guard has anything to tell: none alive, no
    // bookkeeping (the common case, on every attempt's end).
    if KILLERS.load(std::sync::atomic::Ordering::Acquire) == 0 {
        return f();
    }
    /// Puts the previous collection back, also if `f` panics; hands over
    /// what this one collected.
    struct Restore(Option<Option<Vec<ToTell>>>);
    impl Restore {
        fn collected(mut self) -> Vec<ToTell> {
            let previous = self.0.take().flatten();
            DROPPING.with(|d| d.replace(previous)).unwrap_or_default()
        }
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                DROPPING.with(|d| *d.borrow_mut() = previous);
            }
        }
    }
    let restore = Restore(Some(DROPPING.with(|d| d.replace(Some(Vec::new())))));
    let out = f();
    let told = restore.collected();
    if !told.is_empty() {
        let owner = Owner {
            ctx: ctx.clone(),
            index,
        };
        for tell in told {
            tell(Some(owner.clone()));
        }
    }
    out
}

/// How many guards that may leave something to tell (a child process's,
/// which kills it when dropped) are alive.
static KILLERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A guard that may leave something to tell when dropped is made; its
/// `Drop` calls [`killer_gone`] first.
#[cfg(feature = "process")]
pub(crate) fn killer_made() {
    KILLERS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// A guard counted by [`killer_made`] is being dropped.
#[cfg(feature = "process")]
pub(crate) fn killer_gone() {
    KILLERS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
}

/// Leaves `tell` for the task whose cleanup is being dropped here, if one
/// is; else tells it at once that there is none.
#[cfg(feature = "process")]
pub(crate) fn tell_dropping_task(tell: ToTell) {
    let left = DROPPING.with(|d| match d.borrow_mut().as_mut() {
        Some(told) => {
            told.push(tell);
            None
        }
        None => Some(tell),
    });
    if let Some(tell) = left {
        tell(None);
    }
}
