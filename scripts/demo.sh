#!/usr/bin/env bash
# `make demo`: a mini-program's journey against the stack `make dev` runs.
set -euo pipefail
: "${API_PORT:=9000}" "${SIM_PORT:=9100}"
api="http://127.0.0.1:$API_PORT/lambda-url"
sim="http://127.0.0.1:$SIM_PORT"
openid="o_demo_$(date +%s)"

if ! (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null; then
  echo "demo: nothing listens on port $API_PORT: start the stack with 'make dev' in another terminal" >&2
  exit 1
fi

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
step() { printf '\n\033[1m%s\033[0m\n' "$*"; }
# call METHOD URL [BODY] [TOKEN]: prints the status and body, keeps the body in $body.
call() {
  local args=(-s -o /tmp/wxa-demo-body -w '%{http_code}' -X "$1" "$2")
  [ -n "${3:-}" ] && args+=(-H 'content-type: application/json' -d "$3")
  [ -n "${4:-}" ] && args+=(-H "authorization: Bearer $4")
  status=$(curl "${args[@]}")
  body=$(cat /tmp/wxa-demo-body)
  echo "  -> $status $body"
}
expect() { [ "$status" = "$1" ] || { echo "demo: expected HTTP $1, got $status" >&2; exit 1; }; }

step "1. wx.login on the phone (the simulator mints a code for $openid)"
code=$(curl -s -XPOST "$sim/__sim/login" -H 'content-type: application/json' -d "{\"openid\":\"$openid\"}" | json 'd["code"]')
echo "  code: $code"

step "2. POST /login {code}: the server exchanges it with jscode2session and keeps the session_key"
call POST "$api/login/" "{\"code\":\"$code\"}"; expect 200
token=$(echo "$body" | json 'd["token"]')

step "3. GET /session with the token: is the session_key still the one WeChat holds?"
call GET "$api/session/" "" "$token"; expect 200
[ "$(echo "$body" | json 'd["valid"]')" = "True" ] || { echo "demo: expected valid: true" >&2; exit 1; }

step "4. The same code again is refused: a code works once (the client must call wx.login again)"
call POST "$api/login/" "{\"code\":\"$code\"}"; expect 400

step "5. The user runs wx.login on another device: the old session_key is no longer current"
curl -s -XPOST "$sim/__sim/login" -H 'content-type: application/json' -d "{\"openid\":\"$openid\"}" > /dev/null
call GET "$api/session/" "" "$token"; expect 200
[ "$(echo "$body" | json 'd["valid"]')" = "False" ] || { echo "demo: expected valid: false" >&2; exit 1; }

step "6. Without a token: 401"
call GET "$api/session/"; expect 401

step "7. Calls the server made to WeChat"
curl -s "$sim/__sim/requests" | json 'd["counts"]'
printf '\ndemo: all steps behaved as expected\n'
