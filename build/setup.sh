#!/usr/bin/env bash
# Installs what the project needs, only what is missing: Debian packages and
# the npm packages of package-lock.json. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  wabt cmake make gcc g++ pkg-config gcc-mingw-w64-x86-64 wine64 python3
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

# Go 1.22 or newer (Debian 12's golang-go is 1.19: too old, and it must not
# shadow a newer Go). The official toolchain lives in /usr/local/go.
[ -x /usr/local/go/bin/go ] && case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) export PATH="/usr/local/go/bin:$PATH" ;; esac
gover=$(go env GOVERSION 2>/dev/null || true)
case "$gover" in
  go1.2[2-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
  *)
    echo "setup: needs Go 1.22 or newer on PATH (found: ${gover:-none}); install it from the official Go downloads into /usr/local/go" >&2
    exit 1
    ;;
esac

# The Go that builds the Windows test programs run under wine (see WINE_GO in
# test/run.ts), into the module cache once.
wine_go=$(sed -n 's/^const WINE_GO = "\(go[0-9.]*\)";$/\1/p' test/run.ts)
if ! GOPROXY=off GOTOOLCHAIN="$wine_go" go version >/dev/null 2>&1; then
  echo "setup: fetching $wine_go (for the Windows programs run under wine)"
  GOTOOLCHAIN="$wine_go" go version
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
