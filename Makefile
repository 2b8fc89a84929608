# Developers and CI: `make test` (unit + end-to-end), `make demo`.
# Everything runs in containers built here; the first run installs and
# starts the docker engine (scripts/ensure-docker.sh).
include pins/versions.env
# Group of the docker socket, which the analyst container's tests use to
# stop and restart the stack's services.
DOCKER_GID = $(shell stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)
export

COMPOSE := docker compose
IN_ANALYST := $(COMPOSE) run --rm --no-deps analyst
PYTEST := scripts/pytest-in-analyst

.PHONY: help docker images up down demo lab lab-k8s lint unit e2e test soak bench pins clean chart-check e2e-k8s rig-up rig-down dist version

help:
	@echo "make demo   - start the local pool + gateway and run the seed's usage on 5 HTCondor workers"
	@echo "make test   - lint, unit tests and end-to-end tests against the local stack"
	@echo "make e2e    - end-to-end tests only;  make unit - unit tests only"
	@echo "make up / make down - start / stop (and wipe) the local stack"
	@echo "make lab    - JupyterLab as an analyst's (client, widgets, dask-labextension) on the local stack, port LAB_PORT"
	@echo "make lab-k8s - the same against the chart on the rig (make e2e-k8s's set-up)"
	@echo "make soak   - a running analysis while the pool's ordinary events hit it (MINUTES=3)"
	@echo "make bench  - benchmarks vs the pool's floor and dask-jobqueue (table, JSON, plot in bench/results/)"
	@echo "make pins   - re-resolve pins/requirements.in into pins/constraints.txt"
	@echo "make dist   - wheel, sdist and chart package in dist/, checked (the wheel tested on Python 3.11-3.13)"
	@echo "make version - write pins/versions.env's HTCDASKGATEWAY_VERSION into the package and the chart"
	@echo "make chart-check - the Helm chart: lint, render, validate (k8s 1.31-1.34), tests, config load"
	@echo "make e2e-k8s     - the chart on a single-node Kubernetes built here, pool outside, the e2e suites through it"
	@echo "make rig-up / make rig-down - start / remove that Kubernetes (integration/k8s/README.md)"

docker:
	scripts/ensure-docker.sh

images: docker
	$(COMPOSE) --profile analyst build

up: images
	$(COMPOSE) up -d --wait

down: rig-down
	-$(COMPOSE) --profile analyst down --volumes --remove-orphans

demo: up
	$(IN_ANALYST) python integration/demo.py

# The usage notebook in JupyterLab, as alice, against the local stack
# (lab-k8s: against the rig's gateway): open the printed
# http://127.0.0.1:$(LAB_PORT)/lab?token=... link on this machine.
LAB_PORT ?= 18888
lab: up
	LAB_PORT=$(LAB_PORT) scripts/lab-in-analyst

lab-k8s: images
	LAB_PORT=$(LAB_PORT) E2E_K8S_LAB=1 integration/k8s/e2e.sh

lint: images
	$(IN_ANALYST) sh -c 'ruff check --no-cache . && ruff format --no-cache --check . && python scripts/check_docs.py'

unit: images
	$(PYTEST) client/tests

e2e: up
	$(PYTEST) integration

test: lint unit e2e

# MINUTES=60 for a long run; the report is also written to build/soak.txt.
MINUTES ?= 3
soak: up
	mkdir -p build && chmod 0777 build
	$(COMPOSE) run --rm --no-deps -v $(CURDIR)/build:/build analyst \
	  python integration/soak.py --minutes $(MINUTES) --out /build/soak.txt

# BENCH_ARGS=--smoke for a quick pass with tiny N.
bench: up
	mkdir -p bench/results && chmod 0777 bench/results
	$(COMPOSE) run --rm --no-deps -v $(CURDIR)/bench/results:/bench-results -w /src/bench \
	  analyst python run.py --out /bench-results $(BENCH_ARGS)

pins: docker
	scripts/freeze-pins.sh

# The release's artifacts in dist/, built and checked (scripts/dist.sh).
dist: images
	scripts/dist.sh

version:
	scripts/version.sh write

clean: down
	-docker image rm htcdaskgateway/pool:$(HTCDASKGATEWAY_VERSION) htcdaskgateway/analyst:$(HTCDASKGATEWAY_VERSION) htcdaskgateway/scheduler:$(HTCDASKGATEWAY_VERSION)

# The Helm chart's static checks; no Kubernetes cluster needed (charts/README.md).
chart-check: docker
	charts/ci/chart-check.sh

# The chart on the rig's single-node Kubernetes (integration/k8s), with the
# compose pool and hub outside it, and the e2e suites run through it.
e2e-k8s: images
	integration/k8s/e2e.sh

rig-up: docker
	integration/k8s/rig.sh up

rig-down:
	-integration/k8s/rig.sh down
