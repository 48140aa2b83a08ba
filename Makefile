# wxa-serverless: the commands README.md documents. Each installs what it needs.
.PHONY: dev demo test lint fuzz build bench soak bench-profiles login-latency venv

venv:
	@bash scripts/venv.sh

## make dev: moto server + WeChat simulator + the functions (cargo lambda watch) behind the local HTTP API gateway, Ctrl-C stops all
dev:
	@bash scripts/dev.sh

## make demo: a mini-program journey against the running `make dev` stack
demo:
	@python3 scripts/demo.py

## make test: every test of the workspace (unit and end to end on moto server + simulator)
test: venv
	cargo test --workspace
	node --test examples/test/

## make fuzz: mutation-fuzz the untrusted-input parsers, FUZZ_SECONDS (60) per target
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} cargo test -p wxa-shared --test fuzz -- --nocapture --test-threads 1

## make lint: formatting, clippy, the SAM template (cfn-lint, sam validate --lint) and its security scan (checkov)
CHECKOV_SKIPS = CKV_AWS_115,CKV_AWS_116,CKV_AWS_117,CKV_AWS_119,CKV_AWS_158,CKV_AWS_173
lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	.venv/bin/cfn-lint template.yaml
	@bash scripts/venv.sh .venv-sam scripts/requirements-sam.txt
	SAM_CLI_TELEMETRY=0 .venv-sam/bin/sam validate --lint --region us-east-1
	@.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-lint.txt
	# Skipped checks and their reasons are listed at the top of template.yaml.
	BC_SKIP_MAPPING=TRUE .venv/bin/checkov -f template.yaml --framework cloudformation --compact --quiet \
		--skip-check $(CHECKOV_SKIPS)

# Every folder of functions/ (a test holds them to template.yaml's functions).
FUNCTIONS = $(notdir $(wildcard functions/*))

## make build: release bootstraps for Lambda (arm64), target/lambda/<function>/bootstrap (≈ 11+ min cold)
build: venv
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 $(addprefix -p ,$(FUNCTIONS))
	@ls -l target/lambda/*/bootstrap

## make bench: cold starts, throughput, the cold journey over TLS under a modelled network, warm CPU (criterion + wechatpy),
## the 1,000-container token fleet and arm64 sizes, written
## to BENCHMARKS.md (release builds: slow the first time)
bench: venv build
	@bash scripts/venv.sh .venv-bench scripts/requirements-bench.txt
	cargo build --release $(addprefix -p ,$(FUNCTIONS)) -p bench
	mkdir -p target/bench
	target/release/coldstart --runs $${RUNS:-20} --out target/bench/coldstart.json
	target/release/coldstart --throughput $${EVENTS:-1000} --out target/bench/throughput.json
	target/release/coldstart --journey --runs $${JOURNEY_RUNS:-10} --out target/bench/journey.json
	cargo bench -p wxa-shared --bench warm
	.venv-bench/bin/python scripts/bench_wechatpy.py > target/bench/wechatpy.json
	bash scripts/bench_jitter.sh
	FLEET_INSTANCES=$${FLEET_INSTANCES:-1000} FLEET_REPORT=$(CURDIR)/target/bench/fleet.json \
		cargo test --release -p wxa-shared --test fleet -- --nocapture
	$(MAKE) soak
	python3 scripts/bench_report.py

## make soak: the ledger's model-based fault test at LEDGER_SCHEDULES (50,000) random schedules, release build,
## LEDGER_WORKERS (16) side by side on LEDGER_MOTOS (3) moto servers; schedules/s in target/bench/ledger.json
## and its own section of BENCHMARKS.md (dated, with its commit)
soak: venv
	mkdir -p target/bench
	LEDGER_SCHEDULES=$${LEDGER_SCHEDULES:-50000} LEDGER_WORKERS=$${LEDGER_WORKERS:-16} LEDGER_MOTOS=$${LEDGER_MOTOS:-3} \
		LEDGER_REPORT=$(CURDIR)/target/bench/ledger.json \
		cargo test --release -p wxa-shared --test ledger -- --nocapture
	python3 scripts/bench_report.py --ledger-only

## make bench-profiles: the release-profile size study (one arm64 build of login per variant,
## ~10 min each); its table joins BENCHMARKS.md at the next `make bench`
bench-profiles: venv
	bash scripts/bench_profiles.sh

## make login-latency: warm login latency against the running `make dev` stack
login-latency:
	@bash scripts/login_latency.sh
