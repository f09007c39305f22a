//! Batches: many tasks registered at once, all or none.

use compactor::cleanup::{blocking, once};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common;

use compactor::{Compactor, Error, Priority};

#[tokio::test(start_paused = true)]
async fn a_batch_registers_every_task_with_its_options() {
    let c = Compactor::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = |ran: &Arc<AtomicUsize>| {
        let ran = ran.clone();
        move || {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let handles = c
        .register_batch([
            c.task("pool").define(counted(&ran)),
            c.task("http")
                .priority(Priority::High)
                .depends_on_name("pool")
                .define(counted(&ran)),
            c.task("flush")
                .define(blocking(|| Ok::<(), std::io::Error>(()))),
        ])
        .unwrap();
    let names: Vec<&str> = handles.iter().map(|h| h.name()).collect();
    assert_eq!(names, ["pool", "http", "flush"]);
    assert!(handles.iter().all(|h| h.is_pending()));
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.tasks()[0].name(), "http");
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_bad_definition_refuses_the_whole_batch_and_loses_nothing() {
    let c = Compactor::new();
    c.register("kept", || async {}).unwrap();
    let called = Arc::new(AtomicUsize::new(0));
    let batch = |bad: compactor::TaskDef| {
        let called = called.clone();
        vec![
            c.task("a").define(once(move || async move {
                called.fetch_add(1, Ordering::SeqCst);
            })),
            bad,
        ]
    };
    // A name already registered.
    let e = c
        .register_batch(batch(c.task("kept").define(|| async {})))
        .unwrap_err();
    assert_eq!(e, Error::DuplicateName("kept".into()));
    // A name twice in the batch.
    let e = c
        .register_batch(batch(c.task("a").define(|| async {})))
        .unwrap_err();
    assert_eq!(e, Error::DuplicateName("a".into()));
    // An invalid option.
    let e = c
        .register_batch(batch(
            c.task("zero")
                .timeout(std::time::Duration::ZERO)
                .define(|| async {}),
        ))
        .unwrap_err();
    assert_eq!(
        e,
        Error::ZeroTimeout {
            task: "zero".into()
        }
    );
    // A cycle within the batch.
    let e = c
        .register_batch([
            c.task("x").depends_on_name("y").define(|| async {}),
            c.task("y").depends_on_name("x").define(|| async {}),
        ])
        .unwrap_err();
    assert!(matches!(e, Error::Cycle { .. }), "{e}");
    // Nothing of any refused batch is registered, the earlier task kept.
    assert_eq!(c.plan().inventory().tasks(), 1);
    let report = c.shutdown().await;
    assert_eq!(report.tasks().len(), 1);
    assert_eq!(called.load(Ordering::SeqCst), 0, "no refused closure ran");
}

#[tokio::test]
async fn an_empty_batch_registers_nothing_and_a_batch_after_shutdown_is_refused() {
    let c = Compactor::new();
    assert!(c.register_batch([]).unwrap().is_empty());
    c.trigger();
    let e = c
        .register_batch([c.task("late").define(|| async {})])
        .unwrap_err();
    assert_eq!(e, Error::ShuttingDown);
}

#[test]
fn a_batch_racing_the_shutdown_lands_whole_or_not_at_all() {
    for round in 0..50 {
        let runtime = common::multi_thread(2);
        let c = Compactor::new();
        let registering = {
            let c = c.clone();
            // Until refused: the shutdown lands among the batches.
            std::thread::spawn(move || {
                let mut accepted = 0;
                for b in 0.. {
                    let batch = (0..50).map(|i| c.task(format!("b{b}-t{i}")).define(|| async {}));
                    match c.register_batch(batch) {
                        Ok(_) => accepted += 1,
                        Err(Error::ShuttingDown) => return accepted,
                        Err(other) => panic!("{other}"),
                    }
                }
                unreachable!()
            })
        };
        // Shut down once some batches are in, while more are coming.
        while c.plan().inventory().tasks() < 50 * (round % 5 + 1) {
            std::thread::yield_now();
        }
        let report = runtime.block_on(c.shutdown());
        let accepted = registering.join().unwrap();
        assert_eq!(report.tasks().len(), accepted * 50, "round {round}");
    }
}

#[test]
fn a_foreign_definition_is_refused() {
    let (c, other) = (Compactor::new(), Compactor::new());
    let e = c
        .register_batch([other.task("theirs").define(|| async {})])
        .unwrap_err();
    assert!(matches!(e, Error::ForeignHandle { .. }), "{e}");
    assert_eq!(c.plan().inventory().tasks(), 0);
}

#[tokio::test]
async fn a_large_batch_keeps_its_order_and_a_late_duplicate_takes_all_of_it_back() {
    let c = Compactor::new();
    c.register("taken", || async {}).unwrap();
    // Thousands of tasks spread over every shard, and one name that is
    // taken: the refusal comes as its shard is reached, with the shards
    // before it (and that shard's earlier tasks) in already.
    let names: Vec<String> = (0..5_000).map(|i| format!("conn-{i}")).collect();
    let with_late = |late: &str| {
        let names = names.iter().map(String::as_str).chain([late]);
        names
            .map(|n| c.task(n).define(|| async {}))
            .collect::<Vec<_>>()
    };
    for late in ["taken", "conn-17"] {
        let e = c.register_batch(with_late(late)).unwrap_err();
        assert_eq!(e, Error::DuplicateName(late.into()));
        assert_eq!(
            c.plan().inventory().tasks(),
            1,
            "nothing of the refused batch stays"
        );
    }
    let handles = c.register_batch(with_late("last")).unwrap();
    assert_eq!(handles.len(), 5_001);
    assert!(handles.iter().all(|h| h.is_pending()));
    // Ids follow the batch: the plan lists the tasks in registration order.
    let plan = c.plan();
    let planned: Vec<&str> = plan.tasks().map(|t| t.name()).collect();
    let expected: Vec<&str> = std::iter::once("taken")
        .chain(names.iter().map(String::as_str))
        .chain(["last"])
        .collect();
    assert_eq!(planned, expected);
    assert_eq!(c.shutdown().await.tasks().len(), 5_002);
}

#[test]
fn a_batch_and_single_registrations_of_the_same_names_never_both_land() {
    for round in 0..20 {
        let c = Compactor::new();
        let names: Vec<String> = (0..2_000).map(|i| format!("r{round}-{i}")).collect();
        let defs: Vec<_> = names
            .iter()
            .map(|n| c.task(n.as_str()).define(|| async {}))
            .collect();
        let start = Arc::new(std::sync::Barrier::new(2));
        let singles = {
            let (c, names, start) = (c.clone(), names.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                // From the end, so the two meet in the middle.
                let won: Vec<String> = names
                    .iter()
                    .rev()
                    .filter(|n| c.register(n.as_str(), || async {}).is_ok())
                    .cloned()
                    .collect();
                won
            })
        };
        start.wait();
        let batch = c.register_batch(defs);
        let won_singly = singles.join().unwrap();
        match batch {
            // All of the batch, so none of the singles.
            Ok(handles) => {
                assert_eq!(handles.len(), names.len());
                assert!(won_singly.is_empty(), "round {round}");
            }
            // None of it: each name is there once, registered singly.
            Err(Error::DuplicateName(_)) => {
                assert_eq!(c.plan().inventory().tasks(), won_singly.len());
            }
            Err(other) => panic!("{other}"),
        }
        assert!(c.plan().inventory().tasks() <= names.len());
    }
}

/// Registers a batch of `n` one-shot cleanups, each owning a value `owned`
/// makes (each depending by name on `taken`, or on nothing), and then the
/// name `taken` again: the batch is refused, and its values dropped.
fn refuse_owning<T: Send + 'static>(
    c: &Compactor,
    n: usize,
    with_dependency: bool,
    owned: impl Fn() -> T,
) {
    let defs = (0..n).map(|i| {
        let owned = owned();
        let task = c.task(format!("t{i}"));
        let task = match with_dependency {
            true => task.depends_on_name("taken"),
            false => task,
        };
        task.define(once(move || async move { drop(owned) }))
    });
    let refused = c.register_batch(defs.chain([c.task("taken").define(|| async {})]));
    assert_eq!(refused.unwrap_err(), Error::DuplicateName("taken".into()));
}

#[test]
fn a_refused_batch_drops_its_cleanups_outside_its_locks() {
    // A cleanup whose drop calls back into the instance (to look at what
    // is registered, or to plan): refused, the batch drops it, and must not
    // do so while it holds the lock the instance's calls wait for.
    struct CallsBack(Compactor);
    impl Drop for CallsBack {
        fn drop(&mut self) {
            let _ = self.0.plan();
        }
    }
    let c = Compactor::new();
    c.register("taken", || async {}).unwrap();
    let (done, returned) = std::sync::mpsc::channel();
    let batcher = {
        let c = c.clone();
        std::thread::spawn(move || {
            for with_dependency in [false, true] {
                refuse_owning(&c, 100, with_dependency, || CallsBack(c.clone()));
            }
            let _ = done.send(());
        })
    };
    returned
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the refused batches returned: no cleanup was dropped under the batch lock");
    batcher.join().unwrap();
    assert_eq!(c.plan().inventory().tasks(), 1);
}

#[test]
fn a_definition_of_an_instance_that_is_gone_is_refused_by_another() {
    for _ in 0..100 {
        let def = {
            let gone = Compactor::new();
            gone.task("theirs").define(|| async {})
        };
        let c = Compactor::new();
        let e = c.register_batch([def]).unwrap_err();
        assert!(matches!(e, Error::ForeignHandle { .. }), "{e}");
        assert_eq!(c.plan().inventory().tasks(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_run_racing_batches_takes_each_batch_whole_or_not_at_all() {
    use compactor::Category;
    // Large enough that a batch's shards go in over a while. A release that
    // passes between two of a batch's shards is a rare interleaving: this
    // checks the rule under load (more so with `COMPACTOR_STRESS`).
    const BATCH: usize = 1_000;
    let c = Compactor::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batcher = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut accepted = 0;
            while !stop.load(Ordering::SeqCst) && accepted < common::stress(100) {
                let batch = (0..BATCH).map(|i| {
                    c.task(format!("b{accepted}-t{i}"))
                        .category(Category::Network)
                        .define(|| async {})
                });
                c.register_batch(batch).unwrap();
                accepted += 1;
            }
            accepted
        })
    };
    let mut released = 0;
    for _ in 0..common::stress(300) {
        let report = c
            .run_early(compactor::Selection::Category(Category::Network))
            .await
            .expect("a category release");
        let n = report.tasks().len();
        assert_eq!(n % BATCH, 0, "a release took part of a batch: {n} tasks");
        released += n;
    }
    stop.store(true, Ordering::SeqCst);
    let accepted = batcher.join().unwrap();
    assert_eq!(released + c.plan().inventory().tasks(), accepted * BATCH);
}

#[test]
fn a_refused_registration_whose_cleanups_panic_as_they_drop_still_returns_its_error() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a cleanup's value panics as it drops");
        }
    }
    let c = Compactor::new();
    c.register("taken", || async {}).unwrap();
    // Two in one batch: a second panic while the first unwinds would abort.
    for with_dependency in [false, true] {
        refuse_owning(&c, 2, with_dependency, || PanicsOnDrop);
    }
    // Refused before the insertion: an invalid option, then a definition
    // of another instance, each after a definition that panics as it drops.
    let other = Compactor::new();
    for bad in [
        c.task("zero")
            .timeout(std::time::Duration::ZERO)
            .define(|| async {}),
        other.task("theirs").define(|| async {}),
    ] {
        let owned = PanicsOnDrop;
        let first = c.task("p").define(once(move || async move { drop(owned) }));
        assert!(c.register_batch([first, bad]).is_err());
    }
    let owned = PanicsOnDrop;
    let refused = c.register("taken", once(move || async move { drop(owned) }));
    assert_eq!(refused.unwrap_err(), Error::DuplicateName("taken".into()));
    assert_eq!(c.plan().inventory().tasks(), 1);
}
