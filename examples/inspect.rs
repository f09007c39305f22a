//! Seeing a shutdown before and while it happens. A service's cleanups are
//! registered (an HTTP server that drains, a queue consumer, a write buffer
//! flushed with retries, the database pool after all of them, logs last);
//! the example prints the plan as a table and as Mermaid, checks that its
//! worst case fits Kubernetes' 30 s grace period, then runs the shutdown
//! and prints its progress every 250 ms until the report.
//!
//! ```text
//! cargo run --example inspect               # the plan, then a 2-3 s shutdown
//! cargo run --example inspect -- --dot      # the graph in Graphviz DOT instead of Mermaid
//! ```

use compactor::cleanup::cancellable;
use std::process::ExitCode;
use std::time::Duration;

use compactor::{Backoff, Category, Compactor, Priority};

/// Kubernetes' default `terminationGracePeriodSeconds`.
const GRACE: Duration = Duration::from_secs(30);

fn register(c: &Compactor) -> Result<(), compactor::Error> {
    let pool = c
        .task("db-pool")
        .category(Category::Database)
        .timeout(Duration::from_secs(5))
        .register(|| tokio::time::sleep(Duration::from_millis(300)))?;
    let buffer = c
        .task("write-buffer")
        .category(Category::File)
        .depends_on(&pool)
        .timeout(Duration::from_secs(2))
        .retries(2)
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(1),
        ))
        .register(|| tokio::time::sleep(Duration::from_millis(700)))?;
    c.task("http")
        .priority(Priority::High)
        .category(Category::Network)
        .depends_on(&buffer)
        .timeout(Duration::from_secs(10))
        .register(|| tokio::time::sleep(Duration::from_millis(900)))?;
    c.task("queue-consumer")
        .priority(Priority::High)
        .depends_on(&pool)
        .timeout(Duration::from_secs(3))
        .register(cancellable(|_stop| {
            tokio::time::sleep(Duration::from_millis(400))
        }))?;
    c.task("logs")
        .priority(Priority::Low)
        .timeout(Duration::from_secs(1))
        .register(|| tokio::time::sleep(Duration::from_millis(100)))?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let dot = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--dot") => true,
        Some(other) => {
            eprintln!("inspect: unknown argument `{other}` (try --dot)");
            return ExitCode::from(2);
        }
    };
    let c = Compactor::builder()
        .deadline(Duration::from_secs(25))
        .build();
    if let Err(e) = register(&c) {
        eprintln!("inspect: {e}");
        return ExitCode::FAILURE;
    }

    let plan = c.plan();
    println!("{plan}");
    match dot {
        true => println!("{}", plan.to_dot()),
        false => println!("```mermaid\n{}```\n", plan.to_mermaid()),
    }
    let fits = plan.worst_case() <= GRACE;
    println!(
        "worst case {:?} {} Kubernetes' default grace period of {GRACE:?}\n",
        plan.worst_case(),
        if fits { "fits" } else { "does NOT fit" },
    );

    // The progress, four times a second, while the shutdown runs.
    let progress = tokio::spawn({
        let c = c.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Some(progress) = c.progress() {
                    println!("{progress}");
                }
            }
        }
    });
    c.trigger();
    let report = c.run_until_shutdown(|stop| stop.cancelled_owned()).await;
    progress.abort();
    println!("\n{report}");
    ExitCode::from(report.exit_code())
}
