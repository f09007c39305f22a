//! Where a run's messages wait for the runner: the ends of attempts, and
//! requests for the report so far.
//!
//! Senders push under a lock and wake the one receiver, which takes
//! everything waiting in one go: many attempts that end together cost the
//! runner one wake-up.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

pub(crate) struct Mailbox<T> {
    inbox: Mutex<Inbox<T>>,
    ready: Notify,
}

struct Inbox<T> {
    items: Vec<T>,
    closed: bool,
}

impl<T> Mailbox<T> {
    pub(crate) fn new() -> Self {
        Mailbox {
            inbox: Mutex::new(Inbox {
                items: Vec::new(),
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inbox<T>> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves `item` for the receiver; gives it back once the mailbox is closed.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut inbox = self.lock();
        if inbox.closed {
            return Err(item);
        }
        inbox.items.push(item);
        drop(inbox);
        self.ready.notify_one();
        Ok(())
    }

    /// Wakes the receiver with nothing sent: it looks at its state again.
    pub(crate) fn nudge(&self) {
        self.ready.notify_one();
    }

    /// Moves everything waiting into `into`.
    pub(crate) fn take(&self, into: &mut Vec<T>) {
        into.append(&mut self.lock().items);
    }

    /// Waits until something may have been sent since the last wait (it may
    /// have been taken already: take, then look).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Refuses every later message and drops those still waiting.
    pub(crate) fn close(&self) {
        let left = {
            let mut inbox = self.lock();
            inbox.closed = true;
            std::mem::take(&mut inbox.items)
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn messages_arrive_in_order_and_wake_the_receiver() {
        let mailbox = Arc::new(Mailbox::new());
        let sender = mailbox.clone();
        let sent = tokio::spawn(async move {
            for i in 0..100 {
                sender.send(i).unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        let mut batch = Vec::new();
        while got.len() < 100 {
            mailbox.ready().await;
            mailbox.take(&mut batch);
            got.append(&mut batch);
        }
        sent.await.unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_closed_mailbox_gives_messages_back_and_drops_the_waiting_ones() {
        let mailbox = Mailbox::new();
        let waiting = Arc::new(());
        mailbox.send(waiting.clone()).unwrap();
        mailbox.close();
        assert_eq!(
            Arc::strong_count(&waiting),
            1,
            "the waiting message was dropped"
        );
        let Err(back) = mailbox.send(waiting.clone()) else {
            panic!("a closed mailbox took a message");
        };
        assert!(Arc::ptr_eq(&back, &waiting), "the message came back");
        let mut batch = Vec::new();
        mailbox.take(&mut batch);
        assert!(batch.is_empty());
    }
}
