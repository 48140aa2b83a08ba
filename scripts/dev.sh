#!/usr/bin/env bash
# `make dev`: the whole stack on 127.0.0.1, in the foreground; Ctrl-C stops everything it started.
#   moto server (DynamoDB + Secrets Manager)  MOTO_PORT (9200)
#   WeChat simulator                          SIM_PORT  (9100)
#   the HTTP API of template.yaml             API_PORT  (9000): http://127.0.0.1:$API_PORT/login, /phone, ...
#     (tools/gateway: each route's payload 2.0 event, invoked through cargo lambda watch)
#   functions via `cargo lambda watch`        LAMBDA_PORT (API_PORT+1): its Lambda Invoke API, for the gateway
# Every setting below can be overridden from the environment.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

: "${API_PORT:=9000}" "${SIM_PORT:=9100}" "${MOTO_PORT:=9200}"
: "${LAMBDA_PORT:=$((API_PORT + 1))}"
: "${APP_ID:=wx0123456789abcdef}" "${APP_SECRET:=local-dev-app-secret}"
: "${SESSIONS_TABLE:=wxa-sessions}" "${ORDERS_TABLE:=wxa-orders}" "${REFUNDS_TABLE:=wxa-refunds}" "${TRANSFERS_TABLE:=wxa-transfers}" "${MESSAGES_TABLE:=wxa-messages}" "${TOKENS_TABLE:=wxa-tokens}" "${PAY_API:=v3}"
: "${APP_SECRET_ID:=wxa/app}" "${PUSH_SECRET_ID:=wxa/push}" "${PAY_SECRET_ID:=wxa/pay}"
: "${SESSION_TTL_SECS:=604800}" "${RUST_LOG:=info}"
# The message push's Token and EncodingAESKey, set in the simulator's "console" and the app secret
# (in plain mode without the key: with one, the receiver refuses plain pushes).
: "${PUSH_TOKEN:=localDevPushToken}" "${PUSH_AES_KEY:=localDevEncodingAESKey0123456789abcdefghijk}"
: "${PUSH_MODE:=safe}" "${PUSH_FORMAT:=xml}"
# WeChat's API security mode (signed, encrypted server API calls): on as a console can turn it on;
# API_SECURITY=off keeps every call plain.
: "${API_SECURITY:=on}"
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for_port() { # name port pid
  for _ in $(seq 1 600); do
    port_in_use "$2" && return 0
    kill -0 "$3" 2>/dev/null || { echo "dev: $1 exited; see .dev/$1.log" >&2; tail -n 20 ".dev/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "dev: $1 did not listen on port $2 within 60 s; see .dev/$1.log" >&2; exit 1
}

for p in "$API_PORT" "$LAMBDA_PORT" "$SIM_PORT" "$MOTO_PORT"; do
  if port_in_use "$p"; then
    echo "dev: port $p is already in use (another 'make dev'?). Stop it or set API_PORT/LAMBDA_PORT/SIM_PORT/MOTO_PORT." >&2
    exit 1
  fi
done

bash scripts/venv.sh
venv=${WXA_VENV:-$root/.venv}
target=${CARGO_TARGET_DIR:-$root/target}
export PATH="$venv/bin:$PATH"
mkdir -p .dev
echo "==> building the simulator, the gateway and the functions (debug)"
cargo build --quiet --workspace --bins
# The gateway's routes: template.yaml's HttpApi events.
"$venv/bin/python" scripts/cfn_json.py template.yaml > .dev/template.json

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "==> stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> moto server on $AWS_ENDPOINT_URL"
# moto, with DynamoDB's atomic conditional writes (see the script).
"$venv/bin/python" scripts/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" > .dev/moto.log 2>&1 &
pids+=($!); wait_for_port moto "$MOTO_PORT" "$!"
echo "==> WeChat simulator on http://127.0.0.1:$SIM_PORT (app $APP_ID)"
SIM_PORT="$SIM_PORT" APP_ID="$APP_ID" APP_SECRET="$APP_SECRET" "$target/debug/wechat-sim" > .dev/sim.log 2>&1 &
pids+=($!); wait_for_port sim "$SIM_PORT" "$!"

python scripts/local_aws.py --endpoint "$AWS_ENDPOINT_URL" setup \
  --sessions-table "$SESSIONS_TABLE" --orders-table "$ORDERS_TABLE" --refunds-table "$REFUNDS_TABLE" \
  --transfers-table "$TRANSFERS_TABLE" --messages-table "$MESSAGES_TABLE" --tokens-table "$TOKENS_TABLE" \
  --app-secret-id "$APP_SECRET_ID" --app-secret "$APP_SECRET" \
  --push-secret-id "$PUSH_SECRET_ID" --push-token "$PUSH_TOKEN" --push-aes-key "$([ "$PUSH_MODE" = plain ] || echo "$PUSH_AES_KEY")" \
  --pay-secret-id "$PAY_SECRET_ID" --pay-sim "http://127.0.0.1:$SIM_PORT" --pay-dir .dev
echo "    tables $SESSIONS_TABLE and $ORDERS_TABLE (from template.yaml), app secret $APP_SECRET_ID,"
echo "    pay secret $PAY_SECRET_ID with a local merchant's keys"
if [ "$API_SECURITY" = on ]; then
  # The console (开发设置 → API 安全): the simulator makes the keys and enforces the mode; the
  # operator downloads them and writes them into the app secret with `wxa secrets init app`.
  keys=.dev/api-security; mkdir -p "$keys"; chmod 700 "$keys"
  curl -sf -XPOST "http://127.0.0.1:$SIM_PORT/__sim/api-security" -H 'content-type: application/json' -d '{}' \
    | "$venv/bin/python" -c '
import json, sys
doc, out = json.load(sys.stdin), sys.argv[1]
open(f"{out}/aes_key", "w").write(doc["aes_key"])
open(f"{out}/private_key.pem", "w").write(doc["private_key"])
cert = doc["platform_certificates"][0]
open(f"{out}/platform_cert.pem", "w").write(cert["certificate"])
print(doc["aes_sn"], doc["private_key_sn"], cert["sn"])' "$keys" > "$keys/sns"
  read -r aes_sn key_sn cert_sn < "$keys/sns"
  WXA_APP_SECRET="$APP_SECRET" "$target/debug/wxa" secrets init app --secret-id "$APP_SECRET_ID" \
    --endpoint-url "$AWS_ENDPOINT_URL" --region "$AWS_REGION" \
    --api-aes-key-file "$keys/aes_key" --api-aes-sn "$aes_sn" \
    --api-private-key "$keys/private_key.pem" --api-private-key-sn "$key_sn" \
    --api-platform-cert "$cert_sn=$keys/platform_cert.pem" > /dev/null
  echo "    API security mode on: the simulator enforces it, the app secret holds its keys (API_SECURITY=off for plain calls)"
fi

cat > .dev/functions.env <<ENV
APP_ID=$APP_ID
SESSIONS_TABLE=$SESSIONS_TABLE
ORDERS_TABLE=$ORDERS_TABLE
REFUNDS_TABLE=$REFUNDS_TABLE
TRANSFERS_TABLE=$TRANSFERS_TABLE
MESSAGES_TABLE=$MESSAGES_TABLE
TOKENS_TABLE=$TOKENS_TABLE
PAY_API=$PAY_API
WECHATPAY_API_BASE=http://127.0.0.1:$SIM_PORT
PAY_NOTIFY_URL=http://127.0.0.1:$API_PORT/pay/notify
APP_SECRET_ID=$APP_SECRET_ID
PUSH_SECRET_ID=$PUSH_SECRET_ID
PAY_SECRET_ID=$PAY_SECRET_ID
SESSION_TTL_SECS=$SESSION_TTL_SECS
WECHAT_API_BASE=http://127.0.0.1:$SIM_PORT
MEDIA_URL_HOSTS=cdn.example.com
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_REGION=$AWS_REGION
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
RUST_LOG=$RUST_LOG
ENV
echo "==> functions via cargo lambda watch, its Lambda Invoke API on http://127.0.0.1:$LAMBDA_PORT"
cargo lambda watch -A 127.0.0.1 -P "$LAMBDA_PORT" --env-file .dev/functions.env > .dev/functions.log 2>&1 &
pids+=($!); wait_for_port functions "$LAMBDA_PORT" "$!"
echo "==> the HTTP API of template.yaml on http://127.0.0.1:$API_PORT"
"$target/debug/wxa-gateway" --template-json .dev/template.json --port "$API_PORT" \
  --lambda-url "http://127.0.0.1:$LAMBDA_PORT" > .dev/gateway.log 2>&1 &
pids+=($!); wait_for_port gateway "$API_PORT" "$!"
grep '^  ' .dev/gateway.log
# WeChat's console: message push to this API, in $PUSH_MODE mode, $PUSH_FORMAT bodies.
curl -sf -XPOST "http://127.0.0.1:$SIM_PORT/__sim/push/config" -H 'content-type: application/json' \
  -d "{\"url\":\"http://127.0.0.1:$API_PORT/wechat/push\",\"token\":\"$PUSH_TOKEN\",\"encoding_aes_key\":\"$PUSH_AES_KEY\",\"mode\":\"$PUSH_MODE\",\"format\":\"$PUSH_FORMAT\"}"
echo "==> message push ($PUSH_MODE, $PUSH_FORMAT) from the simulator to http://127.0.0.1:$API_PORT/wechat/push"

cat <<MSG

Ready. Try it:
  make demo
  curl -s -XPOST http://127.0.0.1:$SIM_PORT/__sim/login -d '{"openid":"o_me"}' -H 'content-type: application/json'
  curl -s -XPOST http://127.0.0.1:$API_PORT/login -H 'content-type: application/json' -d '{"code":"<code>"}'
  curl -s http://127.0.0.1:$API_PORT/session -H 'authorization: Bearer <token>'
Logs: .dev/moto.log .dev/sim.log .dev/functions.log .dev/gateway.log    Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "dev: a process exited; see the logs in .dev/" >&2
