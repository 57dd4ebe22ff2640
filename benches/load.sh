#!/usr/bin/env bash
# Load bench: the same fixed load against (a) the backend directly, (b) tidegate and (c) nginx
# as an equally configured reverse proxy, in one run, several rounds each, medians reported.
#
#   benches/load.sh                 # 3 rounds of 10 s, 32 connections
#   ROUNDS=5 DURATION=20 CONNECTIONS=64 benches/load.sh
#
# Fairness (see BENCHMARKS.md): the backend is nginx `return 200` with 1 worker and no access
# log; wrk (1 thread) and the backend share CPU 0; the proxy under test runs alone on CPU 1
# (tidegate then runs one tokio worker). nginx as proxy: 1 worker, upstream keepalive,
# HTTP/1.1 upstream, no access log. tidegate: access log off (RUST_LOG=warn), as nginx's.
# The figure that separates proxies is proxy CPU time per request: (utime + stime of the proxy
# process over the run, from /proc/PID/stat) / requests.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}

need() { command -v "$1" >/dev/null || { echo "load.sh needs $1 (apt-get install -y $2)" >&2; exit 1; }; }
need nginx nginx-light
need wrk wrk
need taskset util-linux

cargo build --release --quiet
BIN=target/release/tidegate
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never answered" >&2; exit 1
}

BACKEND_PORT=$(free_port); TIDEGATE_PORT=$(free_port); ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port)
HOST=hello.bench.localhost

nginx_conf() { # name, body of the server block
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/$1/error.log warn;
pid $WORK/$1/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1; proxy_temp_path $WORK/$1; fastcgi_temp_path $WORK/$1;
  uwsgi_temp_path $WORK/$1; scgi_temp_path $WORK/$1;
  keepalive_requests 1000000;
  $2
}
CONF
}

nginx_conf backend "server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 'hello from backend\n'; } }"
nginx_conf proxy "upstream app { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host; } }"

mkdir -p "$WORK/tidegate/apps"
cat > "$WORK/tidegate/tidegate.toml" <<CONF
[gateway]
http = "127.0.0.1:$TIDEGATE_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
domain = "localhost"
CONF
cat > "$WORK/tidegate/apps/hello.toml" <<CONF
name = "hello"
project = "bench"
runtime = "static"
[static]
upstreams = ["127.0.0.1:$BACKEND_PORT"]
CONF

taskset -c "$LOAD_CPU" nginx -c "$WORK/backend/nginx.conf" & PIDS+=($!)
taskset -c "$PROXY_CPU" nginx -c "$WORK/proxy/nginx.conf" & PIDS+=($!)
RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/tidegate/tidegate.toml" & TIDEGATE_PID=$!; PIDS+=($TIDEGATE_PID)
wait_port "$BACKEND_PORT"; wait_port "$NGINX_PORT"; wait_port "$TIDEGATE_PORT"
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# One wrk run: prints "rps p50_ms p99_ms cpu_us_per_request" (cpu "-" when no proxy).
run() { # port, pid-or-empty
  local before=0 after=0 out
  [ -n "$2" ] && before=$(cpu_ticks "$2")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: $HOST" "http://127.0.0.1:$1/")
  [ -n "$2" ] && after=$(cpu_ticks "$2")
  echo "$out" | awk -v before="$before" -v after="$after" -v tick="$TICK" -v haspid="$2" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /requests in/ { requests = $1 } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { errors = $NF }
    END {
      cpu = haspid == "" ? "-" : sprintf("%.2f", (after - before) / tick * 1e6 / requests)
      if (errors > 0) print "warning: " errors " non-2xx responses" > "/dev/stderr"
      printf "%.0f %.3f %.3f %s\n", rps, p50, p99, cpu
    }'
}

# Warm up every path once (pools, page cache), then measure in turns.
for port in "$BACKEND_PORT" "$TIDEGATE_PORT" "$NGINX_PORT"; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s -H "Host: $HOST" "http://127.0.0.1:$port/" >/dev/null
done
declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  RESULTS[direct]+="$(run "$BACKEND_PORT" "")"$'\n'
  RESULTS[tidegate]+="$(run "$TIDEGATE_PORT" "$TIDEGATE_PID")"$'\n'
  RESULTS[nginx]+="$(run "$NGINX_PORT" "$NGINX_WORKER")"$'\n'
  echo "round $round/$ROUNDS done" >&2
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s' "${RESULTS[$1]}" | awk -v c="$2" 'NF { print $c }' | median; }

echo
echo "load: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, medians; proxy on CPU $PROXY_CPU, wrk + backend on CPU $LOAD_CPU"
printf '%-10s %12s %10s %10s %16s\n' target "requests/s" "p50 ms" "p99 ms" "proxy CPU us/req"
for target in direct tidegate nginx; do
  printf '%-10s %12s %10s %10s %16s\n' "$target" "$(col $target 1)" "$(col $target 2)" "$(col $target 3)" "$(col $target 4)"
done
awk -v t="$(col tidegate 1)" -v d="$(col direct 1)" -v n="$(col nginx 1)" -v tc="$(col tidegate 4)" -v nc="$(col nginx 4)" 'BEGIN {
  printf "\nratios: tidegate/direct requests/s %.2f, tidegate/nginx requests/s %.2f, tidegate/nginx CPU per request %.2f\n", t / d, t / n, tc / nc }'
