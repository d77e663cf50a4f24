#!/usr/bin/env bash
# Installs what the project needs, only what is missing: Debian packages and
# the npm packages of package-lock.json. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  wabt cmake make gcc g++ pkg-config gcc-mingw-w64-x86-64 wine64 golang-go python3
  libnetfilter-queue-dev libmnl-dev iptables iproute2 valgrind curl mono-devel
  clang libclang-rt-14-dev procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      echo "setup: need root to install ${missing[*]} (run as root, or install them)" >&2
      exit 1
    fi
  else
    SUDO=""
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
