# The two newcomer commands (see README.md):
#   make demo   set up and run the main job on the embedded default
#   make test   set up and run the whole test suite
# Both run scripts/setup.sh first: idempotent, seconds when everything is installed.

.PHONY: setup demo test lint fmt

setup:
	@bash scripts/setup.sh

PHOTOS := .cache/delf/data/opencv-doc

demo: setup
	cargo run -q -p delf-cli --bin delf -- doctor
	cargo run -q -p delf-cli --bin delf -- extract $(PHOTOS)/graf1.png $(PHOTOS)/graf3.png $(PHOTOS)/box_in_scene.png
	cargo run -q -p delf-cli --bin delf -- match $(PHOTOS)/box.png $(PHOTOS)/box_in_scene.png --out .cache/demo-match.png

test: setup
	cargo test -q --workspace --doc
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
