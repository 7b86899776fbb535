# nodeforge — see README.md
CARGO ?= cargo
BIN := target/release/nodeforge
export PATH := $(HOME)/.local/bin:$(HOME)/.cargo/bin:$(PATH)

.PHONY: all build image test test-unit test-boot test-boot-arm64 fixtures bench release lint clean

all: build

build:
	$(CARGO) build --release --locked

# The main job: build every node of the embedded default cluster into out/
# (`init` writes the embedded example and a fresh secrets file there once).
image: build
	@mkdir -p out
	@[ -f out/cluster.toml ] || $(BIN) init out
	$(BIN) build --all -c out/cluster.toml -o out

# Unit and integration tests, then the QEMU boot proof.
test: build lint test-unit test-boot

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	actionlint .github/workflows/*.yml examples/homelab/.github/workflows/*.yml

test-unit:
	$(CARGO) test --release --locked --no-fail-fast

fixtures: build
	bash tests/fixtures/build.sh all

# x86_64: server + agent, rebuild (byte-identical, same identity) + broken seed; arm64: a server +
# agent pair per Pi family (tests/boot/README.md). In `make test`: x86_64 and the Raspberry Pi OS
# and Debian raspi pairs (a cold arm64 fixture fits CI's 90 min: tests/boot/README.md, "Measured");
# Ubuntu raspi in test-boot-arm64 only, to keep CI's run well inside its budget now that every pair
# also boots the server twice and waits for the clock.
test-boot: build
	bash tests/boot/run.sh x86_64
	bash tests/boot/run.sh arm64 raspios
	bash tests/boot/run.sh arm64 debian-raspi

test-boot-arm64: build
	bash tests/fixtures/build.sh arm64
	bash tests/boot/run.sh arm64 raspios
	bash tests/boot/run.sh arm64 ubuntu-raspi
	bash tests/boot/run.sh arm64 debian-raspi

bench: build
	bash tests/bench/run.sh

release: build
	$(BIN) release -o dist/ --split 2G

clean:
	rm -rf out dist
