#!/usr/bin/env bash
# Installs everything (scripts/setup_env.sh, idempotent) and runs the whole test suite.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# Each run gets its own ROS domain and stays on this host (test/ros/conftest.py sets them too).
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec .venv/bin/python -m pytest -q "$@"
