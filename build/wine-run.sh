#!/usr/bin/env bash
# Runs a Windows program under wine64 with a private prefix and quiet logs.
# The prefix is created on first use (about 7 s) and reused afterwards.
export WINEPREFIX="${WINEPREFIX:-/tmp/windows-redirector-wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
exec /usr/lib/wine/wine64 "$@"
