#!/usr/bin/env bash
# Create .venv in the repository root and install the project with its test extras.
# torch/torchvision are pinned first so pip does not pick another build for the rest;
# infra/constraints.txt pins the rest to a tested set (and spares pip's resolver a long backtrack).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -c infra/constraints.txt -e ".[test]"
echo "installed into $(pwd)/.venv"
