#!/usr/bin/env bash
# `make run`: one editor (SQLite, in-memory channel layer, one worker) behind the gateway,
# in the foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

editor_port="${EDITOR_PORT:-8001}"
gateway_port="${GATEWAY_PORT:-8000}"

# The gateway forwards the public host as X-Forwarded-Host (admin login needs it for CSRF).
(cd services/editor && exec env -u REDIS_URL EDITOR_WORKERS=1 EDITOR_PORT="$editor_port" \
  DJANGO_USE_X_FORWARDED_HOST=true \
  ../../.venv/bin/gunicorn -c gunicorn.conf.py config.asgi:application) &
editor=$!
trap 'kill -TERM "$editor" 2>/dev/null || true; wait "$editor" 2>/dev/null || true' EXIT

echo "Collaboration service: http://127.0.0.1:${gateway_port}/  (editor on :${editor_port})"
cd services/gateway
GATEWAY_UPSTREAMS="http://127.0.0.1:${editor_port}" GATEWAY_PORT="$gateway_port" \
  GATEWAY_DRAIN_SECONDS="${GATEWAY_DRAIN_SECONDS:-0}" ../../.venv/bin/python -m gateway
