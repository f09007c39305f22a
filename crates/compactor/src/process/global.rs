//! Making instances that may listen for signals: the global one and those
//! a [`Builder`] builds. They are given the process layer's hooks here, so
//! the engine, which calls them, needs to know nothing of signals.

use std::sync::{Arc, OnceLock};

use super::HOOKS;
use crate::compactor::Compactor;
use crate::config::{Builder, Config};
use crate::error::Error;

static GLOBAL: OnceLock<Compactor> = OnceLock::new();

/// An instance with `config`; the global one listens by default.
fn built(config: Config, global: bool) -> Compactor {
    let auto_listen = config.auto_listen.unwrap_or(global);
    let exit = config.signal_exit;
    let on_panic = config.shutdown_on_panic;
    let compactor = Compactor::from_parts(
        Arc::new(config),
        crate::registry::Registry::new(),
        auto_listen,
        exit,
        Some(&HOOKS),
    );
    if on_panic {
        compactor.shutdown_on_panic();
    }
    compactor
}

impl Compactor {
    /// The process-wide instance, created with the default settings on first
    /// use unless [`init_global`](Self::init_global) configured it before.
    ///
    /// It [listens for signals](Self::listen_for_signals) by itself from its
    /// first registration, from any thread (turn that off with
    /// [`Builder::auto_listen`]): after a `SIGTERM` it runs the cleanup and
    /// exits with 143.
    pub fn global() -> &'static Compactor {
        GLOBAL.get_or_init(|| built(Config::default(), true))
    }

    /// Configures the process-wide instance. Call it once, before anything
    /// calls [`global`](Self::global).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyInitialized`] if the global instance already exists
    /// (it keeps its settings), or the builder's [`Error::InvalidConfig`].
    pub fn init_global(builder: Builder) -> Result<&'static Compactor, Error> {
        let compactor = built(builder.into_config()?, true);
        let mut fresh = Some(compactor);
        let global = GLOBAL.get_or_init(|| fresh.take().expect("taken once"));
        match fresh {
            None => Ok(global),
            Some(_) => Err(Error::AlreadyInitialized),
        }
    }

    /// Runs the shutdown when the process receives one of the configured
    /// [signals](Builder::signals) (`SIGINT` and `SIGTERM` by default; Ctrl-C
    /// on Windows). Idempotent.
    ///
    /// - The first signal starts the shutdown ([`ShutdownReason::Signal`](crate::report::ShutdownReason::Signal)).
    /// - When it has finished, the process exits as set by
    ///   [`Builder::signal_exit`] (by default with 128 + the signal number),
    ///   unless the application waits for the report ([`wait`](Self::wait),
    ///   [`shutdown`](Self::shutdown), [`run_until_shutdown`](Self::run_until_shutdown)):
    ///   then it has the report and ends the process itself, within
    ///   [`Builder::exit_grace`].
    /// - If the run has not finished by the deadline + the exit grace, the
    ///   process ends with the signal's code and one stderr line naming the
    ///   cleanups still running, even when every runtime worker is blocked.
    /// - A second signal during the run ends the process at once with that
    ///   signal's code, with the same line.
    /// - A signal after the run, or one that no instance listens for (every
    ///   instance that listened is gone), ends the process with 128 + n.
    ///
    /// The process always ends with an exit code, never by re-raising the
    /// signal, so this works the same as PID 1 in a container without an
    /// init, under tini or dumb-init, supervisord and systemd.
    ///
    /// The global instance calls this by itself at its first registration,
    /// unless [`Builder::auto_listen`] turned it off. On Unix the listener is
    /// a thread (one per process, shared by the instances that listen), so it
    /// works from any thread, with any runtime or none. A run a signal starts
    /// goes on the library's own runtime (two worker threads), which a signal
    /// finds alive and idle whatever the application's runtimes are doing.
    ///
    /// # Errors
    ///
    /// [`Error::Signals`] if the handlers cannot be installed (on Windows:
    /// when called outside a tokio runtime).
    pub fn listen_for_signals(&self) -> Result<(), Error> {
        super::listen(self)
    }
}

impl Builder {
    /// Builds the instance. It never panics: a refused setting is logged,
    /// and the instance refuses every registration with the
    /// [`Error::InvalidConfig`] naming it (its other settings are the
    /// defaults), so the first `register(..)?` reports it.
    pub fn build(self) -> Compactor {
        match self.into_config() {
            Ok(config) => built(config, false),
            Err(error) => {
                tracing::error!(%error, "the instance refuses every registration");
                let config = Config {
                    refused: Some(error),
                    ..Config::default()
                };
                built(config, false)
            }
        }
    }
}
