//! The end-to-end suites, one module each, in one binary: one link, and
//! the suites' processes run side by side instead of one suite after
//! another. Real processes, real signals, real sockets on 127.0.0.1.

mod axum;
mod docs;
// The longest test (about 16 s), its name early: tests start in name order.
mod behind_haproxy;
mod inspect;
mod lifecycle;
mod metrics;
mod process;
mod quickstart;
mod readiness;
mod worker;
