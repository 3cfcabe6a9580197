# AnySync developer commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test check unit integration proto proto-check clean deps test-containers \
	test-ansible test-image test-image-armhf image

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Install, initialise ~/.AnySync on first run, serve on 0.0.0.0:65065.
run: install
	$(BIN)/anysync-server run

# Everything CI runs: system packages the tests need (root only), lint, types, import
# rules, then every test.
test: check deps
	$(BIN)/pytest -q

# System packages for the container, Ansible and image tests (Debian; needs root).
# Each scripts/deps-*.sh installs only what is missing.
deps:
	@for script in scripts/deps-*.sh; do bash "$$script" || exit 1; done

test-containers: install deps
	$(BIN)/pytest -q tests/containers

test-ansible: install deps
	$(BIN)/pytest -q tests/ansible

test-image: install deps
	$(BIN)/pytest -q tests/image

# The 32-bit image's build-and-boot test; not in `make test` (tests/image/test_image.py).
test-image-armhf: install deps
	ANYSYNC_TEST_ARMHF=1 $(BIN)/pytest -q tests/image -k armhf

# The flashable Raspberry Pi image (docs/install.md): make image [IMAGE_ARCH=armhf].
IMAGE_ARCH ?= arm64
image: install deps
	ANSIBLE_PLAYBOOK=$(BIN)/ansible-playbook image-build/build.sh $(IMAGE_ARCH) \
		anysync-rpi-$(IMAGE_ARCH).img

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

check: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory proto-check

# Regenerate the wire code from proto/ (committed, so users need no protoc).
proto: install
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=src --grpc_python_out=src \
		--pyi_out=src proto/anysync/v1/anysync.proto

proto-check: install
	@tmp=$$(mktemp -d) && $(BIN)/python -m grpc_tools.protoc -I proto --python_out=$$tmp \
		--grpc_python_out=$$tmp --pyi_out=$$tmp proto/anysync/v1/anysync.proto && \
		for f in anysync_pb2.py anysync_pb2_grpc.py anysync_pb2.pyi; do \
			cmp -s $$tmp/anysync/v1/$$f src/anysync/v1/$$f || \
			{ echo "src/anysync/v1/$$f is stale: run make proto"; rm -rf $$tmp; exit 1; }; \
		done; rm -rf $$tmp

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info

# Benchmarks against restic and borg (bench/README.md). Not part of `make test`.
.PHONY: bench bench-quick
bench: install
	$(BIN)/python bench/run.py --full

bench-quick: install
	$(BIN)/python bench/run.py --quick
