//! The worker example as a real process: a thread that owns its state
//! answers a compaction request and a stop request at shutdown.

use compactor_e2e::{RUN, Running};

#[test]
fn the_worker_compacts_then_stops_and_the_report_shows_what_it_freed() {
    let app = Running::start_path(env!("CARGO_BIN_EXE_worker").as_ref(), &["--run-for", "0.3"]);
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(0), "{out:#?}");
    let has = |text: &str| out.iter().any(|l| l.contains(text));
    assert!(has("4 tasks, clean"), "{out:#?}");
    let compact = out
        .iter()
        .find(|l| l.contains("compact-cache"))
        .expect("the compaction's line");
    assert!(
        compact.contains("succeeded") && compact.contains("freed"),
        "{compact}"
    );
    let order: Vec<usize> = ["compact-cache", "stop-worker", "join-worker"]
        .iter()
        .map(|task| out.iter().position(|l| l.contains(task)).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "compact, then stop, then join: {out:#?}"
    );
}
