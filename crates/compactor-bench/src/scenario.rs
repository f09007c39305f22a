//! The scenarios, how each is measured, and the table of results.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::runtime::Runtime;

use crate::systems::System;

/// How many cleanups ran in the current measurement: every system's
/// cleanup bumps it, and each run checks the count.
pub(crate) static RAN: AtomicUsize = AtomicUsize::new(0);

/// The body of every benchmarked cleanup.
#[inline]
pub(crate) fn ran() {
    RAN.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct Settings {
    pub(crate) runs: usize,
    /// Rounds in all of each `signal-latency` scenario, spread over the
    /// runs' processes. A round takes a few milliseconds, and single rounds
    /// spread over tens of microseconds (the kernel's wake-up of an idle
    /// core, the core it picks): a median needs many of them to hold still.
    pub(crate) signal_rounds: usize,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Settings {
        match quick {
            true => Settings {
                runs: 3,
                signal_rounds: 120,
            },
            false => Settings {
                runs: 7,
                signal_rounds: 420,
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Register,
    RegisterContended,
    ShutdownFlat,
    ShutdownChain,
    ShutdownLayered,
    /// Connections that each open a scope with two cleanups and close it.
    ScopeChurn,
    /// `settle`: how long each system's set-up comes to rest before the
    /// signal.
    SignalLatency {
        settle: Duration,
    },
    Memory,
}

#[derive(Clone, Copy)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) n: usize,
}

pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "register",
        kind: Kind::Register,
        n: 100_000,
    },
    Scenario {
        name: "register-contended",
        kind: Kind::RegisterContended,
        n: 100_000,
    },
    Scenario {
        name: "shutdown-flat",
        kind: Kind::ShutdownFlat,
        n: 100_000,
    },
    Scenario {
        name: "shutdown-chain",
        kind: Kind::ShutdownChain,
        n: 10_000,
    },
    Scenario {
        name: "shutdown-layered",
        kind: Kind::ShutdownLayered,
        n: 100_000,
    },
    Scenario {
        name: "scope-churn",
        kind: Kind::ScopeChurn,
        n: 100_000,
    },
    Scenario {
        name: "signal-latency",
        kind: Kind::SignalLatency {
            settle: Duration::ZERO,
        },
        n: 1,
    },
    // A process idle when the signal comes, as a service is: the set-up's
    // spawned tasks have reached their waiting points and the workers have
    // parked (the runtime's cores have gone idle).
    Scenario {
        name: "signal-latency-idle",
        kind: Kind::SignalLatency {
            settle: Duration::from_millis(2),
        },
        n: 1,
    },
    Scenario {
        name: "memory",
        kind: Kind::Memory,
        n: 100_000,
    },
];

/// Threads of `register-contended`; phases of `shutdown-layered`.
pub(crate) const THREADS: usize = 4;
pub(crate) const PHASES: usize = 10;

/// One line of `summary.json`.
#[derive(Debug, Serialize)]
pub(crate) struct Measurement {
    pub(crate) scenario: &'static str,
    pub(crate) system: &'static str,
    pub(crate) n: usize,
    pub(crate) ns_per_task: f64,
    pub(crate) bytes_per_task: Option<f64>,
}

/// One run of a scenario: the time it took (for `signal-latency`, the
/// latency itself) and, for `memory`, the heap it kept.
fn once(
    scenario: &Scenario,
    system: &dyn System,
    rt: &Runtime,
) -> Option<(Duration, Option<usize>)> {
    RAN.store(0, Ordering::SeqCst);
    let n = scenario.n;
    let result = match scenario.kind {
        Kind::Register => system.register(n, rt).map(|d| (d, None)),
        Kind::RegisterContended => system.register_contended(n, THREADS, rt).map(|d| (d, None)),
        Kind::ShutdownFlat => system.shutdown_flat(n, rt).map(|d| (d, None)),
        Kind::ShutdownChain => system.shutdown_chain(n, rt).map(|d| (d, None)),
        Kind::ShutdownLayered => system.shutdown_layered(n, PHASES, rt).map(|d| (d, None)),
        Kind::ScopeChurn => system.scope_churn(n, rt).map(|d| (d, None)),
        Kind::SignalLatency { settle } => system.signal_latency(rt, settle).map(|d| (d, None)),
        Kind::Memory => system.memory(n, rt).map(|(d, bytes)| (d, Some(bytes))),
    }?;
    let cleanups = match scenario.kind {
        Kind::ShutdownFlat | Kind::ShutdownChain | Kind::ShutdownLayered => Some(n),
        Kind::ScopeChurn => Some(2 * n),
        _ => None,
    };
    if let Some(n) = cleanups {
        let ran = RAN.load(Ordering::SeqCst);
        assert_eq!(
            ran,
            n,
            "{} ran {ran} of {n} cleanups in {}",
            system.name(),
            scenario.name
        );
    }
    Some(result)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The values of one child process: nanoseconds per task of each measured
/// run, and for `memory` the bytes per task; `None` where the system cannot
/// express the scenario.
type Sample = Option<(Vec<f64>, Vec<f64>)>;

/// Measures one scenario for every system. Every run is a process of its
/// own (this program, started with `--child`), so no system inherits
/// another's allocator state, signal handlers or threads; and the systems
/// take turns run by run, so a slow spell of the machine falls on all of
/// them alike. Reports each system's median; systems that cannot express the
/// scenario are left out.
pub(crate) fn measure(
    scenario: &Scenario,
    systems: &[&dyn System],
    settings: &Settings,
) -> Vec<Measurement> {
    // One process per run; signal-latency's rounds are spread over them.
    let per_process = match scenario.kind {
        Kind::SignalLatency { .. } => settings.signal_rounds / settings.runs,
        _ => 1,
    };
    let mut able: Vec<&dyn System> = systems.to_vec();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); able.len()];
    let mut bytes: Vec<Vec<f64>> = vec![Vec::new(); able.len()];
    for round in 0..settings.runs {
        let mut k = 0;
        while k < able.len() {
            let system = able[k];
            if round == 0 {
                eprintln!("  {:<18} {}", scenario.name, system.name());
            }
            match in_child(scenario, system, per_process) {
                Some((t, b)) => {
                    times[k].extend(t);
                    bytes[k].extend(b);
                    k += 1;
                }
                None => {
                    able.remove(k);
                    times.remove(k);
                    bytes.remove(k);
                }
            }
        }
    }
    able.iter()
        .zip(times.into_iter().zip(bytes))
        .map(|(system, (times, bytes))| Measurement {
            scenario: scenario.name,
            system: system.name(),
            n: scenario.n,
            ns_per_task: median(times),
            bytes_per_task: (!bytes.is_empty()).then(|| median(bytes)),
        })
        .collect()
}

/// Runs one measurement in a child process and reads its line.
fn in_child(scenario: &Scenario, system: &dyn System, runs: usize) -> Sample {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let output = std::process::Command::new(exe)
        .args(["--child", scenario.name, system.name(), &runs.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("a child process for the measurement");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} / {} failed: {}\n{stdout}",
        scenario.name,
        system.name(),
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    if line == "n/a" {
        return None;
    }
    let parse = |field: &str| -> Vec<f64> {
        field
            .split(',')
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().expect("a number from the child"))
            .collect()
    };
    let (t, b) = line.split_once(' ').expect("`times bytes` from the child");
    Some((parse(t), parse(b)))
}

/// The child's side: warm-up, then `runs` measured runs; prints `times
/// bytes` (comma-separated, per task) or `n/a`. The warm-up runs at a tenth
/// of the size, and again at full size unless the tenth took over 100 ms: a
/// run of seconds gains nothing from it (`tokio-graceful-shutdown`'s chain
/// takes about 10 s), and the quick run stays under two minutes.
pub(crate) fn child(scenario: &str, system: &str, runs: usize) {
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == scenario)
        .expect("a known scenario");
    let system = crate::systems::SYSTEMS
        .iter()
        .copied()
        .find(|s| s.name() == system)
        .expect("a known system");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let tenth = Scenario {
        n: (scenario.n / 10).max(1),
        ..*scenario
    };
    let started = std::time::Instant::now();
    if once(&tenth, system, &runtime).is_none() {
        println!("n/a");
        return;
    }
    if started.elapsed() < Duration::from_millis(100) {
        once(scenario, system, &runtime).expect("ran at a tenth of the size");
    }
    let (mut times, mut bytes) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (time, kept) = once(scenario, system, &runtime).expect("ran in the warm-up");
        times.push(format!("{}", time.as_secs_f64() * 1e9 / scenario.n as f64));
        if let Some(kept) = kept {
            bytes.push(format!("{}", kept as f64 / scenario.n as f64));
        }
    }
    println!("{} {}", times.join(","), bytes.join(","));
}

/// The markdown table: a row per scenario, a column per system.
pub(crate) fn table(
    results: &[Measurement],
    systems: &[&dyn System],
    settings: &Settings,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        out,
        "Machine: {cpus} cores, {}; tokio multi-thread runtime, 2 workers; median of {} runs ({} rounds for each signal-latency scenario), each in a fresh process after a warm-up, the systems taking turns run by run.\n",
        std::env::consts::OS,
        settings.runs,
        settings.signal_rounds
    );
    let _ = write!(out, "| scenario | n | unit |");
    for s in systems {
        let _ = write!(out, " {} |", s.name());
    }
    let _ = write!(out, "\n|---|---:|---|");
    for _ in systems {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for scenario in SCENARIOS {
        if !results.iter().any(|m| m.scenario == scenario.name) {
            continue;
        }
        let unit = match scenario.kind {
            Kind::Memory => "bytes/task",
            Kind::SignalLatency { .. } => "µs",
            _ => "ns/task",
        };
        let _ = write!(out, "| {} | {} | {unit} |", scenario.name, scenario.n);
        for s in systems {
            let cell = results
                .iter()
                .find(|m| m.scenario == scenario.name && m.system == s.name())
                .map_or_else(
                    || "n/a".to_owned(),
                    |m| match (scenario.kind, m.bytes_per_task) {
                        (Kind::Memory, Some(b)) => format!("{b:.0}"),
                        (Kind::SignalLatency { .. }, _) => {
                            format!("{:.1}", m.ns_per_task / 1e3)
                        }
                        _ => format!("{:.0}", m.ns_per_task),
                    },
                );
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push_str("\nn/a: the system has no way to express the scenario:\n");
    for s in systems {
        for note in s.cannot() {
            let _ = writeln!(out, "- {}: {note}", s.name());
        }
    }
    out
}
