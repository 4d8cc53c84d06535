"""Nightly ReccoBeats enrichment as an Airflow 3 DAG (TaskFlow).

plan (dry run) -> resolve -> features -> recommendations -> publish (partitions + run report)

Why it looks like this:

* Thin. Each task calls ``jobs.nightly_enrich.run_nightly`` -- the same function cron calls --
  for one stage. The stages are idempotent (registry and caches live in the state dir), so
  running them as separate tasks makes the same requests as one full run, and a retried task
  only fetches what is still missing. The pipeline is imported inside the tasks so that parsing
  this file (which the DAG processor does every few minutes) never loads pandas/pyarrow.
* Pools bound concurrency across the whole deployment; the in-process limiter bounds the rate.
  Without a shared budget every API-bound task runs in one pool (default ``reccobeats_api``,
  create it with 1 slot), so no two ReccoBeats-bound tasks -- of this DAG or any other -- ever
  run at once and each process's limiter really is the only client of the API.
* With a shared budget (``RECCOBEATS_SHARED_BUDGET=redis://...`` in the environment of the DAG
  processor and the workers) every process spends ONE budget kept in Redis, so tasks of other
  DAGs, backfills and cron jobs may run at the same time: the API tasks then need no pool and
  run in ``default_pool``. The URL may also come from an Airflow Variable of that name (it
  wins at run time), but the pool is decided when the file is parsed, from the environment:
  with the URL only in a Variable the 1-slot pool stays (still correct, only serialised).
  Redis unreachable or lost makes the task fail (exit 6 in the CLI) and Airflow retry it.
* The partition date is decided once, by ``plan``, and handed to the other tasks through XCom:
  a retry after midnight must not switch to another date.
* Bad input/config fails at once (``AirflowFailException``: no retry can fix it); API trouble
  (a "partial" run) and a state dir locked by another run fail retryably, with exponential
  backoff.

Configuration: ``RECCOBEATS_INPUT``, ``RECCOBEATS_OUTPUT_DIR``, ``RECCOBEATS_STATE_DIR``,
``RECCOBEATS_BASE_URL``, ``RECCOBEATS_RATE_LIMIT``, ``RECCOBEATS_SHARED_BUDGET``,
``RECCOBEATS_BUDGET_NAME`` as environment variables of the workers, or
as Airflow Variables of the same names, which take precedence. Everything else uses the
product's defaults (and ``RECCOBEATS_*`` env / ``RECCOBEATS_CONFIG`` TOML as usual).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

DAG_ID = "reccobeats_enrichment"

log = logging.getLogger(__name__)

#: Settings that an Airflow Variable of the same name overrides (Variables > env > defaults).
VARIABLE_SETTINGS = (
    "RECCOBEATS_INPUT",
    "RECCOBEATS_OUTPUT_DIR",
    "RECCOBEATS_STATE_DIR",
    "RECCOBEATS_BASE_URL",
    "RECCOBEATS_RATE_LIMIT",
    "RECCOBEATS_SHARED_BUDGET",
    "RECCOBEATS_BUDGET_NAME",
    "RECCOBEATS_MAX_REQUESTS",
    "RECCOBEATS_TIME_BUDGET",
)

#: The pool must be known when the file is parsed, before any task runs, so it is read from
#: the environment here rather than from ``Settings.airflow_pool`` (same variable, same default;
#: a test checks they agree).
API_POOL = os.environ.get("RECCOBEATS_AIRFLOW_POOL", "reccobeats_api")

#: A shared budget in the parsing environment drops the 1-slot pool requirement (see above).
SHARED_BUDGET = bool(os.environ.get("RECCOBEATS_SHARED_BUDGET", "").strip())
API_TASK: dict[str, Any] = {} if SHARED_BUDGET else {"pool": API_POOL, "pool_slots": 1}

#: Exit code of a run that finished with API failures after the client's own retries.
_EXIT_PARTIAL = 3
#: Exit code of a run stopped by its request/time budget: success, with more to do.
_EXIT_BUDGET_REACHED = 10

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-eng",
    "retries": 3,
    "retry_delay": timedelta(minutes=5),
    # Airflow 3 takes a multiplier here: True would mean 1.0, i.e. *no* backoff.
    "retry_exponential_backoff": 2.0,  # 5, 10, 20 min
    "max_retry_delay": timedelta(hours=1),
    # Real responses can take 20-70 s each; a day's new tracks are minutes of calls at the
    # learned rate, so 2 h per stage means something is stuck, not slow.
    "execution_timeout": timedelta(hours=2),
}

#: Each API task stops itself this long before ``execution_timeout`` (time budget), saves its
#: state and publishes what it has, instead of being killed and retried. A
#: ``RECCOBEATS_TIME_BUDGET`` setting (env or Variable) wins over this default.
TIME_BUDGET_MARGIN = timedelta(minutes=10)


def default_time_budget_s() -> float:
    timeout: timedelta = DEFAULT_ARGS["execution_timeout"]
    return (timeout - TIME_BUDGET_MARGIN).total_seconds()


def partition_date(context: Context | dict[str, Any]) -> date:
    """The date whose partitions this DAG run writes, in UTC.

    In order: the ``date`` param (set it when triggering by hand to (re)build a given day),
    the run's logical date (scheduled runs; with the cron trigger timetable that is the
    trigger time itself, i.e. "today" for the 02:00 run), the run's ``run_after`` (Airflow 3
    manual and asset-triggered runs may have no logical date), and finally now.
    """
    explicit = (context.get("params") or {}).get("date")
    if explicit:
        try:
            return date.fromisoformat(str(explicit))
        except ValueError:
            raise AirflowFailException(f"param 'date' is not YYYY-MM-DD: {explicit!r}") from None
    logical = context.get("logical_date")
    if logical is not None:
        return logical.astimezone(UTC).date()
    run_after = getattr(context.get("dag_run"), "run_after", None)
    if run_after is not None:
        return run_after.astimezone(UTC).date()
    return datetime.now(UTC).date()


def setting_overrides() -> dict[str, str]:
    """Settings given as Airflow Variables (lower-cased field names, ready for load_settings).

    Only Variables that exist and are non-empty count, so a missing Variable falls back to the
    worker's environment and then to the product default instead of masking them.
    """
    from airflow.sdk import Variable

    overrides: dict[str, str] = {}
    for name in VARIABLE_SETTINGS:
        value = Variable.get(name, default=None)
        if value is not None and str(value).strip():
            overrides[name.removeprefix("RECCOBEATS_").lower()] = str(value).strip()
    return overrides


def run_stage(run_date: str, stages: tuple[str, ...] | None, *, dry_run: bool = False) -> dict:
    """Run ``stages`` for ``run_date`` and return the report as plain JSON-able data.

    Raises ``AirflowFailException`` (no retry) for bad input/config and ``AirflowException``
    (retried) for a partial run; other errors (state locked, transport) propagate and are
    retried too.
    """
    import json

    from jobs.nightly_enrich import run_nightly
    from pipeline import ConfigError, InputError, NothingResolvedError, load_settings

    kwargs: dict[str, Any] = {} if stages is None else {"stages": stages}
    overrides = setting_overrides()
    if load_settings(overrides).time_budget is None:  # not set by Variable, env or TOML
        overrides["time_budget"] = str(default_time_budget_s())
    try:
        report = run_nightly(
            date.fromisoformat(run_date),
            dry_run=dry_run,
            progress=False,
            **kwargs,
            **overrides,
        )
    except NothingResolvedError as exc:
        # Upstream here is always a resolve task that succeeded: one its budget stopped
        # before any answer (exit 10, more to do). Nothing to fetch yet is no failure.
        log.warning("reccobeats %s %s: %s", "+".join(stages or ("all",)), run_date, exc)
        return {"more_to_do": True, "skipped": str(exc)}
    except (InputError, ConfigError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
    # The XCom copy leaves out the per-request timeline (it grows with the run and already sits
    # in the report file); default=str turns dates and paths into strings XCom can store.
    figures = {k: v for k, v in report.to_dict().items() if k != "timeline"}
    data = json.loads(json.dumps(figures, default=str))
    label = "plan" if dry_run else "+".join(stages or ("all",))
    log.info(
        "reccobeats %s %s: run %s %s (exit %s); report %s",
        label,
        run_date,
        report.run_id,
        report.status,
        report.exit_code,
        report.report_path,
    )
    if not dry_run:
        log.info("%s", report.summary())
    if report.exit_code == _EXIT_PARTIAL:
        raise AirflowException(
            f"run {report.run_id} for {run_date} ended {report.status!r} (API failures after "
            "retries); the task will be retried and fetches only what is still missing"
        )
    data["more_to_do"] = report.exit_code == _EXIT_BUDGET_REACHED
    if data["more_to_do"]:
        # Success with more to do: the state keeps every answer, so the next night (or a
        # manual trigger) continues where this run stopped. XCom carries the figures.
        log.warning(
            "reccobeats %s %s: budget reached, %s rows pending; the next run continues",
            label, run_date, data.get("pending", "?"),
        )  # fmt: skip
        return data
    if report.exit_code != 0:
        raise AirflowException(f"run {report.run_id} for {run_date} exited {report.exit_code}")
    return data


@dag(
    dag_id=DAG_ID,
    # Cron-like trigger: the 02:00 UTC run's logical date is that same day, the date cron's
    # wrapper would use, so both schedulers fill the same partition for the same night.
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=10),
    default_args=DEFAULT_ARGS,
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Partition date YYYY-MM-DD; empty: the run's logical date",
        )
    },
    tags=["reccobeats", "etl"],
    doc_md=__doc__,
)
def reccobeats_enrichment() -> None:
    @task
    def plan() -> dict:
        """Fix the partition date and log the dry-run figures (no API calls, so no pool)."""
        run_date = partition_date(get_current_context()).isoformat()
        report = run_stage(run_date, None, dry_run=True)
        return {"run_date": run_date, "plan": report.get("figures", {})}

    @task(**API_TASK)
    def resolve(planned: dict) -> str:
        run_stage(planned["run_date"], ("resolve",))
        return planned["run_date"]

    @task(**API_TASK)
    def features(run_date: str) -> str:
        run_stage(run_date, ("features",))
        return run_date

    @task(**API_TASK)
    def recommendations(run_date: str) -> str:
        run_stage(run_date, ("recommendations",))
        return run_date

    @task(**API_TASK)
    def publish(run_date: str) -> dict:
        """Write the date partitions and the run report; returns the report (XCom)."""
        return run_stage(run_date, ("publish",))

    publish(recommendations(features(resolve(plan()))))


reccobeats_enrichment()
