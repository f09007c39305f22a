# Shortcuts for the cargo commands in the README; `just` lists them.

default:
    @just --list

# fmt check, clippy, docs and every test: what CI runs
qa:
    bash .ci/run

# the quickstart service, stopping by itself after SECS seconds
demo SECS="3":
    cargo run --example quickstart -- --shutdown-after {{SECS}}

test:
    cargo test --workspace

fmt:
    cargo fmt --all

# compactor side by side with its peers (--quick: about 90 s)
compare *ARGS:
    cargo run --release --manifest-path crates/compactor-bench/Cargo.toml -- {{ARGS}}

# criterion timings and heap bytes per task (figures go to docs/benchmarks.md)
bench:
    cargo bench --manifest-path crates/compactor-bench/Cargo.toml --bench engine
    cargo bench -p compactor-shutdown --bench memory
