#!/usr/bin/env bash
# Installs the system packages the tests and local runs need, when they are missing:
# Redis, PostgreSQL, Node, Prometheus (promtool), Chromium.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
# promtool checks the alert rules; the Prometheus server scrapes the services in a test.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The browser tests drive Debian's Chromium through Playwright.
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system packages: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
# The package may start a Prometheus server of its own; tests run theirs on free ports.
if [[ " ${need[*]} " == *" prometheus "* ]] && command -v service >/dev/null 2>&1; then
  $sudo service prometheus stop >/dev/null 2>&1 || true
fi
