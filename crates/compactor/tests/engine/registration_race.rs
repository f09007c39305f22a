//! Registration racing the start of shutdown, on real threads: every `Ok`
//! registration runs exactly once, every refused one never runs, and once a
//! thread is refused it is refused for good.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use compactor::{Compactor, Error};

use crate::common;

const THREADS: usize = 4;
/// Registrations each thread makes before it waits for the shutdown to
/// have begun; as many again follow, racing it and after it.
const BEFORE: usize = 20_000;
const SLOTS: usize = 2 * BEFORE;
/// Registrations each thread still tries after its first refusal.
const AFTER_REFUSAL: usize = 256;

/// What one registering thread saw.
struct Seen {
    accepted: Vec<usize>,
    refused: usize,
    /// Accepted after a refusal: must stay zero.
    accepted_after_refusal: usize,
}

#[test]
fn registrations_racing_shutdown_lose_nothing_and_run_nothing_twice() {
    for round in 0..common::stress(7) {
        let runtime = common::multi_thread(2);
        let c = Compactor::new();
        // One counter per registration attempt: how often its cleanup ran.
        let runs: Arc<Vec<AtomicU32>> =
            Arc::new((0..THREADS * SLOTS).map(|_| AtomicU32::new(0)).collect());
        let start = Arc::new(Barrier::new(THREADS + 1));
        // Set once the shutdown has begun (registration closed): a thread
        // that made its first `BEFORE` registrations waits for it, so the
        // shutdown always begins while every thread still has some to make.
        let begun = Arc::new(AtomicBool::new(false));

        let registrants: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, runs, start, begun) =
                    (c.clone(), runs.clone(), start.clone(), begun.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut seen = Seen {
                        accepted: Vec::new(),
                        refused: 0,
                        accepted_after_refusal: 0,
                    };
                    for i in 0..SLOTS {
                        if i == BEFORE {
                            while !begun.load(Ordering::SeqCst) {
                                thread::yield_now();
                            }
                        }
                        let slot = t * SLOTS + i;
                        let runs = runs.clone();
                        let result = c.register(format!("t{t}-{i}"), move || {
                            runs[slot].fetch_add(1, Ordering::SeqCst);
                            async {}
                        });
                        match result {
                            Ok(_) if seen.refused > 0 => seen.accepted_after_refusal += 1,
                            Ok(_) => seen.accepted.push(slot),
                            Err(Error::ShuttingDown) => seen.refused += 1,
                            Err(other) => panic!("unexpected {other}"),
                        }
                        if seen.refused > AFTER_REFUSAL {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();

        start.wait();
        // Shut down in the middle of it: once a round-dependent share is in.
        // The first rounds shut down as registration begins, while the
        // registry's shards are still being reached for the first time.
        let threshold = match round {
            0 => 1,
            1 => 3,
            r => THREADS * BEFORE * ((r - 1) % 6) / 12,
        };
        while c.plan().inventory().tasks() < threshold {
            thread::yield_now();
        }
        {
            let _on = runtime.enter();
            // Closes registration before it returns.
            c.trigger();
        }
        begun.store(true, Ordering::SeqCst);
        let report = runtime.block_on(c.wait());
        let seen: Vec<Seen> = registrants.into_iter().map(|h| h.join().unwrap()).collect();

        for (t, s) in seen.iter().enumerate() {
            assert!(s.refused > 0, "round {round}: thread {t} was never refused");
            assert_eq!(
                s.accepted_after_refusal, 0,
                "round {round}: thread {t} was accepted after a refusal"
            );
        }
        let accepted: std::collections::HashSet<usize> = seen
            .iter()
            .flat_map(|s| s.accepted.iter().copied())
            .collect();
        assert!(report.is_clean());
        assert_eq!(report.tasks().len(), accepted.len(), "round {round}");
        for (slot, count) in runs.iter().enumerate() {
            let expected = u32::from(accepted.contains(&slot));
            assert_eq!(
                count.load(Ordering::SeqCst),
                expected,
                "slot {slot}, round {round}"
            );
        }
    }
}

#[test]
fn a_dependent_racing_the_shutdown_is_refused_as_shutting_down() {
    // A task with many dependencies checks each in turn: the shutdown can
    // begin, and take them, while it does.
    for _ in 0..common::stress(60) {
        let c = Compactor::new();
        let deps: Vec<_> = (0..2_000)
            .map(|i| c.register(format!("d{i}"), || async {}).unwrap())
            .collect();
        let start = Arc::new(Barrier::new(2));
        let registrant = {
            let (c, start) = (c.clone(), start.clone());
            thread::spawn(move || {
                let mut big = c.task("big");
                for dep in &deps {
                    big = big.depends_on(dep);
                }
                start.wait();
                big.register(|| async {})
            })
        };
        start.wait();
        c.trigger();
        match registrant.join().unwrap() {
            Ok(_) | Err(Error::ShuttingDown) => {}
            Err(other) => panic!("refused with {other}, not `ShuttingDown`"),
        }
    }
}
