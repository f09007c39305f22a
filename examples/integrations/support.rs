//! What the integration examples share: `--shutdown-after SECS`, so each
//! runs without a terminal (and stops by itself) as well as until Ctrl-C.

use std::time::Duration;

use compactor::Compactor;

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
        Compactor::global().request_shutdown("--shutdown-after");
    });
    Ok(())
}
