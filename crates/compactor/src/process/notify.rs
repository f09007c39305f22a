//! systemd's notification protocol, for a shutdown under a `Type=notify`
//! service: datagrams of `KEY=value` lines to the socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::compactor::Compactor;
use crate::inspect::Progress;
use crate::run::{RunContext, Ticker};

/// How often the status line is sent.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How much longer each extension lets the shutdown go: renewed while
/// tasks finish, so a shutdown where nothing finishes for this long gets
/// no more time than systemd's own timeout.
const EXTEND_BY: Duration = Duration::from_secs(5);
/// The longest status line sent: systemd drops a message over 4096 bytes.
const STATUS_CHARS: usize = 900;

/// Where systemd listens.
struct Notifier {
    socket: UnixDatagram,
    to: String,
}

impl Notifier {
    fn from_env() -> Option<Notifier> {
        let to = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())?;
        // A child of the service inherits the variable: only the process
        // systemd started speaks for the unit.
        if let Ok(pid) = std::env::var("SYSTEMD_EXEC_PID") {
            if pid.trim() != std::process::id().to_string() {
                return None;
            }
        }
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .inspect_err(|error| tracing::warn!(%error, "NOTIFY_SOCKET is set, but no socket to it could be made"))
            .ok()?;
        Some(Notifier { socket, to })
    }

    /// Sends one message; a full or missing socket loses it (systemd's own
    /// timeout then applies), which is logged at debug.
    fn send(&self, message: &str) {
        let sent = match self.to.strip_prefix('@') {
            Some(name) => send_abstract(&self.socket, name, message),
            None => self.socket.send_to(message.as_bytes(), &self.to).map(drop),
        };
        if let Err(error) = sent {
            tracing::debug!(%error, socket = %self.to, "a systemd notification was not sent");
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, message: &str) -> std::io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message.as_bytes(), &address).map(drop)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// The extension as the shutdown stands: [`EXTEND_BY`], never past the
/// deadline + exit grace (`left`).
fn extension(left: Duration) -> String {
    let usec = EXTEND_BY.min(left).as_micros();
    format!("EXTEND_TIMEOUT_USEC={usec}")
}

/// Tells systemd the shutdown of `compactor` begins, and returns the
/// ticker that keeps it informed; `None` outside systemd.
pub(crate) fn run_begins(compactor: &Compactor, tasks: usize) -> Option<Ticker> {
    let config = &compactor.config();
    let notifier = Notifier::from_env()?;
    let (deadline, grace) = (config.deadline, config.exit_grace);
    // Nothing finishes during the drain delay: the first extension covers it.
    let first = EXTEND_BY
        .saturating_add(config.drain_delay)
        .min(deadline.saturating_add(grace));
    notifier.send(&format!(
        "STOPPING=1\nSTATUS=shutting down: {tasks} task(s)\nEXTEND_TIMEOUT_USEC={}",
        first.as_micros()
    ));
    let state = Arc::new(Mutex::new((0usize, None::<Instant>)));
    let tick = move |ctx: &RunContext, over: bool| {
        let now = Instant::now();
        if !over {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let sent = &mut state.1;
            if sent.is_some_and(|at| now.saturating_duration_since(at) < STATUS_EVERY) {
                return;
            }
            *sent = Some(now);
        }
        let progress = Progress::of(ctx, deadline);
        if over {
            notifier.send(&format!(
                "STATUS=shutdown finished: {}/{} tasks",
                progress.finished(),
                progress.total()
            ));
            return;
        }
        let status = crate::report::shown(&progress.to_string(), STATUS_CHARS);
        notifier.send(&format!("STATUS={status}"));
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        if progress.finished() > state.0 {
            // Getting somewhere: a while longer, within the deadline.
            state.0 = progress.finished();
            notifier.send(&extension(progress.remaining().saturating_add(grace)));
        }
    };
    Some(Ticker {
        every: STATUS_EVERY,
        tick: Arc::new(tick),
    })
}
