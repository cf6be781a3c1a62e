# Test bed entry points; see docs/DEVELOPING.md. Every target but `clean`
# depends on `setup` (scripts/setup.sh: fast when nothing changed).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

SUITE := scripts/run-suite.sh
# The suites `make test` runs, in this order; each is also a target. Add a
# suite by appending its target here (SUITES += my-suite) and recording it
# with $(SUITE) run my-suite KIND -- CMD.
SUITES := lint sanity unit integration molecule
# The local fleet (scripts/fleet.sh): zero downtime under load, faults, TLS scan.
SUITES += fleet-tests

.PHONY: setup test clean $(SUITES)

setup:
	scripts/setup.sh

lint: setup
	$(SUITE) run lint command -- scripts/lint.sh

sanity: setup
	$(SUITE) run sanity ansible-test -- scripts/sanity.sh

unit: setup
	$(SUITE) run unit pytest -- pytest tests/unit

integration: setup
	$(SUITE) run integration pytest -- pytest tests/integration

molecule: setup
	$(SUITE) run molecule molecule --

fleet-tests: setup
	$(SUITE) run fleet-tests pytest -- pytest tests/fleet

# Runs every suite even when one fails (-k), then prints per-suite counts and
# a last line "N passed, N failed" (CI reads it); fails if any suite failed.
test: setup
	@$(SUITE) reset
	@rc=0; $(MAKE) --no-print-directory -k $(SUITES) || rc=$$?; \
	  $(SUITE) summary $(SUITES); exit $$rc

# Stops this checkout's Pebble instances, removes leftover test containers and
# networks, and deletes .cache (venv included). Images and /var/cache/fleetcert
# stay: they are machine-wide caches.
clean:
	-for d in .cache/pebble/*/; do [ -d "$$d" ] && scripts/pebble.sh stop --name "$$(basename "$$d")"; done
	-ids=$$(podman ps -aq --filter label=org.fleetcert.test-session); [ -z "$$ids" ] || podman rm -f -v -t 0 $$ids
	-nets=$$(podman network ls -q --filter label=org.fleetcert.test-session); [ -z "$$nets" ] || podman network rm -f $$nets
	rm -rf .cache tests/output .pytest_cache

# Benchmarks: not part of `make test` (timings depend on the machine and its
# load); see bench/README.md. Extra options: make bench-order BENCH_ARGS="--rounds 3".
.PHONY: bench bench-order
bench: bench-order

bench-order: setup
	.cache/venv/bin/python bench/order_bench.py $(BENCH_ARGS)

# The fleet benchmark (bench/fleet_bench.py): fleets of 3, 10 and 25 nodes.
# Options: make bench-fleet BENCH_ARGS="--sizes 3,10".
.PHONY: bench-fleet
bench: bench-fleet

bench-fleet: setup
	.cache/venv/bin/python bench/fleet_bench.py $(BENCH_ARGS)

# The local fleet demo (docs/fleet.md): three web nodes behind a TCP load
# balancer and a local ACME CA (Pebble), then playbooks/site.yml and the
# checks an operator would make. A second `make demo` places no ACME order.
.PHONY: demo demo-down
demo: setup
	scripts/fleet.sh demo

demo-down:
	scripts/fleet.sh down
