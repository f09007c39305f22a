//! The final phase: the last flush runs after every other task, and still
//! runs when the deadline or a phase budget cuts the run short, in the time
//! kept for it before the deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use compactor::report::SkipReason;
use compactor::{Compactor, Outcome, Priority};
use tokio::time::Instant;

fn flush_flag() -> (
    Arc<AtomicBool>,
    impl FnMut() -> tokio::time::Sleep + Send + 'static,
) {
    let flushed = Arc::new(AtomicBool::new(false));
    let flag = flushed.clone();
    let flush = move || {
        flag.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1))
    };
    (flushed, flush)
}

#[tokio::test(start_paused = true)]
async fn a_hanging_cleanup_holding_the_deadline_leaves_the_final_flush_its_time() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    let (flushed, flush) = flush_flag();
    c.task("otel")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(2))
        .register(flush)
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("late")
        .priority(Priority::Low)
        .register(|| async {})
        .unwrap();
    let t0 = Instant::now();
    let report = c.shutdown().await;
    assert!(flushed.load(Ordering::SeqCst));
    assert_eq!(
        report.task("otel").unwrap().outcome(),
        &Outcome::Succeeded,
        "{report}"
    );
    assert_eq!(report.task("hangs").unwrap().outcome(), &Outcome::Cancelled);
    assert_eq!(
        report.task("late").unwrap().outcome(),
        &Outcome::Skipped(SkipReason::Deadline)
    );
    // Cut 2 s before the deadline, then the flush's 1 s.
    assert_eq!(
        report.task("otel").unwrap().started_at(),
        Some(Duration::from_secs(8))
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(9));
}

#[tokio::test(start_paused = true)]
async fn a_phase_budget_cut_leaves_the_final_flush_to_run() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(60))
        .phase_budget(Priority::Normal, Duration::from_secs(1))
        .build();
    let (flushed, flush) = flush_flag();
    c.task("log")
        .priority(Priority::Final)
        .register(flush)
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c.shutdown().await;
    assert!(flushed.load(Ordering::SeqCst));
    assert_eq!(report.task("log").unwrap().outcome(), &Outcome::Succeeded);
    assert_eq!(
        report.task("log").unwrap().started_at(),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn final_tasks_run_after_every_other_one_and_are_bounded_themselves() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    c.task("stuck-flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(3))
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("low")
        .priority(Priority::Low)
        .register(|| tokio::time::sleep(Duration::from_secs(1)))
        .unwrap();
    let t0 = Instant::now();
    let report = c.shutdown().await;
    assert_eq!(report.task("low").unwrap().outcome(), &Outcome::Succeeded);
    assert_eq!(
        report.task("stuck-flush").unwrap().outcome(),
        &Outcome::TimedOut
    );
    assert_eq!(
        report.task("stuck-flush").unwrap().started_at(),
        Some(Duration::from_secs(1))
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(4));
    assert_eq!(report.tasks()[1].effective_priority(), Priority::Final);
}

#[tokio::test(start_paused = true)]
async fn a_final_flush_longer_than_the_deadline_keeps_half_of_it() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(4))
        .build();
    let (flushed, flush) = flush_flag();
    c.task("flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(5))
        .register(flush)
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c.shutdown().await;
    assert!(flushed.load(Ordering::SeqCst));
    assert_eq!(report.task("hangs").unwrap().outcome(), &Outcome::Cancelled);
    assert_eq!(report.task("flush").unwrap().outcome(), &Outcome::Succeeded);
    assert_eq!(
        report.task("flush").unwrap().started_at(),
        Some(Duration::from_secs(2))
    );
}

#[tokio::test(start_paused = true)]
async fn the_plan_keeps_the_final_phase_s_time() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    c.task("flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(2))
        .register(|| async {})
        .unwrap();
    c.task("slow")
        .timeout(Duration::from_secs(30))
        .register(|| async {})
        .unwrap();
    let plan = c.plan();
    assert_eq!(
        plan.phases().last().map(|p| p.priority()),
        Some(Priority::Final)
    );
    assert_eq!(plan.kept_for_final(), Duration::from_secs(2));
    assert_eq!(plan.worst_case(), Duration::from_secs(10));
    let roomy = Compactor::builder()
        .deadline(Duration::from_secs(100))
        .build();
    roomy
        .task("flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(2))
        .register(|| async {})
        .unwrap();
    roomy
        .task("slow")
        .timeout(Duration::from_secs(30))
        .register(|| async {})
        .unwrap();
    assert_eq!(roomy.plan().worst_case(), Duration::from_secs(32));
}
