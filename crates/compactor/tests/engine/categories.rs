//! Categories: the report's sums, the inventory, releasing one category
//! early, coverage checks, and the leak event.

use crate::common;
use compactor::cleanup::once;

use std::sync::Arc;
use std::time::Duration;

use common::{Log, logged};
use compactor::inspect::Coverage;
use compactor::{Category, Compactor, Event, Outcome, Priority, report::ShutdownReason};

#[tokio::test(start_paused = true)]
async fn the_report_sums_outcomes_and_time_by_category() {
    let c = Compactor::new();
    c.task("pool-a")
        .category(Category::Database)
        .register(|| tokio::time::sleep(Duration::from_millis(30)))
        .unwrap();
    c.task("pool-b")
        .category(Category::Database)
        .register(|| tokio::time::sleep(Duration::from_millis(20)))
        .unwrap();
    c.task("log")
        .category(Category::File)
        .register(|| async { Err::<(), _>("EIO") })
        .unwrap();
    let report = c.shutdown().await;
    let sums: Vec<(String, usize, usize, Duration)> = report
        .by_category()
        .iter()
        .map(|s| (s.category().to_string(), s.tasks(), s.not_clean(), s.time()))
        .collect();
    assert_eq!(
        sums,
        [
            ("database".into(), 2, 0, Duration::from_millis(50)),
            ("file".into(), 1, 1, Duration::ZERO),
        ]
    );
    let table = report.to_string();
    assert!(
        table.contains("by category: database 2 in 50ms; file 1, 1 not clean in 0.00ms"),
        "{table}"
    );
}

#[tokio::test]
async fn the_inventory_counts_pending_tasks_by_category_and_scope() {
    let c = Compactor::new();
    c.task("pool")
        .category(Category::Database)
        .register(|| async {})
        .unwrap();
    c.task("cache")
        .category(Category::Memory)
        .register(|| async {})
        .unwrap();
    let conn = c
        .task("conn-1")
        .category(Category::Network)
        .scope()
        .unwrap();
    conn.task("socket")
        .category(Category::Network)
        .register(|| async {})
        .unwrap();
    conn.task("tmp")
        .category(Category::File)
        .register(|| async {})
        .unwrap();

    let inventory = c.plan().inventory().clone();
    assert_eq!(inventory.tasks(), 3);
    assert_eq!(inventory.total(), 4);
    assert_eq!(inventory.by_category()[&Category::Database], 1);
    assert_eq!(inventory.by_category()[&Category::Network], 1);
    let scope = &inventory.scopes()["conn-1"];
    assert_eq!(scope.tasks(), 2);
    assert_eq!(scope.by_category()[&Category::File], 1);
    assert_eq!(scope.by_category()[&Category::Network], 1);
    // How it reads.
    let shown = inventory.to_string();
    assert!(
        shown.contains("scope conn-1: 2 pending (file 1, network 1)"),
        "{shown}"
    );
}

#[tokio::test]
async fn coverage_names_what_has_no_cleanup_here_or_in_a_scope() {
    let c = Compactor::new();
    c.task("pool")
        .category(Category::Database)
        .register(|| async {})
        .unwrap();
    let job = c.task("job").scope().unwrap();
    job.task("child")
        .category(Category::Process)
        .register(|| async {})
        .unwrap();
    let missing = c.plan().inventory().validate_coverage([
        Coverage::from(Category::Database),
        Category::Process.into(),
        Category::Timer.into(),
        "child".into(),
        "http".into(),
    ]);
    assert_eq!(
        missing,
        [
            Coverage::Category(Category::Timer),
            Coverage::Task("http".into())
        ]
    );
}

#[tokio::test]
async fn one_category_can_be_released_early_in_dependency_order() {
    let c = Compactor::new();
    let log = Log::default();
    let pool = c
        .task("pool")
        .category(Category::Database)
        .register(logged(&log, "pool"))
        .unwrap();
    c.task("tx")
        .category(Category::Database)
        .depends_on(&pool)
        .register(logged(&log, "tx"))
        .unwrap();
    c.task("http")
        .category(Category::Network)
        .priority(Priority::High)
        .depends_on(&pool)
        .register(logged(&log, "http"))
        .unwrap();

    let early = c
        .run_early(compactor::Selection::Category(Category::Database))
        .await
        .expect("a category release");
    assert_eq!(
        early.reason(),
        &ShutdownReason::Category(Category::Database)
    );
    let names: Vec<&str> = early.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["tx", "pool"]);
    assert!(early.is_clean() && early.warnings().is_empty(), "{early}");
    assert_eq!(log.entries(), ["tx", "pool"]);
    assert_eq!(
        c.plan().inventory().tasks(),
        1,
        "the released tasks left the instance"
    );

    // The rest runs as usual; its dependency on the released pool is gone.
    let report = c.shutdown().await;
    assert_eq!(report.tasks().len(), 1);
    assert_eq!(log.entries(), ["tx", "pool", "http"]);
}

#[tokio::test]
async fn a_category_released_after_shutdown_began_is_refused() {
    let c = Compactor::new();
    c.task("pool")
        .category(Category::Database)
        .register(|| async {})
        .unwrap();
    c.trigger();
    let early = c
        .run_early(compactor::Selection::Category(Category::Database))
        .await;
    assert_eq!(early.unwrap_err(), compactor::Error::ShuttingDown);
    assert_eq!(c.wait().await.tasks().len(), 1);
}

#[tokio::test]
async fn a_leak_is_an_event_with_its_strong_count() {
    let c = Compactor::new();
    let mut events = c.subscribe();
    let secret = Arc::new(vec![0u8; 32]);
    let held_elsewhere = (secret.clone(), secret.clone());
    c.task("wipe")
        .category(Category::Memory)
        .register_weak(&secret, |_s| async {})
        .unwrap();
    drop(secret);
    let report = c.shutdown().await;
    assert_eq!(report.task("wipe").unwrap().leaked(), Some(2));
    let mut leak = None;
    while let Ok(event) = events.try_recv() {
        if let Event::LeakSuspected {
            name, strong_count, ..
        } = event
        {
            leak = Some((name.to_string(), strong_count));
        }
    }
    assert_eq!(leak, Some(("wipe".into(), 2)));
    assert_eq!(report.task("wipe").unwrap().outcome(), &Outcome::Succeeded);
    drop(held_elsewhere);
}

#[tokio::test(start_paused = true)]
async fn what_cleanups_freed_is_summed_per_task_category_and_in_all() {
    use compactor::report::Freed;
    let c = Compactor::new();
    for i in 0..12u64 {
        c.task(format!("socket-{i}"))
            .category(Category::Network)
            .register(once(|| async { Freed::resources(1) }))
            .unwrap();
    }
    c.task("mappings")
        .category(Category::Memory)
        .register_blocking(once(|| {
            Ok::<_, std::io::Error>(Freed {
                resources: 3,
                bytes: 48 << 20,
            })
        }))
        .unwrap();
    c.task("says-nothing")
        .category(Category::Memory)
        .register(once(|| async {}))
        .unwrap();
    c.task("broken")
        .category(Category::Memory)
        .register(once(|| async { Err::<Freed, _>("unmap failed") }))
        .unwrap();
    // A scope's task carries what the scope's tasks freed.
    let conn = c.task("conn-1").scope().unwrap();
    conn.task("buffer")
        .register(once(|| async { Freed::bytes(4096) }))
        .unwrap();
    let report = c.shutdown().await;

    assert_eq!(
        report.task("mappings").unwrap().freed(),
        Some(Freed {
            resources: 3,
            bytes: 48 << 20
        })
    );
    assert_eq!(report.task("says-nothing").unwrap().freed(), None);
    assert_eq!(report.task("broken").unwrap().freed(), None);
    assert_eq!(
        report.task("conn-1").unwrap().freed(),
        Some(Freed::bytes(4096))
    );
    let by: Vec<(Category, Freed)> = report
        .by_category()
        .into_iter()
        .map(|s| (s.category().clone(), s.freed()))
        .collect();
    assert!(
        by.contains(&(Category::Network, Freed::resources(12))),
        "{by:?}"
    );
    assert!(
        by.contains(&(
            Category::Memory,
            Freed {
                resources: 3,
                bytes: 48 << 20
            }
        )),
        "{by:?}"
    );
    assert_eq!(
        report.freed(),
        Freed {
            resources: 12 + 3 + 1,
            bytes: (48 << 20) + 4096
        }
    );
    // How it reads.
    let table = report.to_string();
    assert!(table.contains("network 12 in 0.00ms, 12 freed"), "{table}");
    assert!(table.contains("3 freed, 48.0 MiB"), "{table}");
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["freed"],
            serde_json::json!({"resources": 16, "bytes": (48u64 << 20) + 4096})
        );
        let mappings = json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "mappings")
            .unwrap();
        assert_eq!(
            mappings["freed"],
            serde_json::json!({"resources": 3, "bytes": 48u64 << 20})
        );
    }
}
