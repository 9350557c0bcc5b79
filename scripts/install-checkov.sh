#!/usr/bin/env bash
# Installs checkov into its own virtualenv, .tools/checkov: it pins many packages of its
# own that must not meet the project's. Idempotent: does nothing when the pinned
# version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION="3.3.30"
VENV=.tools/checkov
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/checkov" ] && [ "$("$VENV/bin/checkov" --version 2>/dev/null)" = "$CHECKOV_VERSION" ]; then
  echo "checkov: $CHECKOV_VERSION already in $VENV"
  exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"
echo "checkov: $("$VENV/bin/checkov" --version) installed in $VENV"
