# What CI runs (.ci/run calls `make check` and `make test`), so a green `make check test` here
# means a green CI there.
.PHONY: check test fmt bench demo

check:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

test:
	cargo test --locked

fmt:
	cargo fmt --all

bench:
	python3 bench/run.py

demo:
	cargo run --locked -- demo
