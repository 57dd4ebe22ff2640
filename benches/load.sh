#!/usr/bin/env bash
# Load bench: the same fixed load against (a) the backend directly, (b) tidegate and (c) nginx
# as an equally configured reverse proxy, in one run, several rounds each, medians reported.
#
#   benches/load.sh                 # 3 rounds of 10 s, 32 connections
#   ROUNDS=5 DURATION=20 CONNECTIONS=64 benches/load.sh
#   ONLY='h2' benches/load.sh       # only the targets whose name matches the regex
#   BIN=/tmp/tidegate-old benches/load.sh   # another build of tidegate (default: build this one)
#
# Fairness (see BENCHMARKS.md): the backend is nginx `return 200` with 1 worker and no access
# log; wrk (1 thread) and the backend share CPU 0; the proxy under test runs alone on CPU 1
# (tidegate then runs one tokio worker). nginx as proxy: 1 worker, upstream keepalive,
# HTTP/1.1 upstream, no access log. tidegate: access log off (RUST_LOG=warn), as nginx's.
# The "floor" rows measure the HTTP/2 servers alone, with no proxying: hyper's (tidegate's own
# demo app, the same hyper server and settings family, answering from memory) and nginx's
# (`return 200`), both over h2c on the proxy CPU: what the h2 server costs per request before
# any proxy work, so the h2 rows' gap can be split into server and proxy.
# The "-log" rows turn both access logs on, as operators run them: nginx's default
# `access_log` (combined format) to a file, unbuffered; tidegate's default text line to a file
# of its own (`access_log = "access.log"`); each in a second proxy process (or server block)
# on the same CPU.
# The figure that separates proxies is proxy CPU time per request: (utime + stime of the proxy
# process over the run, from /proc/PID/stat) / requests.
# HTTP/2 rows (h2 over TLS with ALPN, h2c with prior knowledge) use h2load with
# H2_CLIENTS connections of H2_STREAMS concurrent streams each (default 8 x 4: the same 32
# requests in flight as wrk's 32 connections); h2load reports no percentiles, so their p50 and
# p99 columns show "-". Upstream is HTTP/1.1 keep-alive for both proxies, as for the others.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}

. benches/common.sh
need nginx nginx-light
need wrk wrk
need taskset util-linux
need h2load nghttp2-client
H2_CLIENTS=${H2_CLIENTS:-8}
H2_STREAMS=${H2_STREAMS:-4}

# BIN=path compares another tidegate build (an earlier commit's, say) on the same setup.
bench_binary
bench_workdir

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never answered" >&2; exit 1
}

BACKEND_PORT=$(free_port); TIDEGATE_PORT=$(free_port); ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port)
TIDEGATE_TLS_PORT=$(free_port); NGINX_TLS_PORT=$(free_port)
NGINX_H2C_PORT=$(free_port); NGINX_H2_PORT=$(free_port)
TIDEGATE_LOG_PORT=$(free_port); ADMIN_LOG_PORT=$(free_port); NGINX_LOG_PORT=$(free_port)
DEMO_PORT=$(free_port); NGINX_FLOOR_PORT=$(free_port)

nginx_conf backend "server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 'hello from backend\n'; } }"
# One certificate for both TLS servers: tidegate's development certificate (ECDSA P-256).
tidegate_conf "$TIDEGATE_PORT" "$TIDEGATE_TLS_PORT" "$ADMIN_PORT" "$BACKEND_PORT"
cat > "$WORK/tidegate/tidegate-log.toml" <<CONF
[gateway]
http = "127.0.0.1:$TIDEGATE_LOG_PORT"
admin = "127.0.0.1:$ADMIN_LOG_PORT"
domain = "localhost"
access_log = "access.log"
CONF
nginx_conf proxy "upstream app { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_TLS_PORT ssl; ssl_certificate $CERT; ssl_certificate_key $KEY;
           ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_H2C_PORT http2; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_LOG_PORT; access_log $WORK/proxy/access.log; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_FLOOR_PORT http2; location / { return 200 'hello from nginx\n'; } }
  server { listen 127.0.0.1:$NGINX_H2_PORT ssl http2; ssl_certificate $CERT; ssl_certificate_key $KEY;
           ssl_protocols TLSv1.2 TLSv1.3; $PROXY_LOCATION }"

taskset -c "$LOAD_CPU" nginx -c "$WORK/backend/nginx.conf" & PIDS+=($!)
taskset -c "$PROXY_CPU" nginx -c "$WORK/proxy/nginx.conf" & PIDS+=($!)
RUST_LOG=warn,rustls=error taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/tidegate/tidegate.toml" & TIDEGATE_PID=$!; PIDS+=($TIDEGATE_PID)
RUST_LOG=warn,rustls=error taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/tidegate/tidegate-log.toml" & TIDEGATE_LOG_PID=$!; PIDS+=($TIDEGATE_LOG_PID)
RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN" demo-app --port "$DEMO_PORT" & DEMO_PID=$!; PIDS+=($DEMO_PID)
wait_port "$BACKEND_PORT"; wait_port "$NGINX_PORT"; wait_port "$TIDEGATE_PORT"
wait_port "$NGINX_TLS_PORT"; wait_port "$TIDEGATE_TLS_PORT"; wait_port "$NGINX_H2C_PORT"; wait_port "$NGINX_H2_PORT"
wait_port "$TIDEGATE_LOG_PORT"; wait_port "$NGINX_LOG_PORT"; wait_port "$DEMO_PORT"; wait_port "$NGINX_FLOOR_PORT"
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# One wrk run: prints "rps p50_ms p99_ms cpu_us_per_request" (cpu "-" when no proxy).
run() { # url, pid-or-empty, extra wrk args...
  local url=$1 pid=$2 before=0 after=0 out
  shift 2
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: $HOST" "$@" "$url")
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  echo "$out" | awk -v before="$before" -v after="$after" -v tick="$TICK" -v haspid="$pid" '
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

# One h2load run, printed like `run` (no percentiles: "-").
run_h2() { # url, pid
  local url=$1 pid=$2 before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$DURATION" \
    -H ":authority: $HOST" "$url")
  after=$(cpu_ticks "$pid")
  echo "$out" | awk -v before="$before" -v after="$after" -v tick="$TICK" '
    /^finished in/ { rps = $4 }
    /^requests:/ { done = $8; failed = $10 }
    /^status codes:/ { ok = $3 }
    END {
      if (failed > 0 || ok < done) print "warning: " failed " failed, " done - ok " non-2xx" > "/dev/stderr"
      printf "%.0f - - %.2f\n", rps, (after - before) / tick * 1e6 / done
    }'
}

# name|url|pid|extra wrk args ("h2" for an h2load row). "handshake" rows close the connection after every request, so
# every request is a new TCP connection and a full TLS handshake (no session resumption).
TARGETS=(
  "direct|http://127.0.0.1:$BACKEND_PORT/||"
  "tidegate|http://127.0.0.1:$TIDEGATE_PORT/|$TIDEGATE_PID|"
  "nginx|http://127.0.0.1:$NGINX_PORT/|$NGINX_WORKER|"
  "tidegate-log|http://127.0.0.1:$TIDEGATE_LOG_PORT/|$TIDEGATE_LOG_PID|"
  "nginx-log|http://127.0.0.1:$NGINX_LOG_PORT/|$NGINX_WORKER|"
  "tidegate-https|https://127.0.0.1:$TIDEGATE_TLS_PORT/|$TIDEGATE_PID|"
  "nginx-https|https://127.0.0.1:$NGINX_TLS_PORT/|$NGINX_WORKER|"
  "tidegate-handshake|https://127.0.0.1:$TIDEGATE_TLS_PORT/|$TIDEGATE_PID|Connection: close"
  "nginx-handshake|https://127.0.0.1:$NGINX_TLS_PORT/|$NGINX_WORKER|Connection: close"
  "tidegate-h2c|http://127.0.0.1:$TIDEGATE_PORT/|$TIDEGATE_PID|h2"
  "nginx-h2c|http://127.0.0.1:$NGINX_H2C_PORT/|$NGINX_WORKER|h2"
  "tidegate-h2|https://127.0.0.1:$TIDEGATE_TLS_PORT/|$TIDEGATE_PID|h2"
  "nginx-h2|https://127.0.0.1:$NGINX_H2_PORT/|$NGINX_WORKER|h2"
  "hyper-h2c-floor|http://127.0.0.1:$DEMO_PORT/|$DEMO_PID|h2"
  "nginx-h2c-floor|http://127.0.0.1:$NGINX_FLOOR_PORT/|$NGINX_WORKER|h2"
)
ONLY=${ONLY:-}

# Warm up every path once (pools, page cache), then measure in turns.
for target in "${TARGETS[@]}"; do
  IFS='|' read -r name url pid header <<<"$target"
  if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then continue; fi
  if [ "$header" = h2 ]; then
    taskset -c "$LOAD_CPU" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D1 -H ":authority: $HOST" "$url" >/dev/null
  else
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d1s -H "Host: $HOST" "$url" >/dev/null
  fi
done
declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    IFS='|' read -r name url pid header <<<"$target"
    if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then continue; fi
    if [ "$header" = h2 ]; then
      RESULTS[$name]+="$(run_h2 "$url" "$pid")"$'\n'
    elif [ -n "$header" ]; then
      RESULTS[$name]+="$(run "$url" "$pid" -H "$header")"$'\n'
    else
      RESULTS[$name]+="$(run "$url" "$pid")"$'\n'
    fi
  done
  echo "round $round/$ROUNDS done" >&2
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s' "${RESULTS[$1]:-}" | awk -v c="$2" 'NF { print $c }' | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo
echo "load: wrk -t1 -c$CONNECTIONS -d${DURATION}s (h2 rows: h2load -c$H2_CLIENTS -m$H2_STREAMS), $ROUNDS rounds, medians; proxy on CPU $PROXY_CPU, load + backend on CPU $LOAD_CPU"
printf '%-19s %12s %10s %10s %16s\n' target "requests/s" "p50 ms" "p99 ms" "proxy CPU us/req"
for target in "${TARGETS[@]}"; do
  IFS='|' read -r name _ <<<"$target"
  [ -z "${RESULTS[$name]:-}" ] && continue
  printf '%-19s %12s %10s %10s %16s\n' "$name" "$(col "$name" 1)" "$(col "$name" 2)" "$(col "$name" 3)" "$(col "$name" 4)"
done
echo
echo "ratios (tidegate / other):"
for pair in "tidegate direct" "tidegate nginx" "tidegate-log nginx-log" "tidegate-https nginx-https" "tidegate-handshake nginx-handshake" "tidegate-h2c nginx-h2c" "tidegate-h2 nginx-h2" "hyper-h2c-floor nginx-h2c-floor"; do
  set -- $pair
  [ -z "${RESULTS[$1]:-}" ] || [ -z "${RESULTS[$2]:-}" ] && continue
  printf '  %-19s vs %-18s requests/s %s, CPU per request %s\n' "$1" "$2" "$(ratio "$(col "$1" 1)" "$(col "$2" 1)")" "$(ratio "$(col "$1" 4)" "$(col "$2" 4)")"
done
