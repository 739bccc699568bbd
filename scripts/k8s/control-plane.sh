#!/usr/bin/env bash
# A throwaway Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests.
#
#   control-plane.sh start   DIR ETCD_PORT ETCD_PEER_PORT APISERVER_PORT [OWNER_PID]
#   control-plane.sh stop    DIR
#   control-plane.sh restart-apiserver DIR   (stop and start kube-apiserver only; etcd keeps its data)
#
# start generates certificates (openssl) under DIR/pki, starts both processes (PIDs in
# DIR/*.pid, logs in DIR/logs), waits until /readyz answers and writes DIR/admin.kubeconfig.
# Binaries come from K8S_BIN, or from build-binaries.sh (a cache hit costs seconds).
# Everything is stopped by the PIDs written here, never by name. With OWNER_PID, a watchdog
# stops the control plane and removes DIR once that process has exited (a test binary that
# shares one cluster between its tests cannot run code at exit).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:-}; DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop|restart-apiserver DIR [ETCD_PORT ETCD_PEER_PORT APISERVER_PORT]" >&2; exit 2; }
P=$DIR/pki

bin_dir() {
  if [ -n "${K8S_BIN:-}" ]; then echo "$K8S_BIN"; else "$HERE/build-binaries.sh" | tail -n1; fi
}

gen_certs() {
  mkdir -p "$P"
  (
    cd "$P"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=test-kubernetes-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    sign() { # sign NAME SUBJECT EXTENSIONS [CA]
      local ca=${4:-ca}
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 365 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    # 10.0.0.1 is the first address of --service-cluster-ip-range.
    sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # O=system:masters: the default RBAC bindings make this user cluster-admin.
    sign admin "/O=system:masters/CN=kubernetes-admin" "$client"
    # The aggregation layer's CA; without it components log a missing CA bundle every minute.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 \
      -subj "/CN=test-front-proxy-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    sign front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
}

write_kubeconfig() { # NAME SERVER
  local b64ca b64crt b64key
  b64ca=$(base64 -w0 < "$P/ca.crt"); b64crt=$(base64 -w0 < "$P/$1.crt"); b64key=$(base64 -w0 < "$P/$1.key")
  cat > "$DIR/$1.kubeconfig.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$2", certificate-authority-data: $b64ca}
users:
- name: $1
  user: {client-certificate-data: $b64crt, client-key-data: $b64key}
contexts:
- name: local
  context: {cluster: local, user: $1, namespace: default}
current-context: local
KC
  mv "$DIR/$1.kubeconfig.tmp" "$DIR/$1.kubeconfig"
}

# wait_for NAME URL [curl args…]: poll until URL answers 2xx; fail fast if the process died.
wait_for() {
  local name=$1 url=$2; shift 2
  local pid; pid=$(cat "$DIR/$name.pid")
  for _ in $(seq 600); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "Error: $name exited during start-up; last log lines:" >&2
      tail -n 20 "$DIR/logs/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "Error: $name did not become ready in 60 s at $url; see $DIR/logs/$name.log" >&2
  return 1
}

start_apiserver() {
  local bin port etcd_port
  bin=$(cat "$DIR/bin-dir"); port=$(cat "$DIR/apiserver-port"); etcd_port=$(cat "$DIR/etcd-port")
  "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
    --client-ca-file="$P/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" \
    --service-account-signing-key-file="$P/sa.key" \
    --allow-privileged=true \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
    >> "$DIR/logs/kube-apiserver.log" 2>&1 &
  echo $! > "$DIR/kube-apiserver.pid"
  wait_for kube-apiserver "https://127.0.0.1:$port/readyz" \
    --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key"
}

stop_one() { # NAME
  local f=$DIR/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  rm -f "$f"
}

case $cmd in
start)
  [ $# -eq 5 ] || [ $# -eq 6 ] || { echo "usage: $0 start DIR ETCD_PORT ETCD_PEER_PORT APISERVER_PORT [OWNER_PID]" >&2; exit 2; }
  etcd_port=$3; peer_port=$4; api_port=$5; owner=${6:-}
  for t in openssl curl base64; do
    command -v "$t" >/dev/null || { echo "Error: $t is not installed" >&2; exit 1; }
  done
  t0=$(date +%s.%N)
  mkdir -p "$DIR/logs"
  bin=$(bin_dir)
  for b in etcd kube-apiserver kubectl; do
    [ -x "$bin/$b" ] || { echo "Error: $bin/$b is missing; run scripts/k8s/build-binaries.sh" >&2; exit 1; }
  done
  echo "$bin" > "$DIR/bin-dir"; echo "$etcd_port" > "$DIR/etcd-port"; echo "$api_port" > "$DIR/apiserver-port"
  t1=$(date +%s.%N)
  # A failed start leaves nothing running.
  trap 'stop_one kube-apiserver; stop_one etcd' EXIT
  [ -f "$P/admin.crt" ] || gen_certs
  "$bin/etcd" --name=test --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="test=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync=true --log-level=warn >> "$DIR/logs/etcd.log" 2>&1 &
  echo $! > "$DIR/etcd.pid"
  wait_for etcd "http://127.0.0.1:$etcd_port/health"
  write_kubeconfig admin "https://127.0.0.1:$api_port"
  start_apiserver
  t2=$(date +%s.%N)
  trap - EXIT
  if [ -n "$owner" ]; then
    # Detached from our stdout/stderr so whoever waits for this script is not held up.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3"; rm -rf "$3"' \
      watchdog "$owner" "$HERE/control-plane.sh" "$DIR" </dev/null >/dev/null 2>&1 &
  fi
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v p="$api_port" 'BEGIN {
    printf "control plane ready at https://127.0.0.1:%s in %.1f s (finding binaries %.1f s, certs+etcd+apiserver %.1f s)\n", p, c-a, b-a, c-b }' >&2
  ;;
restart-apiserver)
  stop_one kube-apiserver
  start_apiserver
  ;;
stop)
  stop_one kube-apiserver
  stop_one etcd
  ;;
*)
  echo "usage: $0 start|stop|restart-apiserver DIR …" >&2; exit 2 ;;
esac
