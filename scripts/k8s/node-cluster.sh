#!/usr/bin/env bash
# A throwaway one-node Kubernetes cluster that runs pods, for tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd 2 and a kubelet, on loopback ports the
# caller picks, with pod networking from Debian's CNI plugins on a bridge of our own.
#
#   node-cluster.sh start  DIR [OWNER_PID]   start everything, wait for Node Ready + default SA
#   node-cluster.sh import DIR TAR…          import OCI image archives into the node's containerd
#   node-cluster.sh stop   DIR               tear down and restore the host (safe to repeat)
#
# Ports (env, all required for start): ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT
#   SCHEDULER_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT.
# Network (env, defaults): POD_CIDR_PREFIX=10.98.0 (pods get <prefix>.2-254/24, the host is
#   <prefix>.1 on the bridge), SERVICE_CIDR=10.97.0.0/24, BRIDGE=fissionrs0.
# The API server listens on <prefix>.1 (not loopback) and publishes it as the `kubernetes`
#   Service's endpoint, so pods reach it in-cluster (KUBERNETES_SERVICE_HOST, through
#   kube-proxy) as on any cluster; the bridge address is local to this machine and its pods.
# Services (env): kube-proxy runs in nftables mode unless WITH_KUBE_PROXY=0, so ClusterIP
#   Services work from pods and from the host, and NodePorts answer on <prefix>.1 (the host's
#   bridge address; nftables mode has no NodePorts on 127.0.0.1). Its ports:
#   KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT (required with it). Binary: K8S_PROXY_BIN
#   (else scripts/k8s/build-kube-proxy.sh). There is no cluster DNS: pods find Services through
#   the <NAME>_SERVICE_HOST/_PORT variables Kubernetes gives every container.
# Binaries: K8S_BIN (etcd, kube-apiserver, kubectl; else scripts/k8s/build-binaries.sh) and
#   K8S_NODE_BIN (kubelet, containerd, …; else scripts/k8s/build-node-binaries.sh).
#   runc and the CNI plugins come from Debian (apt: runc containernetworking-plugins).
#
# A kubelet writes a few host-global paths (/var/lib/kubelet/device-plugins, the kubepods
# cgroups, some sysctls), so one node runs on a machine at a time: start waits for a node of
# another test run to stop. Everything is stopped by the PIDs written here, never by name; with
# OWNER_PID a watchdog tears the node down once that process has exited.
# Recipe and the reasons for each setting: the project's k8s-node notes (verified here).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:-}; DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|import|stop DIR …" >&2; exit 2; }
case $DIR in /*) ;; *) echo "Error: DIR must be absolute (containerd needs absolute socket paths)" >&2; exit 2;; esac
P=$DIR/pki; R=$DIR/run
BRIDGE=${BRIDGE:-fissionrs0}
POD_CIDR_PREFIX=${POD_CIDR_PREFIX:-10.98.0}
SERVICE_CIDR=${SERVICE_CIDR:-10.97.0.0/24}
LOCK=/run/fission-rs-k8s-node.lock
OWNER_FILE=/run/fission-rs-k8s-node.dir
KSYS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

log() { echo "node-cluster: $*" >&2; }
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; }  # zombies count as dead
stop_one() { # stop_one NAME: SIGTERM, up to 20 s, then SIGKILL
  local f=$R/$1.pid pid; [ -f "$f" ] || return 0; pid=$(cat "$f")
  if alive "$pid"; then kill "$pid" 2>/dev/null
    for _ in $(seq 200); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null; fi
  rm -f "$f"; return 0; }
wait_for() { # wait_for NAME SECONDS CMD…: until CMD succeeds; fail fast when NAME died
  local name=$1 secs=$2 pid; shift 2; pid=$(cat "$R/$name.pid")
  for _ in $(seq $((secs * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    alive "$pid" || { log "Error: $name exited during start-up; last log lines:"; tail -n 20 "$DIR/logs/$name.log" >&2; return 1; }
    sleep 0.1
  done
  log "Error: $name not ready after $secs s ($*); see $DIR/logs/$name.log"; return 1; }
daemon() { # daemon NAME CMD…: start detached, PID in $R/NAME.pid
  local name=$1; shift
  setsid "$@" > "$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$R/$name.pid"; }

gen_certs() {
  mkdir -p "$P"; (
  cd "$P"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=fission-rs-test-node-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  sign() { openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"; }
  client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  svc_ip=${SERVICE_CIDR%.*}.1
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$POD_CIDR_PREFIX.1,IP:$svc_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=kubernetes-admin" "$client"
  sign controller-manager "/CN=system:kube-controller-manager" "$client"
  sign scheduler "/CN=system:kube-scheduler" "$client"
  # The node identity the Node authorizer and NodeRestriction apply to.
  sign kubelet "/O=system:nodes/CN=system:node:$NODE" "$client"
  # What the API server presents to the kubelet for logs, exec and port-forward.
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  # kube-proxy's identity (RBAC's default system:node-proxier binding names this user).
  sign kube-proxy "/CN=system:kube-proxy" "$client"
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  chmod 600 ./*.key )
}

kubeconfig() { # kubeconfig NAME
  cat > "$DIR/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://$POD_CIDR_PREFIX.1:$APISERVER_PORT", certificate-authority-data: $(base64 -w0 < "$P/ca.crt")}
users:
- name: $1
  user: {client-certificate-data: $(base64 -w0 < "$P/$1.crt"), client-key-data: $(base64 -w0 < "$P/$1.key")}
contexts:
- name: local
  context: {cluster: local, user: $1, namespace: default}
current-context: local
KC
}

write_configs() {
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/cni/ipam"
  cat > "$DIR/containerd/config.toml" <<TOML
version = 4
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = "$R/containerd.sock"
  [plugins.'io.containerd.server.v1.ttrpc']
    address = "$R/containerd.sock.ttrpc"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "localhost/pause:fission-rs"
  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj; containerd then clamps it.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$DIR/cni/net.d"
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$RUNC"
          Root = "$DIR/containerd/runc-root"
          SystemdCgroup = false
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [plugins.'io.containerd.internal.v1.opt']
    path = "$DIR/containerd/opt"
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
TOML
  cat > "$DIR/cni/net.d/10-fission-rs.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "fission-rs",
 "plugins": [{"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR_PREFIX.0/24", "gateway": "$POD_CIDR_PREFIX.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat > "$DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$R/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $DIR/kubelet/pod-logs
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
  # conntrack zeros: leave the host's conntrack sysctls as they are.
  cat > "$DIR/kube-proxy-config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR_PREFIX.0/24
healthzBindAddress: 127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT:-0}
metricsBindAddress: 127.0.0.1:${KUBE_PROXY_METRICS_PORT:-0}
nodePortAddresses: ["$POD_CIDR_PREFIX.1/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

import_images() {
  local tar
  for tar in "$@"; do
    "$NBIN/ctr" --address "$R/containerd.sock" -n k8s.io images import "$tar" >/dev/null \
      || { log "Error: cannot import $tar"; return 1; }
  done
}

# Acquire the machine's one node slot: wait while another live node holds it.
claim_slot() {
  exec 8>"$LOCK"
  local other busy cleanup_wait=0
  for _ in $(seq 600); do
    flock 8
    other=$(cat "$OWNER_FILE" 2>/dev/null || true); busy=0
    if [ -n "$other" ] && [ "$other" != "$DIR" ]; then
      # Busy while the other node runs, and while its stop still undoes host changes (the
      # bridge, mounts, sysctls) after its daemons are gone: a node must not start on a bridge
      # about to be deleted. A stop that died leaves a marker naming a dead PID; a stop of a
      # script without the marker is waited for through its bridge marker, for at most 60 s.
      if [ -f "$other/run/kubelet.pid" ] || [ -f "$other/run/containerd.pid" ] || [ -f "$other/run/kube-apiserver.pid" ]; then busy=1
      elif [ -f "$other/run/stopping" ] && alive "$(cat "$other/run/stopping" 2>/dev/null || echo 0)"; then busy=1
      elif [ -f "$other/run/bridge-created" ] && [ $((cleanup_wait += 1)) -le 60 ]; then busy=1
      fi
    fi
    if [ $busy = 0 ]; then echo "$DIR" > "$OWNER_FILE"; flock -u 8; return 0; fi
    flock -u 8; sleep 1
  done
  log "Error: another test node ($other) has held this machine's node slot for 10 minutes"; return 1
}

case $cmd in
start)
  owner=${3:-}
  WITH_KUBE_PROXY=${WITH_KUBE_PROXY:-1}
  ports="ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT"
  [ "$WITH_KUBE_PROXY" = 1 ] && ports="$ports KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT"
  for v in $ports; do
    [ -n "${!v:-}" ] || { log "Error: $v is not set"; exit 2; }
  done
  [ "$(id -u)" = 0 ] || { log "Error: a kubelet needs root"; exit 1; }
  for t in openssl curl base64 ip; do command -v "$t" >/dev/null || { log "Error: $t is not installed"; exit 1; }; done
  RUNC=$(command -v runc || true)
  [ -n "$RUNC" ] || { log "Error: runc is not installed (apt-get install runc)"; exit 1; }
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || { log "Error: the CNI plugins are not installed (apt-get install containernetworking-plugins)"; exit 1; }
  KBIN=${K8S_BIN:-$("$HERE/build-binaries.sh" | tail -n1)}
  NBIN=${K8S_NODE_BIN:-$("$HERE/build-node-binaries.sh" | tail -n1)}
  if [ "$WITH_KUBE_PROXY" = 1 ]; then
    command -v nft >/dev/null || { log "Error: nft is not installed (apt-get install nftables; kube-proxy's nftables mode)"; exit 1; }
    PBIN=${K8S_PROXY_BIN:-$("$HERE/build-kube-proxy.sh" | tail -n1)}
  fi
  NODE=$(hostname | tr 'A-Z' 'a-z')
  mkdir -p "$R" "$DIR/logs" "$DIR/kubelet"
  echo "$KBIN" > "$DIR/bin-dir"; echo "$NBIN" > "$DIR/node-bin-dir"; echo "$NODE" > "$DIR/node-name"
  echo "$BRIDGE" > "$DIR/bridge"
  claim_slot
  t0=$(date +%s.%N)
  # A failed start leaves nothing behind.
  trap '"$HERE/node-cluster.sh" stop "$DIR" >/dev/null 2>&1' EXIT
  # Host paths the kubelet, libcni, the shim and mount(8) hard-code: removed at stop if new.
  : > "$R/host-dirs-created"
  for d in /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd /run/mount; do
    [ -e "$d" ] || echo "$d" >> "$R/host-dirs-created"; done
  ls -d /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods >/dev/null 2>&1 || echo kubepods > "$R/cgroups-created"
  # The kubelet rewrites these at start (protectKernelDefaults=false); stop restores them.
  [ -f "$R/sysctl-saved" ] || sysctl $KSYS | sed 's/ = /=/' > "$R/sysctl-saved"
  [ -f "$P/admin.crt" ] || gen_certs
  for n in admin controller-manager scheduler kubelet kube-proxy; do kubeconfig $n; done
  write_configs
  # The bridge exists before the first pod with the host's address on it, so a server can
  # listen on <prefix>.1 for pods (the CNI bridge plugin adopts an existing bridge + gateway).
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge && echo created > "$R/bridge-created"
  fi
  ip addr replace "$POD_CIDR_PREFIX.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  daemon etcd "$KBIN/etcd" --name=node --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="node=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls="http://127.0.0.1:0" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
  daemon kube-apiserver "$KBIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$POD_CIDR_PREFIX.1" --advertise-address="$POD_CIDR_PREFIX.1" --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --allow-privileged=true
  wait_for kube-apiserver 120 curl -fsS --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "https://$POD_CIDR_PREFIX.1:$APISERVER_PORT/readyz"
  KC=$DIR/controller-manager.kubeconfig
  daemon kube-controller-manager "$NBIN/kube-controller-manager" \
    --kubeconfig="$KC" --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --use-service-account-credentials=true --controllers='*'
  KS=$DIR/scheduler.kubeconfig
  daemon kube-scheduler "$NBIN/kube-scheduler" \
    --kubeconfig="$KS" --authentication-kubeconfig="$KS" --authorization-kubeconfig="$KS" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false
  wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  # containerd finds its shim on PATH: ours first.
  PATH="$NBIN:$PATH" daemon containerd "$NBIN/containerd" --config "$DIR/containerd/config.toml"
  wait_for containerd 30 "$NBIN/ctr" --address "$R/containerd.sock" version
  import_images "${NODE_IMAGES_DIR:-$DIR/images}"/*.oci.tar
  daemon kubelet "$NBIN/kubelet" --config="$DIR/kubelet-config.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet/pki" --v=1
  K=("$KBIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig")
  node_ready() { [ "$("${K[@]}" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
  wait_for kubelet 120 node_ready
  if [ "$WITH_KUBE_PROXY" = 1 ]; then
    # Its tables (ip/ip6 kube-proxy) are removed at stop: kube-proxy leaves them behind.
    echo started > "$R/kube-proxy-started"
    daemon kube-proxy "$PBIN/kube-proxy" --config="$DIR/kube-proxy-config.yaml" --v=1
    wait_for kube-proxy 60 curl -fsS "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
  fi
  # Pods are refused until the ServiceAccount controller made the default account.
  wait_for kube-controller-manager 60 "${K[@]}" get serviceaccount default
  trap - EXIT
  if [ -n "$owner" ]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3"; rm -rf "$3"' \
      watchdog "$owner" "$HERE/node-cluster.sh" "$DIR" </dev/null >/dev/null 2>&1 &
  fi
  awk -v a="$t0" -v b="$(date +%s.%N)" -v p="$APISERVER_PORT" -v n="$NODE" -v h="$POD_CIDR_PREFIX.1" 'BEGIN {
    printf "node-cluster: node %s Ready, API server https://%s:%s, in %.1f s\n", n, h, p, b-a }' >&2
  ;;
import)
  shift 2; NBIN=$(cat "$DIR/node-bin-dir"); import_images "$@"
  ;;
stop)
  [ -d "$R" ] || exit 0
  echo $$ > "$R/stopping"
  KBIN=$(cat "$DIR/bin-dir" 2>/dev/null || true); NBIN=$(cat "$DIR/node-bin-dir" 2>/dev/null || true)
  BRIDGE=$(cat "$DIR/bridge" 2>/dev/null || echo "$BRIDGE")
  # 1. pods deleted through the API while the kubelet runs (CNI DEL and unmounts happen here)
  if [ -f "$R/kubelet.pid" ] && [ -n "$KBIN" ]; then
    K=("$KBIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=10s)
    "${K[@]}" delete deployments,replicasets,services --all -A --timeout=30s >/dev/null 2>&1 || true
    "${K[@]}" delete pods --all -A --grace-period=1 --timeout=30s >/dev/null 2>&1 || true
  fi
  stop_one kube-proxy
  if [ -f "$R/kube-proxy-started" ]; then
    nft delete table ip kube-proxy 2>/dev/null || true; nft delete table ip6 kube-proxy 2>/dev/null || true
    rm -f "$R/kube-proxy-started"; fi
  stop_one kubelet
  [ -S "$R/containerd.sock" ] && [ -n "$NBIN" ] && "$NBIN/crictl" -r "unix://$R/containerd.sock" rmp -fa >/dev/null 2>&1 || true
  stop_one containerd
  # 2. shims of this containerd (their command line names our socket), by PID
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$c" in *containerd-shim-runc-v2*"$R/containerd.sock"*) kill -9 "${p#/proc/}" 2>/dev/null || true;; esac
  done
  stop_one kube-scheduler; stop_one kube-controller-manager; stop_one kube-apiserver; stop_one etcd
  [ -f "$R/sysctl-saved" ] && sysctl -q -w $(cat "$R/sysctl-saved") && rm -f "$R/sysctl-saved"
  grep -F " $DIR/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  if [ -f "$R/bridge-created" ]; then ip link del "$BRIDGE" 2>/dev/null || true; rm -f "$R/bridge-created"; fi
  if [ -f "$R/host-dirs-created" ]; then
    while read -r d; do [ -e "$d" ] && rm -rf "$d"; done < "$R/host-dirs-created"; rm -f "$R/host-dirs-created"; fi
  if [ -f "$R/cgroups-created" ]; then
    for h in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null; done
    rm -f "$R/cgroups-created"; fi
  exec 8>"$LOCK"; flock 8
  [ "$(cat "$OWNER_FILE" 2>/dev/null)" = "$DIR" ] && rm -f "$OWNER_FILE"
  rm -f "$R/stopping"
  exit 0
  ;;
*) echo "usage: $0 start|import|stop DIR …" >&2; exit 2 ;;
esac
