#!/usr/bin/env bash
# Creates (or reuses) the Python virtualenv with Microsoft's Graph SDK that
# tests/sim_graph.rs uses to check the Graph simulator against the official
# client (tests/sdk/graph_sdk_check.py). Idempotent: quick when already set up.
#
#   HQSYNC_PY_VENV   venv location (default: ~/.cache/hqsync-py)
#   HQSYNC_PYTHON    interpreter used to create it (default: python3)
set -euo pipefail

venv="${HQSYNC_PY_VENV:-$HOME/.cache/hqsync-py}"
python="${HQSYNC_PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import msgraph, azure.identity, kiota_http' 2>/dev/null; then
    echo "Python Graph SDK venv ready: $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet msgraph-sdk azure-identity
"$venv/bin/python" -c 'import msgraph, azure.identity, kiota_http'
echo "Python Graph SDK venv ready: $venv"
