//! An instance's services still alive: a run's end waits (briefly) for the
//! services it stopped or skipped to be gone, and reports those that are
//! not.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The names of the services alive, one entry per service.
#[derive(Default)]
pub(crate) struct LiveServices {
    names: Mutex<Vec<Arc<str>>>,
    gone: Notify,
}

/// Held by a service's future: its drop (the service ended, or was
/// aborted and dropped) takes the service off the list.
pub(crate) struct Alive {
    services: Arc<LiveServices>,
    name: Arc<str>,
}

impl LiveServices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<str>>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the service `name` on the list until the guard is dropped.
    pub(crate) fn enter(services: &Arc<LiveServices>, name: Arc<str>) -> Alive {
        services.lock().push(name.clone());
        Alive {
            services: services.clone(),
            name,
        }
    }

    /// The services alive now.
    pub(crate) fn alive(&self) -> Vec<Arc<str>> {
        self.lock().clone()
    }

    /// Returns once no service is alive.
    pub(crate) async fn settled(&self) {
        loop {
            let gone = self.gone.notified();
            if self.lock().is_empty() {
                return;
            }
            gone.await;
        }
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        let mut names = self.services.lock();
        if let Some(at) = names.iter().position(|n| Arc::ptr_eq(n, &self.name)) {
            names.swap_remove(at);
        }
        drop(names);
        self.services.gone.notify_waiters();
    }
}
