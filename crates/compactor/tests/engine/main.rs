//! The library's tests through its public API, one module per subject, in
//! one binary: one link, and every test in parallel with the others. Tests
//! that touch process-wide state (the global instance, the panic hook) and
//! those that need features are binaries of their own (`tests/*.rs`).

mod common;

mod batches;
mod booked_in_place;
mod bounded;
mod categories;
mod drain;
mod early;
mod edges;
mod errors;
mod finals;
mod finals_edges;
mod inspect;
mod lifecycle;
mod ordering;
mod ordering_properties;
mod registration_race;
mod report;
mod scopes;
mod services;
mod slots;
mod testing;
mod timing;
mod tree;
mod tree_edges;
mod tree_seams;
mod workers;
