# The two newcomer commands (see README.md):
#   make demo   set up and run the main job on the embedded default
#   make test   set up and run the whole test suite
# Both run scripts/setup.sh first: idempotent, seconds when everything is installed.

.PHONY: setup demo test lint fmt install

setup:
	@bash scripts/setup.sh

PHOTOS := .cache/delf/data/opencv-doc
# Binaries run outside `cargo run` need the data folder that .cargo/config.toml gives cargo.
export DELF_HOME ?= $(CURDIR)/.cache/delf

# The quickstart: index the opencv-doc photos, search with held-out views and distractors (docs/search.md).
demo: setup
	cargo build -q --release -p delf-cli
	./target/release/delf doctor
	bash scripts/quickstart.sh ./target/release/delf

# One feature cache per test run (config `feature_cache`, docs/cli.md): every opencv-doc photo goes through the
# network once, before the tests, with the very binary the tests run (the cache is keyed by it); tests then read
# it, whichever of them uses a photo. Tests that time or interrupt extraction turn it off.
TEST_FEATURE_CACHE := $(CURDIR)/target/test-feature-cache
WARM_CACHE = rm -rf $(TEST_FEATURE_CACHE) && \
	DELF_FEATURE_CACHE=$(TEST_FEATURE_CACHE) ./target/debug/delf -q extract $(PHOTOS)/*.jpg $(PHOTOS)/*.png >/dev/null

test: setup
	cargo test -q --workspace --doc
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-run && $(WARM_CACHE) && \
		DELF_FEATURE_CACHE=$(TEST_FEATURE_CACHE) cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-run && $(WARM_CACHE) && \
		DELF_FEATURE_CACHE=$(TEST_FEATURE_CACHE) cargo test --workspace --no-fail-fast; \
	fi

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# The `delf` binary on the PATH (~/.cargo/bin): it finds the models and photos the setup installed in this
# checkout's .cache/ from any folder (docs/cli.md), and libtorch through its rpath.
install: setup
	cargo install --locked --path crates/delf-cli
