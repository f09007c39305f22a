//! Requests to workers that own their state, over real channels and real
//! threads: the reply is the outcome; a worker gone, a request dropped, a
//! worker that never replies each end the task saying so.

use compactor::cleanup::{request, request_with};
use std::time::Duration;

use compactor::{Compactor, Outcome, report::Freed};
use tokio::sync::{mpsc, oneshot};

enum Request {
    Compact(oneshot::Sender<Result<Freed, String>>),
    Stop(oneshot::Sender<()>),
}

/// A worker thread that owns its cache outright and answers requests
/// from a std channel.
fn std_worker() -> std::sync::mpsc::Sender<Request> {
    let (tx, rx) = std::sync::mpsc::channel::<Request>();
    std::thread::spawn(move || {
        let mut cache: Vec<Vec<u8>> = (0..4).map(|_| vec![0; 1024]).collect();
        for request in rx {
            match request {
                Request::Compact(reply) => {
                    let freed = Freed {
                        resources: cache.len() as u64,
                        bytes: cache.iter().map(|b| b.len() as u64).sum(),
                    };
                    cache.clear();
                    let _ = reply.send(Ok(freed));
                }
                Request::Stop(reply) => {
                    let _ = reply.send(());
                    return;
                }
            }
        }
    });
    tx
}

#[tokio::test]
async fn a_worker_thread_compacts_then_stops_on_request() {
    let c = Compactor::new();
    let worker = std_worker();
    let to_stop = worker.clone();
    let stop = c
        .task("stop-worker")
        .timeout(Duration::from_secs(5))
        .register(request_with(move |reply| {
            to_stop.send(Request::Stop(reply))
        }))
        .unwrap();
    c.task("compact")
        .depends_on(&stop) // compacted before it stops
        .timeout(Duration::from_millis(500))
        .register(request_with(move |reply| {
            worker.send(Request::Compact(reply))
        }))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.task("compact").unwrap().freed(),
        Some(Freed {
            resources: 4,
            bytes: 4096
        })
    );
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["compact", "stop-worker"]);
}

#[tokio::test]
async fn a_tokio_worker_replies_and_its_error_reaches_the_outcome() {
    let (tx, mut rx) = mpsc::channel::<Request>(4);
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            if let Request::Compact(reply) = request {
                let _ = reply.send(Err("index corrupted".to_owned()));
            }
        }
    });
    let c = Compactor::new();
    c.task("compact")
        .register(request(tx, Request::Compact))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("compact").unwrap().outcome(),
        &Outcome::Failed("index corrupted".into())
    );
}

#[tokio::test]
async fn a_worker_that_has_gone_away_is_reported_so_not_as_a_hang() {
    let (tx, rx) = mpsc::channel::<Request>(4);
    drop(rx);
    let std_tx = std_worker();
    std_tx.send(Request::Stop(oneshot::channel().0)).unwrap();
    // Let the std worker end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = Compactor::new();
    c.task("tokio")
        .register(request(tx, Request::Compact))
        .unwrap();
    c.task("std")
        .register(request_with(move |reply| {
            std_tx.send(Request::Compact(reply))
        }))
        .unwrap();
    let report = c.shutdown().await;
    for name in ["tokio", "std"] {
        let outcome = report.task(name).unwrap().outcome();
        let Outcome::Failed(error) = outcome else {
            panic!("{name}: {outcome}");
        };
        assert!(
            error.starts_with("the worker has gone away"),
            "{name}: {error}"
        );
    }
}

#[tokio::test]
async fn a_dropped_request_and_a_silent_worker_are_told_apart() {
    let (drops, mut dropped) = mpsc::channel::<Request>(4);
    tokio::spawn(async move {
        while let Some(request) = dropped.recv().await {
            drop(request); // the reply sender with it
        }
    });
    let (silent, mut never) = mpsc::channel::<Request>(4);
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = never.recv().await {
            held.push(request); // never answered
        }
    });
    let c = Compactor::new();
    c.task("dropper")
        .register(request(drops, Request::Compact))
        .unwrap();
    c.task("silent")
        .timeout(Duration::from_millis(200))
        .register(request(silent, Request::Compact))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("dropper").unwrap().outcome(),
        &Outcome::Failed("the worker dropped the request without replying".into())
    );
    assert_eq!(report.task("silent").unwrap().outcome(), &Outcome::TimedOut);
    keep.abort();
}
