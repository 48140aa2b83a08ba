#!/usr/bin/env bash
# Creates or updates the project venv (.venv, or $WXA_VENV) from scripts/requirements.txt.
# Re-installs only when the requirements change. Prints nothing when it is already up to date.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${WXA_VENV:-$root/.venv}
req=$root/scripts/requirements.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "==> installing local tools into $venv (moto server, cfn-lint)" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
