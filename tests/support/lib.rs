//! Helpers for the end-to-end suites: start a program cargo built for the
//! tests package (`CARGO_BIN_EXE_*`) as a real process, read what it prints.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running process whose stdout is read line by line (and whose stderr
/// is collected).
pub struct Running {
    /// The process.
    pub child: Child,
    lines: Receiver<String>,
    errors: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

/// Forwards the lines of `stream` to a channel, from a thread of its own.
fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts the program at `path` with `args`.
    pub fn start_path(path: &Path, args: &[&str]) -> Running {
        let mut command = Command::new(path);
        command.args(args);
        Running::start(command)
    }

    /// Starts `command` as it is set up (its environment too), its stdout
    /// and stderr piped.
    pub fn start(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} starts: {e}", Path::new(command.get_program()).display())
            });
        let lines = lines_of(child.stdout.take().expect("piped"));
        let errors = lines_of(child.stderr.take().expect("piped"));
        Running {
            child,
            lines,
            errors,
            seen: Vec::new(),
        }
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.errors.try_iter().collect()
    }

    /// Reads stderr until a line contains `text`; returns that line and
    /// those after it that came with it (a multi-line message).
    pub fn wait_for_stderr(&mut self, text: &str, within: Duration) -> Vec<String> {
        let until = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.errors.recv_timeout(left) {
                Ok(line) if line.contains(text) => {
                    let mut found = vec![line];
                    std::thread::sleep(Duration::from_millis(50));
                    found.extend(self.errors.try_iter());
                    return found;
                }
                Ok(line) => seen.push(line),
                Err(e) => panic!("no stderr line with `{text}` ({e:?}); saw {seen:#?}"),
            }
        }
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    pub fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        self.try_wait_for(prefix, within)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Like [`wait_for`](Self::wait_for), saying what went wrong instead
    /// of panicking.
    pub fn try_wait_for(&mut self, prefix: &str, within: Duration) -> Result<String, String> {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no line starting `{prefix}` within {within:?}; saw {:#?}",
                        self.seen
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "the process closed stdout before `{prefix}`; saw {:#?} and on stderr {:#?}",
                        self.seen,
                        self.stderr()
                    ));
                }
            }
        }
    }

    /// Sends a real signal (see [`send_signal`]).
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// The processes this one started (a wrapper's child: the app under
    /// `unshare --fork`), waiting up to `within` for one to appear.
    pub fn children(&self, within: Duration) -> Vec<u32> {
        let pid = self.child.id();
        let path = format!("/proc/{pid}/task/{pid}/children");
        let until = Instant::now() + within;
        loop {
            let listed = std::fs::read_to_string(&path).unwrap_or_default();
            let children: Vec<u32> = listed
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if !children.is_empty() || Instant::now() > until {
                return children;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit, reading the rest of its output.
    /// Returns the exit code and every stdout line it printed.
    pub fn finish(self, within: Duration) -> (Option<i32>, Vec<String>) {
        let (code, out, _) = self.finish_all(within);
        (code, out)
    }

    /// Like [`finish`](Self::finish), with the stderr lines too.
    pub fn finish_all(self, within: Duration) -> (Option<i32>, Vec<String>, Vec<String>) {
        let (status, out, err) = self.finish_with_status(within);
        (status.code(), out, err)
    }

    /// Like [`finish_all`](Self::finish_all), with the whole exit status
    /// (to see a death by signal).
    pub fn finish_with_status(
        mut self,
        within: Duration,
    ) -> (ExitStatus, Vec<String>, Vec<String>) {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader threads drain what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                let errors = self.errors.iter().collect();
                return (status, self.seen, errors);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "the process did not exit within {within:?}; saw {:#?}",
                    self.seen
                );
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How long a test app may take to start (a fresh machine builds it first).
pub const STARTUP: Duration = Duration::from_secs(60);
/// How long a test app may take to do what a test asks.
pub const RUN: Duration = Duration::from_secs(30);

/// The cleanups a test app printed, in the order they started
/// (`cleanup NAME` lines).
pub fn cleanups(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("cleanup "))
        .collect()
}

/// The report the app printed last, from its `report-json` line.
pub fn report_json(lines: &[String]) -> serde_json::Value {
    let json = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("report-json "))
        .unwrap_or_else(|| panic!("no report-json line in {lines:#?}"));
    serde_json::from_str(json).expect("the report line is JSON")
}

/// The entry of task `name` in a JSON report.
pub fn task_json<'r>(report: &'r serde_json::Value, name: &str) -> &'r serde_json::Value {
    report["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task {name} in {report}"))
}

/// Whether the app printed the report of a shutdown that `reason` (a
/// signal's name, or a reason's JSON tag such as `manual`) began: read from
/// the `report-json` line, not from the table.
pub fn printed_report(lines: &[String], reason: &str) -> bool {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("report-json "))
        .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        .any(|report| {
            let began = &report["reason"];
            began == reason || began["signal"] == reason
        })
}

impl Running {
    /// Starts the program at `path` with `args` and waits for its `ready`.
    pub fn ready(path: &str, args: &[&str]) -> Running {
        let mut app = Running::start_path(Path::new(path), args);
        app.wait_for("ready", STARTUP);
        app
    }

    /// Sends `signal`, waits for the exit, checks its code; returns what the
    /// process printed.
    pub fn stopped_by(self, signal: &str, code: i32) -> Vec<String> {
        self.signal(signal);
        let (got, out) = self.finish(RUN);
        assert_eq!(got, Some(code), "{out:#?}");
        out
    }
}

/// Sends a real signal to `pid`: `TERM`, `INT`, `HUP`, `QUIT`, `USR1`,
/// `KILL`, as `kill -NAME` would, without needing the `kill` program.
pub fn send_signal(pid: u32, signal: &str) {
    use rustix::process::{Pid, Signal, kill_process};
    let sig = match signal {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "KILL" => Signal::KILL,
        other => panic!("send_signal: no signal named {other}"),
    };
    let target = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let target = target.unwrap_or_else(|| panic!("send_signal: {pid} is no process id"));
    kill_process(target, sig).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// Whether this is a CI run (`CI` set to anything but empty, `0`, `false`
/// or `no`, in any case, as CI services and `.ci/run` set it): a missing
/// system tool then fails its test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "false" | "no" | "off")
    })
}

/// Skips the calling test, or fails it under [`in_ci`], for want of
/// something the machine lacks: `missing` says what, and how to get it.
/// The line goes straight to stderr, past the test harness's capture, so a
/// plain `cargo test` shows it. Returns `None`, for `let ... else`.
pub fn skip<T>(missing: &str) -> Option<T> {
    use std::io::Write;
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    assert!(
        !in_ci(),
        "{test}: {missing} (CI is set: a missing tool fails the test instead of skipping it)"
    );
    let _ = writeln!(std::io::stderr(), "skipped {test}: {missing}");
    None
}

/// The path of the system program `command`, looked up on `PATH` and in
/// the `sbin` directories (where Debian puts `haproxy`, often off a user's
/// `PATH`). Missing, the calling test is [skipped](skip), naming the Debian
/// `package` that brings it; under CI it fails instead.
pub fn tool(command: &str, package: &str) -> Option<PathBuf> {
    find_tool(command).or_else(|| skip(&not_installed(command, package)))
}

/// The path of the system program `command` (see [`tool`]), saying nothing
/// when it is missing.
pub fn find_tool(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(command))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What [`tool`] says of a missing `command`.
pub fn not_installed(command: &str, package: &str) -> String {
    format!(
        "`{command}` is not installed (Debian package `{package}`: `apt-get install {package}`)"
    )
}

/// A fresh scratch directory for one test, removed when dropped: the
/// suites leave nothing behind in the temp directory.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch directory for `test`, this process's own.
pub fn scratch_dir(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("compactor-e2e-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    Scratch(dir)
}

/// How many times a race or timing-sensitive test repeats its core: `n`,
/// or `n` times the factor in `COMPACTOR_STRESS` (`1` means 10) for the
/// stress mode: `COMPACTOR_STRESS=1 cargo test --workspace`.
pub fn stress(n: usize) -> usize {
    match std::env::var("COMPACTOR_STRESS") {
        Ok(v) => n * v.parse::<usize>().ok().filter(|&f| f > 1).unwrap_or(10),
        Err(_) => n,
    }
}

/// The repository's README, whose examples are compiled as doctests of this
/// package so they stay true (the crate's own README is the library's).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RepositoryReadme;
