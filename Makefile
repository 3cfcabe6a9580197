# AnySync developer commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := $(VENV)/.extras

.PHONY: install run test check man FORCE unit integration proto proto-check clean deps test-containers \
	test-ansible test-image test-image-armhf image coverage-report

install: $(STAMP)

$(STAMP): pyproject.toml $(EXTRAS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$$(cat $(EXTRAS))]"
	@PYTHON=$(PYTHON) bash scripts/deps-fuse.sh --warn
	touch $@

# The extras to install: dev, and drive (the Smart Sync drive: pyfuse3, which pip builds
# from source, and trio) where FUSE 3 and a compiler are at hand; the server needs none
# of it. As root, make installs what the drive lacks (scripts/deps-fuse.sh); in CI the
# drive must be installed. Rewritten only when it changes, which reinstalls the venv.
$(EXTRAS): FORCE
	@mkdir -p $(VENV)
	@drive=$$(PYTHON=$(PYTHON) bash scripts/deps-fuse.sh --prepare) || exit 1; \
		extras=dev$${drive:+,$$drive}; \
		[ "$$(cat $@ 2>/dev/null)" = "$$extras" ] || echo "$$extras" > $@

FORCE:

# Install, initialise ~/.AnySync on first run, serve on 0.0.0.0:65065. Running needs
# the runtime only: a venv made here gets no development extras (a fraction of the size
# and time); `make install`/`make test` add them later, and a venv that has them already
# is used as it is.
RUNTIME := $(VENV)/.runtime
run: $(RUNTIME)
	$(BIN)/anysync-server run

$(RUNTIME): pyproject.toml
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; exit 0; fi; \
		echo "installing the AnySync server into $(VENV) (runtime only, about 150 MB)"; \
		$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip && \
		$(BIN)/pip install --quiet -e . && touch $@

# The man pages in man/, rendered from the CLI's parser (tests/unit/test_manpages.py
# fails when they are stale). Read one with `man -l man/anysync-backup.1`.
man: install
	$(BIN)/python -m anysync.cli.manpage man

# Everything CI runs: system packages the tests need (root only), lint, types, import
# rules, then every test, under coverage (the CLI and server child processes included:
# pyproject.toml [tool.coverage.run]), ending with the coverage report.
test: check deps
	@rm -f .coverage .coverage.*
	@status=0; $(BIN)/coverage run -m pytest -q || status=$$?; \
		$(MAKE) --no-print-directory coverage-report || [ $$status -ne 0 ] || status=1; \
		exit $$status

# The report of the last `make test`: every module, least covered first, then the ten
# least covered again, so that the end of the log names them.
coverage-report: install
	@if ls .coverage.* >/dev/null 2>&1; then $(BIN)/coverage combine -q; fi
	@$(BIN)/coverage report
	@echo "Least covered modules:"
	@$(BIN)/coverage report | sed -n '3,12p'

# System packages for the container, Ansible and image tests (Debian; needs root).
# Each scripts/deps-*.sh installs only what is missing.
deps:
	@for script in scripts/deps-*.sh; do bash "$$script" || exit 1; done

# The randomised multi-device sync test with kills, for long runs:
# make test-sync-soak SEEDS="1 2 3" (CI runs the default seeds in `make test`).
SEEDS ?= 1 2 3
.PHONY: test-sync-soak
test-sync-soak: install
	ANYSYNC_SOAK_SEEDS="$(SEEDS)" $(BIN)/pytest -q tests/integration/test_sync_random.py

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info .coverage .coverage.*

# Mutation testing (mutmut) of the modules where a silent bug loses or leaks data, on a
# copy in .mutation/; ends with `mutation score: K/N killed` (docs/mutation-report.md).
# About 2-5 minutes on 2 cores; not part of `make test`.
.PHONY: mutation
mutation: install
	$(BIN)/python scripts/mutation/run.py

# Benchmarks against restic and borg (bench/README.md). Not part of `make test`.
.PHONY: bench bench-quick
bench: install
	$(BIN)/python bench/suite.py

bench-quick: install
	$(BIN)/python bench/run.py --quick
