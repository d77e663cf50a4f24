#!/usr/bin/env bash
# Installs what the project needs, only what is missing: Debian packages and
# the npm packages of package-lock.json. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

# llvm: llvm-dlltool makes the Windows build's MSVC import library; lld:
# lld-link links a program against it in the install tests. zip, unzip: the
# Windows release bundle (build/dist.ts) and its test. python3-venv: the
# virtual environments of the wheels' build backend (build/wheel.ts) and of
# the Python package's tests (PyPI's packages go there, never system-wide).
packages=(
  wabt cmake make gcc g++ pkg-config gcc-mingw-w64-x86-64 wine64 python3 python3-pip python3-venv
  libnetfilter-queue-dev libmnl-dev iptables iproute2 valgrind curl mono-devel
  clang libclang-rt-14-dev procps llvm lld zip unzip
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

# The Go package's modules (go/go.sum: golang.org/x/sys) into the module
# cache once: the tests build with GOPROXY=off.
if ! (cd go && GOPROXY=off GOFLAGS=-mod=mod go mod download >/dev/null 2>&1); then
  echo "setup: fetching the Go package's modules (go/go.sum)"
  (cd go && GOFLAGS=-mod=mod go mod download)
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The official WinDivert 2.2.2 x64 DLL (WinDivert-2.2.2-A, as pydivert
# bundles it), the oracle the windivert suite holds the stand-in to
# (test/windows/test_wd_oracle.c). Never committed: build/vendor is ignored.
# Pinned: pydivert's version and the DLL's SHA-256. When it cannot be fetched
# the oracle tests fail and say so (they never skip).
wd_dir=build/vendor/windivert-2.2.2
wd_sha=c1e060ee19444a259b2162f8af0f3fe8c4428a1c6f694dce20de194ac8d7d9a2
if ! echo "$wd_sha  $wd_dir/WinDivert64.dll" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching WinDivert64.dll 2.2.2 (pydivert 4.0.1's Windows wheel, from PyPI)"
  wd_tmp=$(mktemp -d)
  if python3 -m pip download --quiet --no-deps --only-binary=:all: --platform win_amd64 \
       --python-version 3.12 --dest "$wd_tmp" pydivert==4.0.1 &&
     python3 - "$wd_tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/pydivert-4.0.1-*win_amd64.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[1] + "/WinDivert64.dll", "wb") as out:
    out.write(z.read("pydivert/windivert_dll/WinDivert64.dll"))
PY
  then
    if echo "$wd_sha  $wd_tmp/WinDivert64.dll" | sha256sum -c --status; then
      mkdir -p "$wd_dir" && mv "$wd_tmp/WinDivert64.dll" "$wd_dir/WinDivert64.dll"
    else
      echo "setup: WinDivert64.dll from pydivert 4.0.1 has another SHA-256 than $wd_sha; not used (the windivert oracle tests will fail)" >&2
    fi
  else
    echo "setup: could not fetch pydivert 4.0.1 from PyPI; the windivert oracle tests will fail until build/setup.sh fetches it" >&2
  fi
  rm -rf "$wd_tmp"
fi
