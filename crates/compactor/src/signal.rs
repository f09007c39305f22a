//! Process signals: which ones start a shutdown, what the process does after
//! it, and the listener that survives a wedged runtime.
//!
//! On Unix the listener is a plain thread (one per process: `hub` below)
//! reading a socket signal-hook writes to, not a tokio task: when every
//! runtime worker is stuck in a misbehaving cleanup, a second signal must
//! still end the process.

use std::fmt;
use std::sync::Arc;

use crate::compactor::{Compactor, Inner};
use crate::{Error, ShutdownReason};

/// A signal that can start a shutdown.
///
/// The numbers are those of Linux, the BSDs and macOS; on Windows only
/// [`Signal::Interrupt`] (Ctrl-C) is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGINT` (2): Ctrl-C in a terminal.
    Interrupt,
    /// `SIGTERM` (15): what `kill`, systemd and Kubernetes send to stop a process.
    Terminate,
    /// `SIGHUP` (1): the terminal went away.
    Hangup,
    /// `SIGQUIT` (3): Ctrl-\ in a terminal.
    Quit,
}

impl Signal {
    /// The signal's number.
    pub const fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::Terminate => 15,
        }
    }

    /// The conventional name, e.g. `"SIGTERM"`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The exit code a shell reports for a process ended by this signal:
    /// 128 + its number (130 for `SIGINT`, 143 for `SIGTERM`).
    pub const fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    #[cfg(unix)]
    pub(crate) fn from_number(number: i32) -> Option<Signal> {
        [
            Signal::Hangup,
            Signal::Interrupt,
            Signal::Quit,
            Signal::Terminate,
        ]
        .into_iter()
        .find(|s| s.number() == number)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What the process does once a shutdown started by a signal has finished.
///
/// A second signal during the run always ends the process at once, with the
/// code of that signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SignalExit {
    /// Exit with 128 + the signal number (130 for `SIGINT`, 143 for `SIGTERM`),
    /// as a process killed by the signal would. The default.
    #[default]
    WithSignalCode,
    /// Exit with 0 after a clean run (for supervisors that count 143 as a
    /// failure), with 128 + the signal number otherwise.
    ZeroIfClean,
    /// Do not exit: the application decides, e.g. by returning
    /// [`ShutdownReport::exit_code`](crate::ShutdownReport::exit_code) from
    /// `main`. [`Compactor::run_until_shutdown`] switches to this.
    Return,
}

impl SignalExit {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            SignalExit::WithSignalCode => 0,
            SignalExit::ZeroIfClean => 1,
            SignalExit::Return => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> SignalExit {
        match v {
            1 => SignalExit::ZeroIfClean,
            2 => SignalExit::Return,
            _ => SignalExit::WithSignalCode,
        }
    }
}

/// The exit code for a run that ended this way.
pub(crate) fn exit_code(reason: &ShutdownReason, clean: bool, policy: SignalExit) -> u8 {
    match reason {
        ShutdownReason::Signal(_) if clean && policy == SignalExit::ZeroIfClean => 0,
        ShutdownReason::Signal(signal) => signal.exit_code(),
        ShutdownReason::Panic(_) => 101,
        ShutdownReason::ServiceFailed(_) => 1,
        _ if clean => 0,
        _ => 1,
    }
}

/// Starts listening (once per instance): the fast path on the runtime, if
/// there is one, and the instance's place in the process's listener.
#[cfg(unix)]
pub(crate) fn listen(inner: &Arc<Inner>) -> Result<(), Error> {
    use std::sync::atomic::Ordering;

    if inner.signals_armed.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    // The fast path registers first, so its wake-up is written first when a
    // signal arrives (the listener registers after it; see `hub`).
    let runtime = tokio::runtime::Handle::try_current().ok();
    let fast = runtime
        .as_ref()
        .is_some_and(|runtime| start_fast_path(inner, runtime));
    let numbers: Vec<i32> = inner.config.signals.iter().map(|s| s.number()).collect();
    if let Err(problem) = hub::add(inner, numbers, runtime, fast) {
        inner.signals_armed.store(false, Ordering::Release);
        inner.signal_tasks.cancel();
        return Err(Error::Signals { problem });
    }
    Ok(())
}

/// Stops listening for an instance that is going.
#[cfg(unix)]
pub(crate) fn stop_listening(instance: u64) {
    hub::remove(instance);
}

/// The process's signal listener: one thread, started by the first
/// instance that listens and kept for the life of the process, reads a
/// socket that signal-hook writes to when a signal arrives, and hands the
/// signal to every instance listening for it.
///
/// A signal is registered with signal-hook (a flag and a write to the
/// socket) while any instance listens for it. The last instance to go takes
/// the registrations back and leaves a fence byte in the socket: bytes
/// before it are signals from before, counted for no instance that comes
/// later. The next instance to listen registers them again, after its fast
/// path, so a signal writes the fast path's wake-up before the listener's
/// (signal-hook runs a signal's actions in the order they were registered).
/// An instance that joins others already listening writes a marker of its
/// own instead. (With nothing registered, a signal does nothing: signal-hook
/// keeps its handler installed, as tokio does, and does not return the
/// default action.)
///
/// One thread for the process rather than one per instance: an instance
/// that starts listening costs two registrations, not a thread, and a
/// signal that arrives soon after finds no thread still starting up.
#[cfg(unix)]
mod hub {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

    use super::{Arrival, Signal, handle};
    use crate::compactor::{Compactor, Inner};

    struct Hub {
        /// The write end signal-hook gets a copy of per registration.
        wake: UnixStream,
        registered: Vec<Registered>,
        listening: Vec<Listening>,
        /// The signals of the last look that found any.
        last_kinds: Vec<i32>,
        /// Deliveries handed out on their flag alone, whose bytes are still
        /// to be read (a signal between its flag and its byte when a look
        /// took the flags).
        ahead: usize,
        /// The markers and fences in the socket still to be read, oldest
        /// first, each with the instances that count signals from it on.
        marked: std::collections::VecDeque<Vec<u64>>,
        /// Whether every signal byte in the socket comes before a marker
        /// or fence still to be read, or has been read: true after a fence,
        /// false once a signal is registered again.
        fenced: bool,
    }

    /// The byte written into the socket under the hub's lock by an
    /// instance that joins others listening (a marker) and by the last
    /// instance to go (a fence). signal-hook writes `X` for a signal, so
    /// the listener, reading in order, knows which signals came before:
    /// they are not counted for an instance that counts from the byte on.
    const MARK: u8 = b'+';

    /// A signal known to signal-hook.
    struct Registered {
        number: i32,
        arrived: Arc<AtomicBool>,
        /// The flag's and the write's registrations, while an instance
        /// listens.
        ids: Option<[signal_hook::SigId; 2]>,
    }

    struct Listening {
        instance: u64,
        owner: Weak<Inner>,
        numbers: Vec<i32>,
        /// Signals received so far: the second one forces the exit.
        received: u32,
        /// Whether the listener has read the instance's marker: signals
        /// whose bytes came before it are not the instance's.
        active: bool,
        runtime: Option<tokio::runtime::Handle>,
        /// Whether a fast path on the runtime starts the run.
        fast: bool,
    }

    static HUB: OnceLock<Result<Mutex<Hub>, String>> = OnceLock::new();

    fn hub() -> Result<MutexGuard<'static, Hub>, String> {
        let hub = HUB.get_or_init(|| {
            let (read, wake) = UnixStream::pair().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("compactor-signals".to_owned())
                .spawn(move || listen(read))
                .map_err(|e| format!("cannot start the listener thread: {e}"))?;
            Ok(Mutex::new(Hub {
                wake,
                registered: Vec::new(),
                listening: Vec::new(),
                last_kinds: Vec::new(),
                ahead: 0,
                marked: std::collections::VecDeque::new(),
                fenced: true,
            }))
        });
        match hub {
            Ok(hub) => Ok(hub.lock().unwrap_or_else(PoisonError::into_inner)),
            Err(problem) => Err(problem.clone()),
        }
    }

    pub(super) fn add(
        inner: &Arc<Inner>,
        numbers: Vec<i32>,
        runtime: Option<tokio::runtime::Handle>,
        fast: bool,
    ) -> Result<(), String> {
        hub()?
            .join(Listening {
                instance: inner.id,
                owner: Arc::downgrade(inner),
                numbers,
                received: 0,
                active: false,
                runtime,
                fast,
            })
            .map_err(|e| e.to_string())
    }

    /// The instance, if it is still there, and the runtime it listened from.
    pub(super) fn find(instance: u64) -> Option<(Compactor, Option<tokio::runtime::Handle>)> {
        let hub = hub().ok()?;
        let l = hub.listening.iter().find(|l| l.instance == instance)?;
        let inner = l.owner.upgrade()?;
        Some((Compactor { inner }, l.runtime.clone()))
    }

    pub(super) fn remove(instance: u64) {
        if let Ok(mut hub) = hub() {
            hub.leave(instance);
        }
    }

    impl Hub {
        /// Registers the instance's signals and adds it, counting from
        /// what its place in the socket allows: at once when nothing
        /// unread can be a signal from before it; else from the fence
        /// still to be read, or from a marker of its own (instances
        /// already listening keep signals coming). On an error nothing is
        /// added, and registrations no instance needs are taken back.
        fn join(&mut self, mut joining: Listening) -> std::io::Result<()> {
            let alone = self.listening.is_empty();
            // Read before registering: whether every signal byte in the
            // socket lies behind the newest marker or fence, or is read.
            let fenced = self.fenced;
            for &number in &joining.numbers {
                if let Err(e) = self.want(number) {
                    if alone {
                        self.quiet();
                    }
                    return Err(e);
                }
            }
            // Nothing was registered since the newest byte still to be
            // read (with none to be read, nothing unread is a signal); else
            // a marker of its own, or at once if it cannot be written.
            let counts_from = match (alone && fenced) || self.mark() {
                true => self.marked.back_mut(),
                false => None,
            };
            joining.active = match counts_from {
                Some(waiting) => {
                    waiting.push(joining.instance);
                    false
                }
                None => true,
            };
            self.listening.push(joining);
            Ok(())
        }

        fn leave(&mut self, instance: u64) {
            let Some(at) = self.listening.iter().position(|l| l.instance == instance) else {
                return;
            };
            self.listening.swap_remove(at);
            if self.listening.is_empty() {
                self.quiet();
            }
        }

        /// With no instance listening: takes every registration back and
        /// fences off the signals that came before.
        fn quiet(&mut self) {
            let mut any = false;
            for ids in self.registered.iter_mut().filter_map(|r| r.ids.take()) {
                // signal-hook waits for handlers still running the actions,
                // so no byte of theirs can follow the fence.
                for id in ids {
                    signal_hook::low_level::unregister(id);
                }
                any = true;
            }
            if any && self.mark() {
                self.fenced = true;
            }
        }

        /// Writes a marker (or fence) into the socket; whether it could.
        fn mark(&mut self) -> bool {
            let written = (&self.wake).write(&[MARK]).is_ok_and(|n| n == 1);
            if written {
                self.marked.push_back(Vec::new());
            }
            written
        }

        fn want(&mut self, number: i32) -> std::io::Result<()> {
            let at = match self.registered.iter().position(|r| r.number == number) {
                Some(at) if self.registered[at].ids.is_some() => return Ok(()),
                Some(at) => at,
                None => {
                    self.registered.push(Registered {
                        number,
                        arrived: Arc::new(AtomicBool::new(false)),
                        ids: None,
                    });
                    self.registered.len() - 1
                }
            };
            // The flag first: the listener looks at the flags when woken.
            let flag = signal_hook::flag::register(number, self.registered[at].arrived.clone())?;
            let write = match self
                .wake
                .try_clone()
                .and_then(|wake| signal_hook::low_level::pipe::register(number, wake))
            {
                Ok(write) => write,
                Err(e) => {
                    signal_hook::low_level::unregister(flag);
                    return Err(e);
                }
            };
            self.registered[at].ids = Some([flag, write]);
            self.fenced = false;
            Ok(())
        }

        /// What the bytes read from the socket bring each instance: each
        /// byte but a marker is one delivery of a signal, and the flags
        /// tell which signals they were. Counting bytes, not flags, keeps
        /// two signals apart when the listener wakes only after both (a
        /// busy machine, a quick second Ctrl-C): a flag is set twice but
        /// read once. A flag seen before its byte counts as its delivery
        /// then, and that byte no more; other bytes whose flags an earlier
        /// look took are the signals of that look.
        fn arrivals(&mut self, read: &[u8]) -> Vec<Arrival> {
            let mut kinds: Vec<i32> = self
                .registered
                .iter()
                .filter(|r| r.arrived.swap(false, Ordering::AcqRel))
                .map(|r| r.number)
                .collect();
            let flagged = !kinds.is_empty();
            if flagged {
                self.last_kinds.clone_from(&kinds);
            } else {
                kinds.clone_from(&self.last_kinds);
            }
            let before: Vec<u32> = self.listening.iter().map(|l| l.received).collect();
            // Deliveries since the last marker, for the instances counting.
            let mut run = 0;
            let mut deliveries = 0;
            for &byte in read {
                if byte != MARK {
                    if self.ahead > 0 {
                        self.ahead -= 1;
                    } else {
                        run += 1;
                        deliveries += 1;
                    }
                    continue;
                }
                self.credit(&kinds, run);
                run = 0;
                for instance in self.marked.pop_front().unwrap_or_default() {
                    if let Some(l) = self.listening.iter_mut().find(|l| l.instance == instance) {
                        l.active = true;
                    }
                }
            }
            if flagged && deliveries < kinds.len() {
                // Flags whose bytes are still to come: a delivery each now.
                self.ahead += kinds.len() - deliveries;
                run += kinds.len() - deliveries;
            }
            self.credit(&kinds, run);
            let mut due = Vec::new();
            for (l, before) in self.listening.iter().zip(before) {
                if l.received == before {
                    continue;
                }
                let Some(signal) = kinds
                    .iter()
                    .filter(|n| l.numbers.contains(n))
                    .find_map(|&n| Signal::from_number(n))
                else {
                    continue;
                };
                if l.fast && before == 0 && l.received == 1 {
                    // The fast path is starting the run right now: the
                    // instance is looked up later, not touched (its
                    // counts, its flags) while that runs on another core.
                    due.push(Arrival {
                        instance: l.instance,
                        signal,
                        received: 1,
                        fast: true,
                        found: None,
                    });
                } else if let Some(inner) = l.owner.upgrade() {
                    due.push(Arrival {
                        instance: l.instance,
                        signal,
                        received: l.received,
                        fast: l.fast,
                        found: Some((Compactor { inner }, l.runtime.clone())),
                    });
                }
            }
            due
        }

        /// Counts `deliveries` of the signals `kinds` for every instance
        /// counting: all of them where every signal among them is one it
        /// listens for; otherwise one per signal of its own is all that is
        /// sure (a second one too many would end a process on one signal).
        fn credit(&mut self, kinds: &[i32], deliveries: usize) {
            if deliveries == 0 || kinds.is_empty() {
                return;
            }
            for l in self.listening.iter_mut().filter(|l| l.active) {
                let mine = kinds.iter().filter(|n| l.numbers.contains(n)).count();
                let count = match mine == kinds.len() {
                    true => deliveries,
                    false => mine.min(deliveries),
                };
                l.received = l.received.saturating_add(count as u32);
            }
        }
    }

    /// The listener thread: waits on the socket, then hands what arrived
    /// out, without holding the hub's lock (an instance that goes while
    /// being handled leaves the hub from this thread).
    fn listen(mut read: UnixStream) {
        let mut bytes = [0u8; 64];
        loop {
            let delivered = match read.read(&mut bytes) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the signal listener stopped");
                    return;
                }
            };
            let due = match hub() {
                Ok(mut hub) => hub.arrivals(&bytes[..delivered]),
                Err(_) => return,
            };
            for arrival in due {
                handle(arrival);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A hub with TERM and INT known (no handler installed: the
        /// flags are set by hand) and no listener thread.
        fn hub_of(listening: Vec<Listening>) -> (Hub, [Arc<AtomicBool>; 2]) {
            let (hub, flags, _read) = hub_with([15, 2], listening);
            (hub, flags)
        }

        /// A hub knowing `numbers`, none of them registered yet, and the
        /// socket's read end.
        fn hub_with(
            numbers: [i32; 2],
            listening: Vec<Listening>,
        ) -> (Hub, [Arc<AtomicBool>; 2], UnixStream) {
            let (wake, read) = UnixStream::pair().unwrap();
            let flags = [
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            ];
            let registered = numbers
                .into_iter()
                .zip(&flags)
                .map(|(number, arrived)| Registered {
                    number,
                    arrived: arrived.clone(),
                    ids: None,
                })
                .collect();
            let hub = Hub {
                wake,
                registered,
                listening,
                last_kinds: Vec::new(),
                ahead: 0,
                marked: std::collections::VecDeque::new(),
                fenced: true,
            };
            (hub, flags, read)
        }

        /// What the listener would read now.
        fn unread(read: &UnixStream) -> Vec<u8> {
            read.set_nonblocking(true).unwrap();
            let mut bytes = [0u8; 64];
            match (&*read).read(&mut bytes) {
                Ok(n) => bytes[..n].to_vec(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
                Err(e) => panic!("reading the socket: {e}"),
            }
        }

        fn is_active(hub: &Hub, instance: &Compactor) -> bool {
            hub.listening
                .iter()
                .any(|l| l.instance == instance.inner.id && l.active)
        }

        fn listening(instance: &Compactor, numbers: &[i32], fast: bool) -> Listening {
            Listening {
                instance: instance.inner.id,
                owner: Arc::downgrade(&instance.inner),
                numbers: numbers.to_vec(),
                received: 0,
                active: true,
                runtime: None,
                fast,
            }
        }

        fn counts(due: &[Arrival]) -> Vec<(u64, u32, bool)> {
            due.iter()
                .map(|a| (a.instance, a.received, a.found.is_some()))
                .collect()
        }

        #[test]
        fn two_signals_read_at_once_count_as_two() {
            let c = Compactor::new();
            let (mut hub, [term, _]) = hub_of(vec![listening(&c, &[2, 15], false)]);
            term.store(true, Ordering::SeqCst);
            // The listener woke late: both bytes are there, the flag once.
            let due = hub.arrivals(b"XX");
            assert_eq!(counts(&due), [(c.inner.id, 2, true)]);
        }

        #[test]
        fn bytes_whose_flag_was_taken_are_the_last_signals() {
            let c = Compactor::new();
            let (mut hub, [term, _]) = hub_of(vec![listening(&c, &[15], false)]);
            term.store(true, Ordering::SeqCst);
            assert_eq!(counts(&hub.arrivals(b"X")), [(c.inner.id, 1, true)]);
            // A second TERM set the flag before the first look took it.
            assert_eq!(counts(&hub.arrivals(b"X")), [(c.inner.id, 2, true)]);
        }

        #[test]
        fn a_flag_seen_before_its_byte_is_not_counted_again_for_the_byte() {
            let c = Compactor::new();
            let (mut hub, [term, int]) = hub_of(vec![listening(&c, &[2, 15], false)]);
            // SIGINT's byte is read; SIGTERM has set its flag, its byte
            // is still to come.
            int.store(true, Ordering::SeqCst);
            term.store(true, Ordering::SeqCst);
            assert_eq!(counts(&hub.arrivals(b"X")), [(c.inner.id, 2, true)]);
            // SIGTERM's byte: already counted.
            assert!(hub.arrivals(b"X").is_empty());
            // A later SIGTERM counts again.
            term.store(true, Ordering::SeqCst);
            assert_eq!(counts(&hub.arrivals(b"X")), [(c.inner.id, 3, true)]);
        }

        #[test]
        fn an_instance_counts_only_what_is_surely_its_own() {
            let both = Compactor::new();
            let term_only = Compactor::new();
            let (mut hub, [term, int]) = hub_of(vec![
                listening(&both, &[2, 15], false),
                listening(&term_only, &[15], false),
            ]);
            term.store(true, Ordering::SeqCst);
            int.store(true, Ordering::SeqCst);
            let due = hub.arrivals(b"XXX");
            assert_eq!(
                counts(&due),
                [(both.inner.id, 3, true), (term_only.inner.id, 1, true)]
            );
        }

        #[test]
        fn a_first_signal_the_fast_path_has_is_looked_up_later() {
            let c = Compactor::new();
            let (mut hub, [term, _]) = hub_of(vec![listening(&c, &[15], true)]);
            term.store(true, Ordering::SeqCst);
            assert_eq!(counts(&hub.arrivals(b"X")), [(c.inner.id, 1, false)]);
            term.store(true, Ordering::SeqCst);
            assert_eq!(counts(&hub.arrivals(b"X")), [(c.inner.id, 2, true)]);
        }

        #[test]
        fn signals_before_an_instance_s_marker_are_not_its_own() {
            let gone = Compactor::new();
            let c = Compactor::new();
            let mut late = listening(&c, &[15], false);
            late.active = false;
            let (mut hub, [term, _]) = hub_of(vec![listening(&gone, &[15], false), late]);
            hub.marked.push_back(vec![c.inner.id]);
            // Two signals for the instance that was listening, then the new
            // instance's marker, then one signal for both.
            term.store(true, Ordering::SeqCst);
            let due = hub.arrivals(b"XX+X");
            assert_eq!(
                counts(&due),
                [(gone.inner.id, 3, true), (c.inner.id, 1, true)]
            );
        }

        /// Real registrations, on SIGUSR1 (no other test raises it).
        #[test]
        fn registrations_follow_the_instances_and_a_fence_keeps_old_signals_out() {
            use signal_hook::consts::{SIGUSR1, SIGUSR2};

            let (first, second, third) = (Compactor::new(), Compactor::new(), Compactor::new());
            let (mut hub, [usr1, _], read) = hub_with([SIGUSR1, SIGUSR2], Vec::new());
            let joining = |c: &Compactor| listening(c, &[SIGUSR1], false);
            // Alone, with nothing unread: counts at once, writes nothing.
            hub.join(joining(&first)).unwrap();
            assert!(is_active(&hub, &first));
            assert_eq!(unread(&read), b"");
            signal_hook::low_level::raise(SIGUSR1).unwrap();
            assert!(usr1.load(Ordering::SeqCst));
            assert_eq!(unread(&read), b"X");
            usr1.store(false, Ordering::SeqCst);
            // Joining another: counts from a marker of its own.
            hub.join(joining(&second)).unwrap();
            assert!(!is_active(&hub, &second));
            assert_eq!(unread(&read), b"+");
            assert!(hub.arrivals(b"+").is_empty());
            assert!(is_active(&hub, &second));
            // The last to go takes the registrations back and fences off
            // the signals before.
            signal_hook::low_level::raise(SIGUSR1).unwrap();
            hub.leave(first.inner.id);
            hub.leave(second.inner.id);
            assert!(hub.registered.iter().all(|r| r.ids.is_none()));
            let stale = unread(&read);
            assert_eq!(stale, b"X+");
            signal_hook::low_level::raise(SIGUSR1).unwrap();
            assert_eq!(unread(&read), b"", "no registration, no byte");
            // The next one registers again and counts from the fence: the
            // signal before it is not its own, the one after is.
            hub.join(joining(&third)).unwrap();
            assert!(!is_active(&hub, &third));
            assert_eq!(unread(&read), b"", "the fence serves: no marker");
            signal_hook::low_level::raise(SIGUSR1).unwrap();
            let mut bytes = stale;
            bytes.extend(unread(&read));
            assert_eq!(bytes, b"X+X");
            // (SIGUSR1 is no `Signal`: the count is looked at directly.)
            hub.arrivals(&bytes);
            let received: Vec<(u64, u32)> = hub
                .listening
                .iter()
                .map(|l| (l.instance, l.received))
                .collect();
            assert_eq!(received, [(third.inner.id, 1)]);
            hub.leave(third.inner.id);
        }
    }
}

/// The first signal also reaches a task on the runtime, which drives the
/// run itself, so the shutdown starts without a thread hop. Only the start:
/// everything after it (the second signal, the default handling after the
/// run) stays with the listener thread, which works when the runtime does
/// not.
///
/// The task waits on a socket of its own that signal-hook writes to, which
/// the runtime's I/O driver watches: the worker that wakes for it runs the
/// task straight away, without tokio's signal driver in between (which
/// reads its pipe dry and broadcasts to every signal stream first). The
/// registrations live as long as the task: an instance that goes leaves
/// nothing in the signal handler. Returns whether the fast path is in
/// place; without one (no I/O driver on the runtime, a registration
/// refused) the listener thread starts the run.
#[cfg(unix)]
fn start_fast_path(inner: &Arc<Inner>, runtime: &tokio::runtime::Handle) -> bool {
    let _entered = runtime.enter();
    let Ok(fast) = FastPath::new(&inner.config.signals) else {
        return false;
    };
    let owner = Arc::downgrade(inner);
    let closed = inner.signal_tasks.clone();
    runtime.spawn(async move {
        let signal = tokio::select! {
            // The signal first: woken by it, the task looks at nothing else.
            biased;
            arrived = fast.arrival() => match arrived {
                Some(signal) => signal,
                None => return,
            },
            () = closed.cancelled() => return,
        };
        let Some(inner) = owner.upgrade() else { return };
        let compactor = Compactor { inner };
        tracing::info!(%signal, "signal received: starting shutdown");
        // Driven right here: no spawn between the signal and the run.
        if let Some(started) = compactor.start(ShutdownReason::Signal(signal)) {
            drop(compactor);
            started.run().await;
        }
        drop(fast);
    });
    true
}

/// The fast path's registrations: per signal a flag, then a write to the
/// socket the task waits on.
#[cfg(unix)]
struct FastPath {
    socket: tokio::net::UnixStream,
    flags: Vec<(Signal, Arc<std::sync::atomic::AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

#[cfg(unix)]
impl FastPath {
    /// Registers every signal, or none (what was registered is undone on
    /// the way out). Must be called inside the runtime.
    fn new(signals: &[Signal]) -> std::io::Result<FastPath> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut fast = FastPath {
            socket: tokio::net::UnixStream::from_std(read)?,
            flags: Vec::with_capacity(signals.len()),
            ids: Vec::with_capacity(2 * signals.len()),
        };
        for &signal in signals {
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            // The flag first: the task looks at the flags when woken.
            fast.ids
                .push(signal_hook::flag::register(signal.number(), flag.clone())?);
            fast.ids.push(signal_hook::low_level::pipe::register(
                signal.number(),
                write.try_clone()?,
            )?);
            fast.flags.push((signal, flag));
        }
        Ok(fast)
    }

    /// The first signal to arrive; `None` if the socket failed.
    async fn arrival(&self) -> Option<Signal> {
        use std::sync::atomic::Ordering;

        loop {
            if self.socket.readable().await.is_err() {
                return None;
            }
            let arrived = self
                .flags
                .iter()
                .find(|(_, flag)| flag.load(Ordering::Acquire));
            if let Some(&(signal, _)) = arrived {
                return Some(signal);
            }
            // Woken without a signal: empty the socket, which also clears
            // the readiness, and wait again.
            let mut bytes = [0u8; 16];
            loop {
                match self.socket.try_read(&mut bytes) {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return None,
                }
            }
        }
    }
}

#[cfg(unix)]
impl Drop for FastPath {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// How long the listener thread leaves the start of a run to the fast path.
#[cfg(unix)]
const FAST_PATH_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// A signal for one listening instance, as the listener thread hands it out.
#[cfg(unix)]
struct Arrival {
    instance: u64,
    signal: Signal,
    /// The instance's count of signals so far, this one included.
    received: u32,
    /// Whether the instance's fast path has the signal too.
    fast: bool,
    /// The instance and the runtime it listened from; `None` until looked
    /// up, for a first signal the fast path has.
    found: Option<(Compactor, Option<tokio::runtime::Handle>)>,
}

/// How often the listener thread looks whether the fast path has started
/// the run.
#[cfg(unix)]
const FAST_PATH_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// What one received signal does, depending on where the instance is.
#[cfg(unix)]
fn handle(arrival: Arrival) {
    let Arrival {
        instance,
        signal,
        received,
        fast,
        found,
    } = arrival;
    let found = found.or_else(|| {
        // Left alone while the fast path starts the run (see `arrivals`).
        std::thread::sleep(FAST_PATH_POLL);
        hub::find(instance)
    });
    let Some((compactor, runtime)) = found else {
        return;
    };
    let compactor = &compactor;
    if !compactor.is_shutting_down() {
        if fast {
            // The fast path on the runtime has the same signal and starts
            // the run sooner; step in only if the runtime does not answer.
            let until = std::time::Instant::now() + FAST_PATH_PATIENCE;
            while !compactor.is_shutting_down() && std::time::Instant::now() < until {
                std::thread::sleep(FAST_PATH_POLL);
            }
        }
        if !compactor.is_shutting_down() {
            tracing::info!(%signal, "signal received: starting shutdown");
            let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
            compactor.begin(ShutdownReason::Signal(signal));
        }
        if received < 2 {
            return;
        }
        // A second signal came with the first: it ends the process now.
    }
    if received == 1 && compactor.started_by_signal() {
        // The signal the fast path already started the run with, however
        // far that run has got.
        return;
    }
    if compactor.report().is_some() {
        if compactor.started_by_signal() && compactor.inner.signal_exit() != SignalExit::Return {
            // The run is over and its own exit, with its code, follows.
            return;
        }
        // The run is over: behave as if no one handled the signal.
        let _ = signal_hook::low_level::emulate_default_handler(signal.number());
        return;
    }
    if received == 1 {
        // During a run started by other means: the next signal escalates.
        tracing::info!(%signal, "shutdown under way; send the signal again to exit at once");
        return;
    }
    force_exit(compactor, signal);
}

/// Ctrl-C through tokio where there are no Unix signals.
#[cfg(not(unix))]
pub(crate) fn listen(inner: &Arc<Inner>) -> Result<(), Error> {
    use std::sync::atomic::Ordering;

    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Signals {
        problem: "listening for Ctrl-C needs a tokio runtime; call it from inside one".to_owned(),
    })?;
    if inner.signals_armed.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let owner: std::sync::Weak<Inner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        let mut received = 0u32;
        while tokio::signal::ctrl_c().await.is_ok() {
            let Some(inner) = owner.upgrade() else { break };
            let compactor = Compactor { inner };
            received += 1;
            if compactor.report().is_some() {
                std::process::exit(i32::from(Signal::Interrupt.exit_code()));
            } else if !compactor.is_shutting_down() {
                compactor.begin(ShutdownReason::Signal(Signal::Interrupt));
            } else if received > 1 {
                force_exit(&compactor, Signal::Interrupt);
            }
        }
    });
    Ok(())
}

/// Ends the process at once, naming the cleanups that were still running.
fn force_exit(compactor: &Compactor, signal: Signal) -> ! {
    let running = compactor.inner.running_tasks();
    let listed = match running.is_empty() {
        true => "none".to_owned(),
        false => running.join(", "),
    };
    eprintln!(
        "compactor: {signal} again during shutdown; exiting now with code {}; still running: {listed}",
        signal.exit_code()
    );
    std::process::exit(i32::from(signal.exit_code()))
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    // Real signals raised at this test process: SIGHUP and SIGQUIT, which
    // nothing else in the library's unit tests listens for, in one test
    // (a signal reaches every registration in the process). Registered
    // before they are raised, so neither takes its default action.
    #[tokio::test]
    async fn a_fast_path_wakes_for_its_own_signals_and_names_the_one_that_came() {
        let hangup = FastPath::new(&[Signal::Hangup]).expect("registered");
        let quit = FastPath::new(&[Signal::Interrupt, Signal::Quit]).expect("registered");

        signal_hook::low_level::raise(Signal::Hangup.number()).expect("raised");
        let arrived = tokio::time::timeout(Duration::from_secs(10), hangup.arrival()).await;
        assert_eq!(arrived.ok(), Some(Some(Signal::Hangup)));
        let waited = tokio::time::timeout(Duration::from_millis(50), quit.arrival()).await;
        assert!(waited.is_err(), "woke for SIGHUP with {waited:?}");

        signal_hook::low_level::raise(Signal::Quit.number()).expect("raised");
        let arrived = tokio::time::timeout(Duration::from_secs(10), quit.arrival()).await;
        assert_eq!(arrived.ok(), Some(Some(Signal::Quit)));
    }
}
