//! What the integration examples share: a listener on 127.0.0.1, `main`'s
//! end, and `--shutdown-after SECS`, so each runs without a
//! terminal (and stops by itself) as well as until Ctrl-C.

use std::time::Duration;

use compactor::{Compactor, ShutdownReport};
use tokio::net::TcpListener;

/// A listener on a free port of 127.0.0.1, its address printed as
/// "`what` listening on ...".
pub(crate) async fn listen(what: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{what} listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Runs the global instance until its shutdown (its services do the
/// serving), prints the report and returns it, for `main` to return.
#[allow(dead_code, reason = "not every example ends this way")]
pub(crate) async fn run() -> ShutdownReport {
    let c = Compactor::global();
    let report = c.run_until_shutdown(|stop| stop.cancelled_owned()).await;
    println!("{report}");
    report
}

/// Reads `--shutdown-after SECS` from the command line and, if given,
/// requests the global instance's shutdown that long from now. Call it
/// inside the runtime.
pub(crate) fn shutdown_after_from_args() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let after = match args.as_slice() {
        [] => return Ok(()),
        [flag, secs] if flag == "--shutdown-after" => secs
            .parse()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("--shutdown-after {secs}: give seconds, such as 3"))?,
        other => {
            return Err(format!(
                "unknown arguments {other:?}; try --shutdown-after 3"
            ));
        }
    };
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        Compactor::global().trigger();
    });
    Ok(())
}
