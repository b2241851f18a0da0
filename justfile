# moq relay: `just dev` streams locally end to end, `just test` runs every test, `just bench` measures.

set shell := ["bash", "-euo", "pipefail", "-c"]

port := env_var_or_default("MOQ_PORT", "4443")

# List recipes.
default:
    @just --list

# Build everything, start the relay on port 4443 with a dev certificate, a demo publisher and a demo viewer; Ctrl-C stops all.
dev: build
    scripts/dev.sh {{port}}

# Build every binary (debug).
build:
    cargo build --workspace --bins

# Run every test: installs missing test dependencies, then lints, unit, golden, hostile-input and end-to-end/interop tests.
test: deps build
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace --no-fail-fast

# Install what the tests need when missing (reference moq-relay/moq-clock, apt packages).
deps:
    scripts/install-test-deps.sh

# Fuzz the wire decoders for N seconds (needs cargo-fuzz; installs it when missing).
fuzz seconds="60":
    scripts/fuzz.sh {{seconds}}

# Format the code.
fmt:
    cargo fmt --all
