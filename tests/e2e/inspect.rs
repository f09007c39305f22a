//! The inspect example as a real process: the plan it prints matches the
//! service it registers, and the progress it prints follows the run.

use compactor_e2e::{RUN, Running};

#[test]
fn the_inspect_example_prints_the_plan_then_the_progress_then_a_clean_report() {
    let app = Running::start_path(env!("CARGO_BIN_EXE_inspect").as_ref(), &[]);
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(0), "{out:#?}");
    let has = |text: &str| out.iter().any(|l| l.contains(text));
    assert!(
        has("shutdown plan: 5 tasks in 3 phases; worst case 22.6s"),
        "{out:#?}"
    );
    assert!(
        has("critical path: http -> write-buffer -> db-pool -> logs"),
        "{out:#?}"
    );
    assert!(has("flowchart TD"), "{out:#?}");
    assert!(has("  t3 --> t2"), "write-buffer before db-pool: {out:#?}");
    assert!(has("fits Kubernetes' default grace period"), "{out:#?}");
    // A line while the server drains, one while the buffer flushes with the
    // pool waiting on it, and the report.
    assert!(has("running: http ("), "{out:#?}");
    assert!(has("(db-pool on write-buffer)"), "{out:#?}");
    assert!(has("5 tasks, clean"), "{out:#?}");
    let first = out
        .iter()
        .position(|l| l.starts_with("shutdown: "))
        .expect("progress");
    let report = out
        .iter()
        .position(|l| l.contains("5 tasks, clean"))
        .expect("report");
    assert!(first < report);
}

#[test]
fn the_inspect_example_can_print_dot_and_refuses_unknown_arguments() {
    let (code, out) =
        Running::start_path(env!("CARGO_BIN_EXE_inspect").as_ref(), &["--dot"]).finish(RUN);
    assert_eq!(code, Some(0), "{out:#?}");
    assert!(out.iter().any(|l| l == "digraph shutdown {"), "{out:#?}");
    let (code, _, err) =
        Running::start_path(env!("CARGO_BIN_EXE_inspect").as_ref(), &["--bogus"]).finish_all(RUN);
    assert_eq!(code, Some(2));
    assert!(
        err.iter().any(|l| l.contains("unknown argument `--bogus`")),
        "{err:#?}"
    );
}
