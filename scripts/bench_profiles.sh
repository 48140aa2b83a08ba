#!/usr/bin/env bash
# Release-profile study: builds `login` for arm64 (cargo lambda) under each candidate set of
# profile options, each in its own target dir (a full build each: ~10 min on 2 cores), and records
# the bootstrap's size and zipped size in target/bench/profiles.json. Usage:
#   bash scripts/bench_profiles.sh            (all variants)   VARIANTS="s z-fat-abort" bash ...
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
declare -A SETTINGS=(
  [o3-thin]="CARGO_PROFILE_RELEASE_OPT_LEVEL=3 CARGO_PROFILE_RELEASE_LTO=thin"
  [o3-fat]="CARGO_PROFILE_RELEASE_OPT_LEVEL=3 CARGO_PROFILE_RELEASE_LTO=fat"
  [s-thin]="CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=thin"
  [s-fat-abort]="CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_PANIC=abort"
  [z-fat-abort]="CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_PANIC=abort"
)
variants=${VARIANTS:-"o3-thin o3-fat s-thin s-fat-abort z-fat-abort"}
mkdir -p target/bench
results=target/bench/profiles.jsonl
for v in $variants; do
  dir=target/profile-study/$v
  echo "== $v: ${SETTINGS[$v]} (codegen-units 1, stripped)"
  start=$(date +%s)
  env ${SETTINGS[$v]} CARGO_TARGET_DIR="$dir" cargo lambda build --release --arm64 -p login --lambda-dir "$dir/lambda" >/dev/null
  python3 - "$v" "${SETTINGS[$v]}" "$dir/lambda/login/bootstrap" "$(( $(date +%s) - start ))" >> "$results" <<'PY'
import io, json, os, sys, zipfile
name, settings, path, secs = sys.argv[1:]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(path, "bootstrap")
label = settings.replace("CARGO_PROFILE_RELEASE_", "").replace("OPT_LEVEL", "opt-level").replace("LTO", "lto").replace("PANIC", "panic").lower()
print(json.dumps({"variant": name, "settings": label, "bytes": os.path.getsize(path), "zipped": len(buf.getvalue()), "build_secs": int(secs)}))
PY
  tail -n 1 "$results"
done
# Last result per variant, in a stable order.
python3 - <<'PY'
import json
rows = {}
for line in open("target/bench/profiles.jsonl"):
    r = json.loads(line); rows[r["variant"]] = r
json.dump(list(rows.values()), open("target/bench/profiles.json", "w"), indent=1)
PY
