//! Registration racing the start of shutdown, on real threads: every `Ok`
//! registration runs exactly once, every refused one never runs.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use compactor::{Compactor, Error};

const THREADS: usize = 4;
const PER_THREAD: usize = 20_000;

#[test]
fn registrations_racing_shutdown_lose_nothing_and_run_nothing_twice() {
    for round in 0..7usize {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let c = Compactor::new();
        // One counter per registration attempt: how often its cleanup ran.
        let runs: Arc<Vec<AtomicU32>> = Arc::new(
            (0..THREADS * PER_THREAD)
                .map(|_| AtomicU32::new(0))
                .collect(),
        );
        let start = Arc::new(Barrier::new(THREADS + 1));
        let stop = Arc::new(AtomicBool::new(false));

        let registrants: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, runs, start, stop) = (c.clone(), runs.clone(), start.clone(), stop.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut accepted = Vec::new();
                    for i in 0..PER_THREAD {
                        let slot = t * PER_THREAD + i;
                        let runs = runs.clone();
                        let result = c.register(format!("t{t}-{i}"), move || {
                            runs[slot].fetch_add(1, Ordering::SeqCst);
                            async {}
                        });
                        match result {
                            Ok(_) => accepted.push(slot),
                            Err(Error::ShuttingDown) => {
                                stop.store(true, Ordering::SeqCst);
                            }
                            Err(other) => panic!("unexpected {other}"),
                        }
                        // Keep going after the first refusal: later ones must be refused too.
                        if stop.load(Ordering::SeqCst) && i % 64 == 0 {
                            thread::yield_now();
                        }
                    }
                    accepted
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
            r => THREADS * PER_THREAD * (r - 1) / 12,
        };
        while c.pending() < threshold {
            thread::yield_now();
        }
        let report = runtime.block_on(c.shutdown());
        let accepted: Vec<usize> = registrants
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();

        assert!(report.is_clean());
        assert_eq!(report.tasks().len(), accepted.len(), "round {round}");
        let accepted: std::collections::HashSet<usize> = accepted.into_iter().collect();
        for (slot, count) in runs.iter().enumerate() {
            let expected = u32::from(accepted.contains(&slot));
            assert_eq!(
                count.load(Ordering::SeqCst),
                expected,
                "slot {slot}, round {round}"
            );
        }
        assert!(
            !accepted.is_empty() && accepted.len() < THREADS * PER_THREAD,
            "round {round}: the shutdown must land in the middle of registration ({} accepted)",
            accepted.len()
        );
    }
}
