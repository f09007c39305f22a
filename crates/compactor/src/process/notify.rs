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

/// Microseconds, for `EXTEND_TIMEOUT_USEC`.
fn usec(d: Duration) -> u128 {
    d.as_micros()
}

/// Tells systemd the shutdown of `compactor` begins, and returns the
/// ticker that keeps it informed; `None` outside systemd or when turned off.
pub(crate) fn run_begins(compactor: &Compactor, tasks: usize) -> Option<Ticker> {
    let config = &compactor.inner.config;
    if !config.systemd_notify {
        return None;
    }
    let notifier = Notifier::from_env()?;
    let (deadline, grace) = (config.deadline, config.exit_grace);
    notifier.send(&format!(
        "STOPPING=1\nSTATUS=shutting down: {tasks} task(s)\nEXTEND_TIMEOUT_USEC={}",
        usec(deadline.saturating_add(grace))
    ));
    let state = Arc::new(Mutex::new((0usize, None::<Instant>)));
    let tick = move |ctx: &RunContext, over: bool| {
        let progress = Progress::of(ctx, deadline);
        if over {
            notifier.send(&format!(
                "STATUS=shutdown finished: {}/{} tasks",
                progress.finished(),
                progress.total()
            ));
            return;
        }
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let (finished, sent) = &mut *state;
        let now = Instant::now();
        if sent.is_some_and(|at| now.saturating_duration_since(at) < STATUS_EVERY) {
            return;
        }
        *sent = Some(now);
        let mut message = format!("STATUS={progress}");
        if progress.finished() > *finished {
            // Getting somewhere: as long again as the deadline allows.
            *finished = progress.finished();
            let left = progress.remaining().saturating_add(grace);
            message.push_str(&format!("\nEXTEND_TIMEOUT_USEC={}", usec(left)));
        }
        notifier.send(&message);
    };
    Some(Ticker {
        every: STATUS_EVERY,
        tick: Arc::new(tick),
    })
}
