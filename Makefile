# imagenet-tfrecords: every target runs from the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The image's name: components/image.py's default (registry path + the package version), read without a venv.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' src/imagenet_tfrecords/__init__.py)
IMAGE ?= ghcr.io/imagenet-tfrecords/imagenet-tfrecords:$(VERSION)
IMAGE_TF ?= $(IMAGE)-tf
BASE ?=
# Extra 'docker build' options, e.g. --network host where builds reach PyPI only through the host's network.
DOCKER_BUILD_ARGS ?=
LOCK := uv pip compile --quiet --generate-hashes --no-header --python-version 3.11 --python-platform x86_64-manylinux_2_28
SAMPLE := build/sample
OUTPUT := build/tfrecords
COMPILED := pipelines/tinyimagenet_to_tfrecords.yaml  # and components/*.yaml
# The one kfp pin: the image's (images/requirements.in); the venv, the lock files and the compiled YAML follow it.
KFP_PIN := $(shell grep -o '^kfp==[0-9][0-9.]*' images/requirements.in | cut -d= -f3)
# The [torch] extra accepts a range; the test venv pins one release, which the tests need without a GPU.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu takes its CPU-only build (a ~200 MB wheel, a CUDA build's
# several GB) where that index is reachable; it is not the default, since pip retries an unreachable index
# for every package it resolves (47 s for three packages here).
TORCH_PIN := torch==2.13.0
TORCH_INDEX ?=

.PHONY: install install-dev test test-fast run demo compile compile-check image image-tf lock print-image image-check lint bench bench-small docs clean release-check release-notes

# What 'make run' needs: the converter, kfp and the object-store clients, no TensorFlow; and the Docker
# client (the [docker] extra), for the README's check of an image before pushing it ('run --runner docker').
install: $(STAMP)

$(STAMP): pyproject.toml images/requirements.in
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[gcs,s3,docker]' 'kfp==$(KFP_PIN)'
	touch $(STAMP)

# The tests read the records back with TensorFlow and run real object-store servers.
install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[gcs,s3,tf,torch,dev]' \
		'kfp==$(KFP_PIN)' '$(TORCH_PIN)'
	touch $(DEV_STAMP)

test: install-dev
	$(BIN)/pytest -q

# The development loop: everything but the end-to-end runs marked slow.
test-fast: install-dev
	$(BIN)/pytest -q -m "not slow"

run: install
	[ -e $(SAMPLE) ] || $(BIN)/imagenet-tfrecords sample --output $(SAMPLE)  # (sample writes only into a new folder)
	$(BIN)/imagenet-tfrecords run --data $(SAMPLE) --output $(OUTPUT)
	$(BIN)/imagenet-tfrecords verify $(OUTPUT)

demo: run

compile: install
	$(PY) -m imagenet_tfrecords_kfp.compile

compile-check: install
	@tmp=$$(mktemp -d) && \
	env -u IMAGENET_TFRECORDS_IMAGE $(PY) -m imagenet_tfrecords_kfp.compile $$tmp >/dev/null && \
	if diff -ru pipelines $$tmp/pipelines -x '*.md' && diff -ru components $$tmp/components -x '*.md'; then \
	echo "pipelines/*.yaml and components/*.yaml are up to date"; rm -rf $$tmp; \
	else rm -rf $$tmp; echo "the compiled YAML is stale: run 'make compile' and commit it" >&2; exit 1; fi
	@grep -qx 'sdkVersion: kfp-$(KFP_PIN)' $(COMPILED) || \
	{ echo "$(COMPILED) was not compiled by kfp $(KFP_PIN), the image's pin (images/Dockerfile)" >&2; exit 1; }

# make image IMAGE=registry/name:tag [BASE=python:3.11...-slim-bookworm] [DOCKER_BUILD_ARGS=--network host]
# (no Docker engine? 'make image-check' checks what it is built from; tests/test_container.py builds and runs it)
image:
	docker build -f images/Dockerfile $(if $(BASE),--build-arg BASE=$(BASE)) $(DOCKER_BUILD_ARGS) -t $(IMAGE) .

# The training example's image: the same plus TensorFlow (about 600 MB more).
image-tf:
	docker build -f images/Dockerfile --build-arg VARIANT=tf $(if $(BASE),--build-arg BASE=$(BASE)) \
	  $(DOCKER_BUILD_ARGS) -t $(IMAGE_TF) .

print-image:
	@echo $(IMAGE)

# Everything a release does but pushing (scripts/release_check.py): both images (BASE, DOCKER_BUILD_ARGS as for
# make image), the wheel and sdist with twine check, the wheel in a fresh venv outside the checkout running
# --version, sample and convert, the pipeline compiled against the image's digest, one compiled step in the image.
release-check: install-dev
	$(PY) scripts/release_check.py $(if $(BASE),--base $(BASE)) \
	  $(if $(DOCKER_BUILD_ARGS),--docker-build-arg '$(DOCKER_BUILD_ARGS)')

# The release notes of the version (CHANGELOG.md's section; the release workflow adds the images' digests).
release-notes:
	@$(PYTHON) scripts/release.py notes $(VERSION)

# Re-pin every package of the image (both variants) with hashes, from pyproject.toml and images/requirements.in.
lock: install-dev
	$(BIN)/$(LOCK) --extra gcs --extra s3 -o images/requirements-conversion.txt pyproject.toml images/requirements.in
	$(BIN)/$(LOCK) --extra gcs --extra s3 --extra tf -o images/requirements-tf.txt pyproject.toml images/requirements.in

image-check: install-dev
	$(BIN)/pytest -q tests/test_image_build.py tests/test_container.py

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --no-progress --strict-collection .github/workflows

# docs/cli.md from the parser (tests/test_docs.py fails when it is stale), docs/report.png from the report of a
# fresh conversion of the sample, screenshotted by headless Chromium (apt-get install chromium).
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser)
DOCS_BUILD ?= /tmp/imagenet-tfrecords
docs: install
	env -u IMAGENET_TFRECORDS_IMAGE $(PY) -m imagenet_tfrecords.clidoc docs/cli.md
	rm -rf $(DOCS_BUILD) && mkdir -p $(DOCS_BUILD)
	cd $(DOCS_BUILD) && $(CURDIR)/$(BIN)/imagenet-tfrecords sample --output sample >/dev/null
	cd $(DOCS_BUILD) && $(CURDIR)/$(BIN)/imagenet-tfrecords convert --data sample --output tfrecords
	@test -n "$(CHROMIUM)" || { echo "headless Chromium is needed for docs/report.png: apt-get install chromium" >&2; exit 1; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	  --disable-component-update --disable-sync --force-device-scale-factor=1 --force-color-profile=srgb \
	  --hide-scrollbars --user-data-dir=$(DOCS_BUILD)/chromium --window-size=1200,1060 \
	  --screenshot=$(CURDIR)/docs/report.png file://$(DOCS_BUILD)/tfrecords/report.html 2>/dev/null
	@echo "wrote docs/cli.md and docs/report.png"

bench: install-dev
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

bench-small: install-dev
	$(PY) benchmarks/bench.py --small

clean:
	rm -rf build .pytest_cache
