#!/usr/bin/env bash
# Nightly ReccoBeats enrichment for cron: one run at a time, a dated log, the job's exit code.
#
#   jobs/cron/run_nightly.sh [--date YYYY-MM-DD] [other python -m jobs.nightly_enrich args]
#
# Why a wrapper: cron starts the next run even if last night's is still going (slow API days
# happen). `flock -n` makes the second start exit at once instead of queueing behind the first
# or racing it. The pipeline has its own state-dir lock too (exit 4); this lock is taken before
# Python even starts, so an overlapping cron start never loads anything or touches a log.
#
# Environment (all optional):
#   RECCOBEATS_STATE_DIR  state dir, also where cron.lock lives        (default data/state)
#   RECCOBEATS_LOG_DIR    where nightly-YYYY-MM-DD.log files go         (default data/logs)
#   PYTHON                interpreter to run the job with  (default: the repo's .venv, else python3)
#   RECCOBEATS_JOB_CMD    the whole job command, to run another installation or a wrapper of
#                         your own (default: "$PYTHON -m jobs.nightly_enrich"); split on spaces
#   RECCOBEATS_TIMEOUT    stop the job after this long, e.g. 6h (timeout(1) syntax; default:
#                         no limit). The job gets SIGTERM, checkpoints and stops; the wrapper
#                         then exits 124. Without it a hung run holds the lock for good and
#                         every later night exits 75.
#   plus every RECCOBEATS_* setting the job reads (RECCOBEATS_INPUT, RECCOBEATS_OUTPUT_DIR, ...).
# Relative paths are relative to the repository root (the wrapper cd's there); in a copy
# written by `reccobeats-etl cron-wrapper PATH` they are relative to cron's start directory.
#
# --dry-run: prints the plan (IDs new/known, calls per endpoint, ETA) on the terminal and
# exits; no lock is taken and no log file is written.
#
# Exit codes: the job's (0 ok, 2 bad input/config, 3 partial, 4 state locked, 5 state dir,
# 130 cancelled), 75 (EX_TEMPFAIL) when another run of this wrapper holds the lock, 124 when
# RECCOBEATS_TIMEOUT ran out.
set -euo pipefail

readonly EXIT_ALREADY_RUNNING=75

# Filled in by `reccobeats-etl cron-wrapper PATH` (a copy for a pip-installed package): the
# interpreter of that installation. Empty in the repository's own copy.
installed_python=""

# In the repository (jobs/cron/run_nightly.sh) relative paths are relative to its root; a copy
# installed elsewhere stays in the directory cron starts it in (use absolute paths there).
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -z "$installed_python" && -f "$repo_root/jobs/nightly_enrich.py" ]]; then
    cd "$repo_root"
else
    repo_root=""
fi

state_dir="${RECCOBEATS_STATE_DIR:-data/state}"
log_dir="${RECCOBEATS_LOG_DIR:-data/logs}"

# The run date is decided once, here, and passed to the job, so the log name and the partition
# can never disagree (a run started at 23:59:59 UTC would otherwise straddle two dates).
run_date=""
dry_run=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --date) run_date="${args[i + 1]:-}" ;;
        --date=*) run_date="${args[i]#--date=}" ;;
        --dry-run) dry_run=1 ;;
    esac
done
if [[ -z "$run_date" ]]; then
    run_date="$(date -u +%F)"
    args=(--date "$run_date" "${args[@]}")
fi
# A real calendar date, checked before anything is created: 2026-13-45 must not leave a
# nightly-2026-13-45.log behind (date(1) normalises nothing when asked for the same format).
if [[ ! "$run_date" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] ||
    [[ "$(date -u -d "$run_date" +%F 2>/dev/null)" != "$run_date" ]]; then
    echo "run_nightly: --date must be a real date YYYY-MM-DD, got '$run_date'" >&2
    exit 2
fi

if [[ -n "${RECCOBEATS_JOB_CMD:-}" ]]; then
    read -r -a job_cmd <<<"$RECCOBEATS_JOB_CMD"
else
    python="${PYTHON:-$installed_python}"
    if [[ -z "$python" ]]; then
        if [[ -n "$repo_root" && -x "$repo_root/.venv/bin/python" ]]; then
            python="$repo_root/.venv/bin/python"
        else
            python="python3"
        fi
    fi
    job_cmd=("$python" -m jobs.nightly_enrich)
fi

if [[ -n "${RECCOBEATS_TIMEOUT:-}" && -z "${RECCOBEATS_TIME_BUDGET:-}" ]]; then
    # The job stops itself at 90 % of the timeout (time budget: state saved, the partition
    # published with the rest pending, exit 10) instead of being killed by timeout(1).
    if budget_s=$(awk -v t="$RECCOBEATS_TIMEOUT" 'BEGIN {
            n = t + 0; u = substr(t, length(t)); m = 1
            if (u == "m") m = 60; else if (u == "h") m = 3600; else if (u == "d") m = 86400
            if (n <= 0) exit 1; printf "%d", n * m * 0.9 }'); then
        export RECCOBEATS_TIME_BUDGET="$budget_s"
    fi
fi

if [[ -n "${RECCOBEATS_TIMEOUT:-}" ]]; then
    # --kill-after: a job that ignores SIGTERM for 5 more minutes is killed for good.
    job_cmd=(timeout --signal=TERM --kill-after=5m "$RECCOBEATS_TIMEOUT" "${job_cmd[@]}")
fi

# A dry run makes no request and writes nothing: no lock, no log file, the plan on stdout.
if ((dry_run)); then
    exec "${job_cmd[@]}" "${args[@]}"
fi

mkdir -p "$state_dir" "$log_dir"
lock_file="$state_dir/cron.lock"
log_file="$(cd "$log_dir" && pwd)/nightly-$run_date.log"

# fd 9 stays open (and the lock held) until this script and the job it runs have exited.
exec 9>>"$lock_file"
if ! flock -n 9; then
    echo "run_nightly: another nightly run holds $lock_file; not starting (exit $EXIT_ALREADY_RUNNING)" >&2
    exit "$EXIT_ALREADY_RUNNING"
fi

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Append: a re-run of the same date (by hand after a failure) keeps the first attempt's log.
{
    echo "=== $(stamp) start run_date=$run_date pid=$$ cmd: ${job_cmd[*]} ${args[*]}"
} >>"$log_file"

# Interactive runs also show the output; under cron only the log gets it and stdout stays
# quiet on success, so cron mails only the failure line below.
rc=0
if [[ -t 1 ]]; then
    "${job_cmd[@]}" "${args[@]}" 2>&1 | tee -a "$log_file" || rc=$?
else
    "${job_cmd[@]}" "${args[@]}" >>"$log_file" 2>&1 || rc=$?
fi

echo "=== $(stamp) end run_date=$run_date exit=$rc" >>"$log_file"
if ((rc == 10)); then
    # Not a failure: the time/request budget ran out, the partition is published with the
    # rest "pending", and the next run continues (state keeps every answer).
    echo "run_nightly: $run_date: budget reached, more to do next run; log: $log_file" >&2
elif ((rc != 0)); then
    echo "run_nightly: job for $run_date exited $rc; log: $log_file" >&2
fi
exit "$rc"
