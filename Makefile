# Developers and CI: `make test` (unit + end-to-end), `make demo`.
# Everything runs in containers built here; the first run installs and
# starts the docker engine (scripts/ensure-docker.sh).
include pins/versions.env
export

COMPOSE := docker compose
IN_ANALYST := $(COMPOSE) run --rm --no-deps analyst
PYTEST := scripts/pytest-in-analyst

.PHONY: help docker images up down demo lint unit e2e test bench pins clean

help:
	@echo "make demo   - start the local pool + gateway and run the seed's usage on 5 HTCondor workers"
	@echo "make test   - lint, unit tests and end-to-end tests against the local stack"
	@echo "make e2e    - end-to-end tests only;  make unit - unit tests only"
	@echo "make up / make down - start / stop (and wipe) the local stack"
	@echo "make bench  - benchmarks vs the pool's floor and dask-jobqueue (table, JSON, plot in bench/results/)"
	@echo "make pins   - re-resolve pins/requirements.in into pins/constraints.txt"

docker:
	scripts/ensure-docker.sh

images: docker
	$(COMPOSE) --profile analyst build

up: images
	$(COMPOSE) up -d --wait

down:
	-$(COMPOSE) --profile analyst down --volumes --remove-orphans

demo: up
	$(IN_ANALYST) python integration/demo.py

lint: images
	$(IN_ANALYST) sh -c 'ruff check --no-cache . && ruff format --no-cache --check .'

unit: images
	$(PYTEST) client/tests

e2e: up
	$(PYTEST) integration

test: lint unit e2e

# BENCH_ARGS=--smoke for a quick pass with tiny N.
bench: up
	mkdir -p bench/results && chmod 0777 bench/results
	$(COMPOSE) run --rm --no-deps -v $(CURDIR)/bench/results:/bench-results -w /src/bench \
	  analyst python run.py --out /bench-results $(BENCH_ARGS)

pins: docker
	scripts/freeze-pins.sh

clean: down
	-docker image rm htcdaskgateway/pool:dev htcdaskgateway/analyst:dev htcdaskgateway/scheduler:dev
