#!/usr/bin/env bash
# Runs a command so that it and everything it starts end together: on SIGTERM
# (coreutils `timeout --foreground`, at a time limit) with exit code 124, on
# SIGINT (Ctrl-C) with 130. The command runs in the background, where a
# non-interactive shell would have it ignore Ctrl-C, so this script ends it.
# With WR_SH_LOG set, the command's output (stdout and stderr) is shown and
# also appended to that file, through a FIFO: a program that reopens
# /dev/stdout cannot truncate the log, and a daemon keeping the output open
# cannot keep this script waiting.
#
#   timeout --foreground -k 10 SECONDS bash build/limited.sh COMMAND [ARG...]
tree() {
  local c
  for c in $(pgrep -P "$1"); do tree "$c"; done
  echo "$1"
}
stop_tee() {
  [ -n "$shown" ] || return 0
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill -0 "$shown" 2>/dev/null || return 0
    sleep 0.1
  done
  kill "$shown" 2>/dev/null
}
end() {
  # The tree as it is now, so that processes whose parent dies on SIGTERM
  # are still found for SIGKILL.
  local p
  p=$(tree "$pid")
  kill -TERM $p 2>/dev/null
  sleep 1
  kill -KILL $p $(tree "$pid") 2>/dev/null
  stop_tee
  [ -z "$fifo" ] || rm -f "$fifo"
  exit "$1"
}
shown= fifo=
if [ -n "$WR_SH_LOG" ]; then
  fifo="$WR_SH_LOG.fifo"
  rm -f "$fifo"
  mkfifo "$fifo" || exit 125
  tee -a "$WR_SH_LOG" <"$fifo" &
  shown=$!
  "$@" >"$fifo" 2>&1 </dev/null &
  pid=$!
else
  "$@" </dev/null &
  pid=$!
fi
trap 'end 124' TERM
trap 'end 130' INT
wait "$pid"
rc=$?
stop_tee
[ -z "$fifo" ] || rm -f "$fifo"
exit "$rc"
