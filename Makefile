# wxa-serverless: the commands README.md documents. Each installs what it needs.
.PHONY: dev demo test lint login-latency venv

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

## make lint: formatting, clippy, and the SAM template
lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	.venv/bin/cfn-lint template.yaml

## make login-latency: warm login latency against the running `make dev` stack
login-latency:
	@bash scripts/login_latency.sh
