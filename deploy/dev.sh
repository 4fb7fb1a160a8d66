#!/usr/bin/env bash
# Sets up a development checkout (system packages, venv, editable install) and runs the demo or the tests.
#   bash deploy/dev.sh demo [demo options]   # the main job
#   bash deploy/dev.sh test [pytest options] # the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-demo}"; shift || true

need_pkgs=()
for bin in mosquitto:mosquitto mosquitto_passwd:mosquitto prometheus:prometheus promtool:prometheus openssl:openssl; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need_pkgs+=("${bin##*:}")
done
if [ "$what" = test ] && [ ${#need_pkgs[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need_pkgs[@]}" | sort -u) >/dev/null
  # Debian starts a system-wide broker on 1883; the tests start their own on free ports.
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
case "$what" in
  demo) .venv/bin/python -m pip install -q -e '.[plot]' ;;
  *)    .venv/bin/python -m pip install -q -e '.[test,plot]' ;;
esac

case "$what" in
  demo) exec .venv/bin/edge-mpc demo "$@" ;;
  test)
    .venv/bin/ruff check .
    exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: deploy/dev.sh demo|test [args]" >&2; exit 2 ;;
esac
