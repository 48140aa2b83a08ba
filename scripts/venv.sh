#!/usr/bin/env bash
# Creates or updates a project venv from a pinned requirements file; re-installs only when the
# file changes, and prints nothing when it is up to date.
#   scripts/venv.sh                                   .venv (or $WXA_VENV) from scripts/requirements.txt
#   scripts/venv.sh .venv-sam scripts/requirements-sam.txt
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-${WXA_VENV:-$root/.venv}}
req=${2:-$root/scripts/requirements.txt}
case "$venv" in /*) ;; *) venv=$root/$venv ;; esac
case "$req" in /*) ;; *) req=$root/$req ;; esac
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "==> installing $(basename "$req") into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
