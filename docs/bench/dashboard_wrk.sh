#!/bin/bash
# The dashboard benchmark (docs/BENCHMARKS.md, "Dashboard"): serves `coinpilot dashboard`
# from BINARY on DATABASE_URL (seeded by dashboard_1m_jobs.sql), logs in like a browser
# (login form token, then the session cookie) and runs wrk at 50 connections per page.
# Usage: DATABASE_URL=… docs/bench/dashboard_wrk.sh ./target/release/coinpilot [PORT]
# Env: WRK_SECS (15), PATHS (the pages, space-separated).
set -u
BIN=$1; PORT=${2:-18080}
export COINPILOT_DASHBOARD_PASSWORD=bench-pass-123
export COINPILOT_DATABASE_MAX_CONNECTIONS=${COINPILOT_DATABASE_MAX_CONNECTIONS:-16}
export RUST_LOG=warn
"$BIN" dashboard --listen 127.0.0.1:$PORT > /tmp/dashboard-bench.log 2>&1 &
SRV=$!
trap 'kill $SRV 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
JAR=$(mktemp)
CSRF=$(curl -s -c "$JAR" http://127.0.0.1:$PORT/login | grep -o 'name="csrf" value="[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
curl -s -b "$JAR" -c "$JAR" -o /dev/null -d "username=admin&password=$COINPILOT_DASHBOARD_PASSWORD&csrf=$CSRF" \
  http://127.0.0.1:$PORT/login
TOK=$(grep coinpilot_session "$JAR" | awk '{print $7}')
[ -n "$TOK" ] || { echo "login failed"; exit 1; }
echo "== $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
for path in ${PATHS:-/ /jobs /jobs?state=discarded /jobs?before=500000 /jobs?state=discarded\&kind=ai_review /jobs?kind=nope /jobs?q=order+999 /trading}; do
  url="http://127.0.0.1:$PORT$path"
  curl -s -o /dev/null -b "coinpilot_session=$TOK" "$url"   # warm-up
  one=$(curl -s -o /dev/null -w '%{time_total}' -b "coinpilot_session=$TOK" "$url")
  echo "-- $path  single request: ${one}s  (load $(cut -d' ' -f1 /proc/loadavg))"
  wrk -t2 -c50 -d${WRK_SECS:-15}s --latency -H "Cookie: coinpilot_session=$TOK" "$url" \
    | grep -E "Latency|50%|90%|99%|Requests/sec|Non-2xx|Socket errors|requests in"
done
