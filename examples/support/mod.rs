//! What the examples share: the logging set-up and the report.

/// Logs to stderr, filtered by `RUST_LOG` (targets and levels, as in
/// `info,compactor=debug`; default `info`), in colour only on a terminal.
pub(crate) fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse().ok())
        .unwrap_or_else(|| "info".parse().expect("a valid filter"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(fmt).with(filter).init();
}

/// Prints the report's table, and writes it as JSON to `json` if given.
#[allow(dead_code)] // Not every example writes its report.
pub(crate) fn print_report(report: &compactor::ShutdownReport, json: Option<&std::path::Path>) {
    println!("{report}");
    if let Some(path) = json {
        let json = serde_json::to_string_pretty(report).expect("a report serializes");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("could not write the report to {}: {e}", path.display());
        }
    }
}
