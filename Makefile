# wxa-serverless: the commands README.md documents. Each installs what it needs.
.PHONY: dev demo test lint fuzz login-latency venv

venv:
	@bash scripts/venv.sh

## make dev: moto server + WeChat simulator + the functions (cargo lambda watch), Ctrl-C stops all
dev:
	@bash scripts/dev.sh

## make demo: a mini-program journey against the running `make dev` stack
demo:
	@python3 scripts/demo.py

## make test: every test of the workspace (unit and end to end on moto server + simulator)
test: venv
	cargo test --workspace

## make fuzz: mutation-fuzz the untrusted-input parsers, FUZZ_SECONDS (60) per target
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} cargo test -p wxa-shared --test fuzz -- --nocapture --test-threads 1

## make lint: formatting, clippy, and the SAM template
lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	.venv/bin/cfn-lint template.yaml

## make login-latency: warm login latency against the running `make dev` stack
login-latency:
	@bash scripts/login_latency.sh
