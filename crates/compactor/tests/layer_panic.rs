//! A panic in a tracing layer as a phase budget's cut-off is booked: its
//! own test binary, since which subscriber a span sees is process-wide
//! state (tracing caches each callsite's interest across threads).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use compactor::{Compactor, Priority};
/// A tracing layer that panics the first time a task is recorded
/// cancelled.
struct PanicsOnCancelled(Arc<AtomicBool>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnCancelled {
    fn on_record(
        &self,
        _span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Cancelled(bool);
        impl tracing::field::Visit for Cancelled {
            fn record_debug(&mut self, field: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0 |= field.name() == "outcome" && format!("{v:?}").contains("cancelled");
            }
        }
        let mut seen = Cancelled(false);
        values.record(&mut seen);
        if seen.0 && !self.0.swap(true, Ordering::SeqCst) {
            panic!("a tracing layer panicked");
        }
    }
}

/// A panic in the booking of a phase budget's cut-off (a tracing layer's)
/// finds every attempt it stopped aborted already, and later timeouts still
/// abort theirs: nothing runs behind the report.
#[test]
fn a_panic_booking_a_phase_budgets_cut_off_leaves_nothing_running() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let panicked = Arc::new(AtomicBool::new(false));
    let subscriber = tracing_subscriber::registry().with(PanicsOnCancelled(panicked.clone()));
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ticking = |ticks: &Arc<AtomicUsize>| {
        let ticks = ticks.clone();
        move || {
            let ticks = ticks.clone();
            async move {
                while ticks.load(Ordering::SeqCst) < usize::MAX {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    };
    let (cut, timed_out) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let c = Compactor::builder()
        .deadline(Duration::from_secs(20))
        .phase_budget(Priority::High, Duration::from_millis(100))
        .build();
    c.task("cut")
        .priority(Priority::High)
        .register(ticking(&cut))
        .unwrap();
    c.task("timed-out")
        .timeout(Duration::from_millis(100))
        .register(ticking(&timed_out))
        .unwrap();
    let report = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.shutdown()).await })
        .expect("a report");
    assert!(panicked.load(Ordering::SeqCst), "the layer never panicked");
    let at_report = (cut.load(Ordering::SeqCst), timed_out.load(Ordering::SeqCst));
    runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    let after = (cut.load(Ordering::SeqCst), timed_out.load(Ordering::SeqCst));
    assert_eq!(after, at_report, "ran behind the report: {report}");
}
