//! Helpers shared by the test modules (`crate::common`).
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

/// An ordered log of what cleanups did.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Appends an entry.
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    /// A copy of the entries so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Position of `entry` in the log; panics if absent.
    pub fn pos(&self, entry: &str) -> usize {
        let entries = self.entries();
        entries
            .iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("`{entry}` not in {entries:?}"))
    }
}

/// A cleanup that appends `entry` to `log` when called.
pub fn logged(
    log: &Log,
    entry: &'static str,
) -> impl FnMut() -> std::future::Ready<()> + Send + 'static {
    let log = log.clone();
    move || {
        log.push(entry);
        std::future::ready(())
    }
}

/// How many times a race or timing-sensitive test repeats its core: `n`,
/// or `n` times the factor in `COMPACTOR_STRESS` (`1` means 10) for the
/// stress mode: `COMPACTOR_STRESS=1 cargo test --workspace`.
pub fn stress(n: usize) -> usize {
    match std::env::var("COMPACTOR_STRESS") {
        Ok(v) => n * v.parse::<usize>().ok().filter(|&f| f > 1).unwrap_or(10),
        Err(_) => n,
    }
}

/// A multi-thread runtime with `workers` workers and every driver.
pub fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Registers `slow-drop`, a one-shot cleanup whose captured value takes
/// `drop_takes` to drop (its `Drop` holds the thread).
pub fn register_slow_drop(c: &compactor::Compactor, drop_takes: std::time::Duration) {
    struct SlowDrop(std::time::Duration);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
        }
    }
    let owned = SlowDrop(drop_takes);
    c.task("slow-drop")
        .register(compactor::cleanup::once(move || {
            let _owned = owned;
            async {}
        }))
        .unwrap();
}

/// Registers `flush`, which notes that it ran in the flag returned.
pub fn register_flush(c: &compactor::Compactor) -> Arc<std::sync::atomic::AtomicBool> {
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    c.register("flush", move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        async {}
    })
    .unwrap();
    ran
}

/// A service that runs until its drain: keeps an instance's "every service
/// has ended" from firing while a test's other services end.
pub fn keeper(c: &compactor::Compactor) {
    c.task("keeper")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
}

/// Sets its flag when dropped: a future, a cleanup or a value gone.
pub struct Gone(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
