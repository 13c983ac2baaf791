# Sourced by the preprocessing scripts, so that no step outlives its script.
#
# bash cannot pass a SIGKILL on to its children: a step left running would go on, and the last
# one would publish the output after the script was killed. So each step is started through
# roberta/process_lifetime.py, which has the kernel kill it when this shell dies (Linux). The
# temporary folders of a killed run carry its process id; the next run removes them.

# step COMMAND [ARG...]: run COMMAND so that it dies with this shell (bash 3 has no BASHPID; it
# is $$ outside a subshell).
step() { "${PYTHON:-python}" -m roberta.process_lifetime "${BASHPID:-$$}" "$@"; }

# remove_dead_leftovers NAME: remove NAME.<pid> and NAME.<pid>.* whose process is gone (a killed
# run's); those of a run still going stay. Call it before creating this run's own.
remove_dead_leftovers() {
  local path pid
  for path in "$1".*; do
    [ -e "$path" ] || continue
    pid=${path#"$1".}
    pid=${pid%%.*}
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if [ "$pid" = "$$" ] || ! is_running "$pid"; then
      rm -rf "$path"
    fi
  done
}

# is_running PID: whether the process runs; a zombie (killed, not reaped yet) does not. Where
# there is no /proc, kill -0 (which fails for another user's process too).
is_running() {
  local stat
  if [ -d /proc/self ]; then
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
  else
    kill -0 "$1" 2>/dev/null
  fi
}
