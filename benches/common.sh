# Shared by the shell benches (load.sh, instructions.sh); sourced, not run. Expects $WORK (a
# temporary directory) and $BIN (the tidegate binary) once the setup functions are called.

HOST=hello.bench.localhost

need() { # command, Debian package
  command -v "$1" >/dev/null || { echo "$(basename "$0") needs $1 (apt-get install -y $2)" >&2; exit 1; }
}

# The release build of this checkout, unless BIN names another build (an earlier commit's).
bench_binary() {
  if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/tidegate
  fi
}

# $WORK, a temporary directory removed at exit (kept with KEEP=1) after the processes in
# PIDS are stopped.
bench_workdir() {
  WORK=$(mktemp -d)
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# An nginx configuration in $WORK/NAME/nginx.conf: one worker, no access log unless a server
# block asks for one, keep-alive without a request limit.
nginx_conf() { # name, body of the http block, extra main directives
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
${3:-}
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

# The proxied location of every nginx proxy row: HTTP/1.1 keep-alive to the `app` upstream.
PROXY_LOCATION="location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$host; }"

# tidegate's configuration in $WORK/tidegate: the app `hello` (static, one upstream) and a
# development certificate; sets CERT and KEY, which nginx's TLS rows use too.
tidegate_conf() { # http port, https port, admin port, backend port
  mkdir -p "$WORK/tidegate/apps"
  cat > "$WORK/tidegate/tidegate.toml" <<CONF
[gateway]
http = "127.0.0.1:$1"
https = "127.0.0.1:$2"
admin = "127.0.0.1:$3"
domain = "localhost"

[tls]
certs_dir = "certs"
default_cert = "localhost"
CONF
  cat > "$WORK/tidegate/apps/hello.toml" <<CONF
name = "hello"
project = "bench"
runtime = "static"
[static]
upstreams = ["127.0.0.1:$4"]
CONF
  "$BIN" certs dev --config "$WORK/tidegate/tidegate.toml" >/dev/null
  CERT="$WORK/tidegate/certs/dev.crt"; KEY="$WORK/tidegate/certs/dev.key"
}
