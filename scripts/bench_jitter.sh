#!/usr/bin/env bash
# aws-lc's CPU-jitter entropy: time of the first random bytes with and without it, median of 20
# processes each. Builds tools/jitter-probe twice (separate target dirs). Writes target/bench/jitter.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench/jitter.json
mkdir -p target/bench
echo "[" > "$out"
for mode in jitter no-jitter; do
  dir=target/jitter-probe/$mode
  # Explicit both ways: .cargo/config.toml sets 1 for every build of this repo.
  if [ "$mode" = no-jitter ]; then export AWS_LC_SYS_NO_JITTER_ENTROPY=1; else export AWS_LC_SYS_NO_JITTER_ENTROPY=0; fi
  cargo build --quiet --release --manifest-path tools/jitter-probe/Cargo.toml --target-dir "$dir"
  python3 - "$dir/release/jitter-probe" "$mode" >> "$out" <<'PY'
import json, statistics, subprocess, sys, time
firsts, seconds, procs = [], [], []
for _ in range(20):
    t = time.perf_counter()
    r = json.loads(subprocess.run([sys.argv[1]], capture_output=True, text=True, check=True).stdout)
    procs.append((time.perf_counter() - t) * 1000)
    firsts.append(r["first_us"]); seconds.append(r["second_us"])
print(json.dumps({"build": sys.argv[2], "first_random_us": statistics.median(firsts),
                  "next_random_us": statistics.median(seconds), "process_ms": statistics.median(procs)})
      + ("," if sys.argv[2] == "jitter" else ""))
PY
done
echo "]" >> "$out"
cat "$out"
