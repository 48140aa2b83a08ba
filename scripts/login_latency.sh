#!/usr/bin/env bash
# `make login-latency`: times N warm logins (default 50) end to end against the `make dev`
# stack: curl -> wxa-gateway -> cargo lambda watch -> login (debug build) -> simulator + moto. Prints the
# median, p90 and max of curl's total time. A code is minted before each timed request.
set -euo pipefail
: "${API_PORT:=9000}" "${SIM_PORT:=9100}" "${N:=50}"
api="http://127.0.0.1:$API_PORT/login"
sim="http://127.0.0.1:$SIM_PORT/__sim/login"
mint() { curl -sf -XPOST "$sim" -H 'content-type: application/json' -d '{"openid":"o_latency"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["code"])'; }
# One untimed login starts the function process (a cold start).
curl -sf -o /dev/null -XPOST "$api" -H 'content-type: application/json' -d "{\"code\":\"$(mint)\"}"
for _ in $(seq 1 "$N"); do
  code=$(mint)
  curl -sf -o /dev/null -w '%{time_total}\n' -XPOST "$api" -H 'content-type: application/json' -d "{\"code\":\"$code\"}"
done | python3 -c '
import sys, statistics
t = sorted(float(x) * 1000 for x in sys.stdin)
print(f"warm login over {len(t)} requests: median {statistics.median(t):.1f} ms, p90 {t[int(len(t)*0.9)-1]:.1f} ms, max {t[-1]:.1f} ms")'
