//! Signal numbers shared between listening instances: a binary of its own,
//! since listening installs the process's signal handling.

use compactor::{Compactor, signal::Signal};

#[test]
fn one_signal_cannot_both_show_progress_and_start_a_shutdown() {
    let inspected = Compactor::builder().progress_signal(Signal::User1).build();
    inspected.listen_for_signals().unwrap();

    let library = Compactor::builder().signals([Signal::User1]).build();
    let error = library.listen_for_signals().unwrap_err().to_string();
    assert!(
        error.contains("SIGUSR1 is another listening instance's progress signal"),
        "{error}"
    );

    let other = Compactor::builder().signals([Signal::User2]).build();
    other.listen_for_signals().unwrap();
    let second = Compactor::builder().progress_signal(Signal::User2).build();
    let error = second.listen_for_signals().unwrap_err().to_string();
    assert!(
        error.contains("SIGUSR2 is another listening instance's shutdown signal"),
        "{error}"
    );

    // Nothing registered is lost: the refused instance still shuts down.
    library.register("kept", || async {}).unwrap();
    let report = block_on(library.shutdown());
    assert!(report.is_clean() && report.tasks().len() == 1);

    // Once the progress signal's instance has gone, the number is free.
    drop(inspected);
    let later = Compactor::builder().signals([Signal::User1]).build();
    later.listen_for_signals().unwrap();
}

#[test]
fn a_progress_signal_that_is_also_a_shutdown_signal_is_refused() {
    let error = Compactor::builder()
        .signals([Signal::Terminate])
        .progress_signal(Signal::Terminate)
        .build()
        .register("probe", || async {})
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("progress_signal") && error.contains("SIGTERM"),
        "{error}"
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
