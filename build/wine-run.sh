#!/usr/bin/env bash
# Runs a Windows program under wine64 with a private prefix and quiet logs.
# The prefix is created on first use (about 7 s) and reused afterwards; the
# test runner boots it and keeps one wineserver up for the whole run
# (test/run.ts, wineUp). No display: wine's null graphics driver is used.
export WINEPREFIX="${WINEPREFIX:-/tmp/windows-redirector-wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml,winemenubuilder.exe=}"
unset DISPLAY WAYLAND_DISPLAY
exec /usr/lib/wine/wine64 "$@"
