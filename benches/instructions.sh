#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same requests through tidegate
# and through nginx (HTTP/1.1, h2c, h2 over TLS), and the two HTTP/2 servers alone (the
# "floor" rows: tidegate's demo app, a plain hyper server answering from memory, and nginx
# `return 200`).
#
#   benches/instructions.sh               # REQUESTS=20000 per target
#   ONLY='h2c' benches/instructions.sh    # only the targets whose name matches the regex
#   BIN=/tmp/tidegate-old benches/instructions.sh
#   KEEP=1 benches/instructions.sh        # keep the callgrind files, for callgrind_annotate
#
# Why instructions: on this kind of machine CPU time per request drifts by 10% between
# minutes (BENCHMARKS.md), so small changes drown in it; the instruction count of a process
# for the same requests is the same from run to run (to a few tenths of a percent). It counts
# user space only: the kernel's share (system calls, TCP) is measured by load.sh's CPU times.
#
# Each server runs alone under callgrind on CPU 1 (nginx with one process: master_process
# off); the backend (nginx `return 200`) and h2load run on CPU 0. A target gets 2,000
# requests to warm up (connections, pools, HPACK tables), then its counters are zeroed, then
# REQUESTS requests are counted: h2load -c8 -m4 for HTTP/2 (as load.sh), -c32 -m1 for
# HTTP/1.1 (as wrk -c32). For tidegate's h2c row the share spent in its own request handler
# (`Proxy::handle`, everything but the HTTP/2 server and the runtime) is printed as well.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-20000}
ONLY=${ONLY:-}
. benches/common.sh
need valgrind valgrind
need callgrind_control valgrind
need nginx nginx-light
need h2load nghttp2-client
need taskset util-linux

bench_binary
bench_workdir

answers() { # url [curl args]: one request answered
  curl -s -o /dev/null -k -H "Host: $HOST" "${@:2}" "$1"
}
BACKEND_PORT=$(free_port); TIDEGATE_PORT=$(free_port); TIDEGATE_TLS_PORT=$(free_port)
ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port); NGINX_H2C_PORT=$(free_port)
NGINX_H2_PORT=$(free_port); NGINX_FLOOR_PORT=$(free_port); DEMO_PORT=$(free_port)

nginx_conf backend "server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 'hello from backend\n'; } }"
tidegate_conf "$TIDEGATE_PORT" "$TIDEGATE_TLS_PORT" "$ADMIN_PORT" "$BACKEND_PORT"
nginx_conf proxy "upstream app { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_H2C_PORT http2; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_H2_PORT ssl http2; ssl_certificate $CERT; ssl_certificate_key $KEY;
           ssl_protocols TLSv1.2 TLSv1.3; $PROXY_LOCATION }
  server { listen 127.0.0.1:$NGINX_FLOOR_PORT http2; location / { return 200 'hello from nginx\n'; } }" "master_process off;"

taskset -c 0 nginx -c "$WORK/backend/nginx.conf" & PIDS+=($!)
for _ in $(seq 1 100); do answers "http://127.0.0.1:$BACKEND_PORT/" && break; sleep 0.05; done

# Not through env(1): valgrind would count env, not what it runs.
export RUST_LOG=warn,rustls=error
TIDEGATE=("$BIN" serve --config "$WORK/tidegate/tidegate.toml")
NGINX=(nginx -c "$WORK/proxy/nginx.conf")
DEMO=("$BIN" demo-app --port "$DEMO_PORT")

# name|url|h2load protocol (h1, h2)|what to run
TARGETS=(
  "tidegate-http|http://127.0.0.1:$TIDEGATE_PORT/|h1|TIDEGATE"
  "nginx-http|http://127.0.0.1:$NGINX_PORT/|h1|NGINX"
  "tidegate-h2c|http://127.0.0.1:$TIDEGATE_PORT/|h2|TIDEGATE"
  "nginx-h2c|http://127.0.0.1:$NGINX_H2C_PORT/|h2|NGINX"
  "tidegate-h2|https://127.0.0.1:$TIDEGATE_TLS_PORT/|h2|TIDEGATE"
  "nginx-h2|https://127.0.0.1:$NGINX_H2_PORT/|h2|NGINX"
  "hyper-h2c-floor|http://127.0.0.1:$DEMO_PORT/|h2|DEMO"
  "nginx-h2c-floor|http://127.0.0.1:$NGINX_FLOOR_PORT/|h2|NGINX"
)

load() { # url protocol requests
  local args=(-t1 -c8 -m4)
  [ "$2" = h1 ] && args=(--h1 -t1 -c32 -m1)
  taskset -c 0 h2load "${args[@]}" -n "$3" -H ":authority: $HOST" "$1" | awk '
    /^requests:/ { done = $8; failed = $10 } /^status codes:/ { ok = $3 }
    END { if (done == 0 || failed > 0 || ok < done) { print "h2load: " done " done, " failed " failed, " ok " 2xx" > "/dev/stderr"; exit 1 } }'
}

declare -A RESULT
for target in "${TARGETS[@]}"; do
  IFS='|' read -r name url protocol what <<<"$target"
  if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then continue; fi
  declare -n command=$what
  out="$WORK/callgrind.$name"
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out.%p" "${command[@]}" \
    >"$WORK/$name.log" 2>&1 &
  pid=$!
  curl_args=(); [ "$protocol" = h2 ] && [[ "$url" == http:* ]] && curl_args=(--http2-prior-knowledge)
  for _ in $(seq 1 600); do answers "$url" "${curl_args[@]}" && break; sleep 0.1; done
  load "$url" "$protocol" 2000
  callgrind_control -z "$pid" >/dev/null 2>&1
  load "$url" "$protocol" "$REQUESTS"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  dump=$(ls "$out".*.1)
  total=$(awk '/^summary:/ { print $2 }' "$dump")
  RESULT[$name]=$((total / REQUESTS))
  line="$(printf '%-17s %9s instructions/request' "$name" "${RESULT[$name]}")"
  if [ "$name" = tidegate-h2c ]; then
    # From /: run inside the checkout, callgrind_annotate splits the function by source file.
    handler=$(cd / && callgrind_annotate --inclusive=yes "$dump" 2>/dev/null \
      | awk 'index($0, "src/proxy/mod.rs:tidegate::proxy::Proxy::handle::{{closure}} [") && !found {
          gsub(",", "", $1); print $1; found = 1 }')
    line+="  (in tidegate's handler: ${handler:+$((handler / REQUESTS))})"
  fi
  echo "$line"
done

ratio() { awk -v a="${RESULT[$1]:-}" -v b="${RESULT[$2]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
echo
echo "ratios (instructions per request):"
for pair in "tidegate-http nginx-http" "tidegate-h2c nginx-h2c" "tidegate-h2 nginx-h2" "hyper-h2c-floor nginx-h2c-floor"; do
  set -- $pair
  [ -z "${RESULT[$1]:-}" ] || [ -z "${RESULT[$2]:-}" ] && continue
  printf '  %-17s vs %-17s %s\n' "$1" "$2" "$(ratio "$1" "$2")"
done
