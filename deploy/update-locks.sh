#!/usr/bin/env bash
# Regenerate the hash-pinned lock files under deploy/ after a dependency change.
#
#   deploy/update-locks.sh
#
# - deploy/requirements.lock        runtime dependencies of the image (from pyproject.toml)
# - deploy/build-requirements.lock  the build backend of the image's build stage
# - deploy/tools/requirements.lock  the offline validators of tests/deploy/test_deploy.py
#
# pip-tools runs from a throwaway virtualenv (pinned below) so that it never lands in the project's
# .venv. Resolution happens for the Python that runs this script: use Python 3.11 on Linux, the
# image's interpreter. The hashes cover every published wheel and sdist of each pinned version,
# so the locks install on amd64 and arm64 alike. tests/deploy/test_deploy.py checks that the runtime
# lock still satisfies pyproject.toml.
set -euo pipefail

PIP_TOOLS_VERSION=7.6.2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "use Python 3.11 (the image runs 3.11)"'

venv="$(mktemp -d)/pip-tools"
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"

compile() {
    # Paths are relative to the repository root so that the header the tool writes is stable.
    (cd "$repo" && "$venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --upgrade "$@")
}

compile --output-file deploy/requirements.lock pyproject.toml
compile --output-file deploy/build-requirements.lock deploy/build-requirements.in
compile --output-file deploy/tools/requirements.lock deploy/tools/requirements.in
echo "locks updated; rebuild the image and run: .ci/install-deploy-tools.sh && .venv/bin/pytest tests/deploy/test_deploy.py"
