#!/usr/bin/env bash
# Install the Debian packages whose command is missing: each argument is COMMAND=PACKAGE.
#   bash tools/apt-need.sh chromium=chromium node=nodejs
set -euo pipefail
need=""
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || need="$need ${pair#*=}"
done
[ -n "$need" ] || exit 0
echo "== installing$need"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
