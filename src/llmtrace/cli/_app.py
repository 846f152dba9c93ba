"""The ``llmtrace`` commands (click), rendered with rich."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtrace._pricing import PRICES_CHECKED, ModelPrice, lookup_price, normalize_model_name, service_tiers
from llmtrace.cli import _render as render
from llmtrace.cli._otlp import request_to_json, trace_to_request
from llmtrace.store._api import (
    InvalidCursor,
    InvalidFilter,
    Pruned,
    Store,
    StoreError,
    Trace,
    TraceFilter,
    TraceNotFound,
    redact_url,
)
from llmtrace.store._open import default_store_url
from llmtrace.store._retention import parse_duration
from llmtrace.store._retention import prune as prune_store
from llmtrace.store._sql import INT64_MAX, INT64_MIN
from llmtrace.store._writer import classify_failure, status_dir_for

PROGRESS_THRESHOLD = 2000
"""Spans (export) above which a progress bar is shown on a terminal."""

_TRACE_ID = re.compile(r"^[0-9a-f]{1,32}$")
MIN_TRACE_ID_PREFIX = 4
"""Hex digits a trace id given to ``show`` or ``export`` must have at least (or all 32)."""
MAX_SERIES_BUCKETS = 100
"""``stats`` without ``--bucket`` takes the finest bucket that splits the calls' time span into
at most about this many."""


def _fail(message: str, code: int = 1) -> NoReturn:
    """A one-line error: exit code 1 for the store or its data, 2 for what was asked."""
    if code == 2:
        raise click.UsageError(message)
    raise click.ClickException(message)


# --------------------------------------------------------------------------------------
# Consoles, store, progress
# --------------------------------------------------------------------------------------
class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits with code 1 here; let the command end like any other broken pipe (exit 0)
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the output was closed")


def _console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    terminal = stream.isatty()
    # no markup: a "[link=...]" in a span name is text, not a link
    return _Console(
        file=stream, width=None if terminal else 200, soft_wrap=False, highlight=False, markup=False
    )


@contextlib.contextmanager
def _busy(message: str) -> Iterator[None]:
    """A spinner on stderr while the store works (only on a terminal)."""
    console = _console(err=True)
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        yield


_STORE_URL = "--store"
"""The key of ``--store`` in ``click.Context.meta`` (shared by the group and its command)."""


class _State:
    def __init__(self, meta: dict[str, Any]) -> None:
        self._meta = meta
        self._store: Store | None = None

    @property
    def store_url(self) -> str | None:
        """The last ``--store`` given: after the command name, else before it."""
        value = self._meta.get(_STORE_URL)
        return value if isinstance(value, str) else None

    @property
    def url(self) -> str:
        return self.store_url or default_store_url()

    def store(self) -> Store:
        if self._store is None:
            from llmtrace.store._open import open_store

            try:
                self._store = open_store(self.url, create=False)
            except StoreError as exc:
                _fail(str(exc))
            except ImportError as exc:
                _fail(f"cannot open {redact_url(self.url)}: {exc} (pip install 'psycopg[binary]')")
        return self._store

    def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()


def _state(ctx: click.Context) -> _State:
    state = ctx.find_object(_State)
    assert state is not None
    return state


# --------------------------------------------------------------------------------------
# Option parsing
# --------------------------------------------------------------------------------------
def parse_time(value: str, *, now: dt.datetime | None = None, name: str = "time") -> int:
    """UTC nanoseconds from ISO 8601 (naive means UTC) or a relative age: ``90s``, ``15m``, ``1h``,
    ``2d``, ``1w`` (that long before now). Times the store cannot hold (outside 1677-2262) are
    refused with :class:`click.BadParameter`."""
    now = now or dt.datetime.now(dt.timezone.utc)
    seconds = parse_duration(value)
    try:
        if seconds is not None:
            moment = now - dt.timedelta(seconds=seconds)
        else:
            try:
                moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise click.BadParameter(
                    f"{value!r} is neither an ISO time (2026-01-31T12:00) nor an age such as 30m, 1h, 2d",
                    param_hint=name,
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
        ns = int(moment.timestamp() * 1_000_000_000)
    except (OverflowError, ValueError):
        ns = INT64_MIN - 1  # out of range, reported below
    if not INT64_MIN <= ns <= INT64_MAX:
        raise click.BadParameter(
            f"{value!r} is out of range: times must fall between 1677-09-22 and 2262-04-11 (UTC)",
            param_hint=name,
        )
    return ns


def _filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of ``traces``: they select traces."""
    return _filter_options(
        fn,
        service="Only traces of this service.name.",
        model="Only traces with a call to this model (request or response model).",
        provider="Only traces with a call to this provider (openai, anthropic, ...).",
        status="Only ok traces, or failed ones (error: any span failed, a recovered fallback or retry too).",
        since="Traces that start at or after: ISO time (UTC if no offset) or an age (30m, 1h, 2d).",
        until="Traces that start before: ISO time or an age.",
        min_cost="Minimum cost of a trace (USD).",
        min_duration="Minimum duration of a trace (seconds).",
    )


def _call_filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same filters for ``stats``: they select model calls, not traces."""
    return _filter_options(
        fn,
        service="Only model calls of this service.name.",
        model="Only calls to this model (request or response model).",
        provider="Only calls to this provider (openai, anthropic, ...).",
        status="Only calls that succeeded (ok) or failed (error).",
        since="Calls that start at or after: ISO time (UTC if no offset) or an age (30m, 1h, 2d).",
        until="Calls that start before: ISO time or an age.",
        min_cost="Minimum cost of a call (USD).",
        min_duration="Minimum duration of a call (seconds).",
    )


def _filter_options(fn: Callable[..., Any], **help: str) -> Callable[..., Any]:
    options = [
        click.option("--service", help=help["service"]),
        click.option("--model", help=help["model"]),
        click.option("--provider", help=help["provider"]),
        click.option("--status", type=click.Choice(["ok", "error"]), help=help["status"]),
        click.option("--since", help=help["since"]),
        click.option("--until", help=help["until"]),
        click.option("--min-cost", type=click.FloatRange(min=0), help=help["min_cost"]),
        click.option("--min-duration", type=click.FloatRange(min=0), help=help["min_duration"]),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _trace_filter(kwargs: dict[str, Any]) -> TraceFilter:
    since = parse_time(kwargs["since"], name="--since") if kwargs.get("since") else None
    until = parse_time(kwargs["until"], name="--until") if kwargs.get("until") else None
    if since is not None and until is not None and since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    min_duration = kwargs.get("min_duration")
    if min_duration is not None and not (math.isfinite(min_duration) and min_duration * 1e9 <= INT64_MAX):
        raise click.BadParameter(
            f"{min_duration!r} is out of range: a number of seconds up to {INT64_MAX // 10**9:,}",
            param_hint="--min-duration",
        )
    return TraceFilter(
        service=kwargs.get("service"),
        model=kwargs.get("model"),
        provider=kwargs.get("provider"),
        status=kwargs.get("status"),
        since_ns=since,
        until_ns=until,
        min_cost=kwargs.get("min_cost"),
        min_duration_ns=int(min_duration * 1e9) if min_duration is not None else None,
    )


def _check_trace_id(trace_id: str) -> str:
    """The trace id, or the beginning of one (lowercase, without ``0x``)."""
    normalized = trace_id.strip().lower()
    if normalized.startswith("0x"):
        normalized = normalized[2:]
    if not _TRACE_ID.match(normalized):
        raise click.BadParameter(
            f"{trace_id!r} is not a trace id (32 hex digits, or at least the first "
            f"{MIN_TRACE_ID_PREFIX} of them)",
            param_hint="TRACE_ID",
        )
    if len(normalized) < MIN_TRACE_ID_PREFIX:
        raise click.BadParameter(
            f"{trace_id!r} is too short: give at least the first {MIN_TRACE_ID_PREFIX} hex digits of "
            "the trace id (or all 32)",
            param_hint="TRACE_ID",
        )
    return normalized


def _get_trace(store: Store, trace_id: str) -> Trace:
    """The trace with this id, or the only stored trace whose id starts with it."""
    wanted = _check_trace_id(trace_id)
    if len(wanted) < 32:
        found, total = store.find_trace_ids(wanted, limit=2)
        if total == 0:
            _fail(f"no trace id starts with {wanted} in {store.url}")
        if total > 1:
            count = f"{total:,}" if total < 1000 else "1,000 or more"
            _fail(f"{count} traces start with {wanted} in {store.url}: give more digits of the trace id")
        wanted = found[0]
    try:
        return store.get_trace(wanted)
    except TraceNotFound:
        _fail(f"no trace {wanted} in {store.url}")


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(
            f"unknown time zone {value!r} (e.g. UTC, Europe/Paris)", param_hint="--tz"
        ) from None
    return value


# --------------------------------------------------------------------------------------
# The group, with one-line errors
# --------------------------------------------------------------------------------------
def _remember_store(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # the group's option is parsed first, the command's after it: the command's wins
    if value is not None:
        ctx.meta[_STORE_URL] = value
    return value


def _store_option() -> click.Option:
    """``--store``, accepted by the group and by every command (``llmtrace traces --store X`` as
    well as ``llmtrace --store X traces``)."""
    return click.Option(
        ["--store", "store_url"],
        metavar="URL",
        expose_value=False,
        callback=_remember_store,
        help="Store path or postgresql:// URL (default: $LLMTRACE_STORE, else ./.llmtrace/traces.db).",
    )


class _Cli(click.Group):
    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(param.name == "store_url" for param in cmd.params):
            cmd.params.append(_store_option())
        super().add_command(cmd, name)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name or "llmtrace", standalone_mode=False, **extra)
        except click.UsageError as exc:
            _error(exc.format_message(), 2)
        except click.ClickException as exc:
            _error(exc.format_message(), exc.exit_code)
        except click.Abort:
            _error("aborted", 1)
        except (InvalidCursor, InvalidFilter) as exc:
            _error(str(exc), 2)
        except StoreError as exc:
            _error(str(exc), 1)
        except _OutputClosed:
            _quiet_exit()
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_exit()
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        # Click's main() turns EPIPE into exit code 1; a reader that stopped early (``| head``) is
        # not an error: raise past it, and exit 0 in main() above.
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _OutputClosed from None


class _OutputClosed(Exception):
    """Standard output was closed by its reader."""


def _quiet_exit() -> NoReturn:
    """Exit 0 after a broken pipe, without Python's complaint when it flushes stdout at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def _error(message: str, code: int) -> NoReturn:
    line = " ".join(message.split())
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]}, params=[_store_option()])
@click.pass_context
def cli(ctx: click.Context) -> None:
    """See the traces, token usage and cost that llmtrace recorded in its store."""
    state = _State(ctx.meta)
    ctx.obj = state
    ctx.call_on_close(state.close)


# --------------------------------------------------------------------------------------
# traces, show
# --------------------------------------------------------------------------------------
@cli.command()
@_filters
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Traces per page.")
@click.option(
    "--cursor",
    help="Continue after the page that printed this cursor (repeat the same filters). Later pages "
    "keep the time window of the first page: a relative --since/--until (1h) does not move.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_context
def traces(ctx: click.Context, /, limit: int, cursor: str | None, as_json: bool, **kwargs: Any) -> None:
    """Recent traces, newest first: start, root span, duration, spans, tokens, cost, status."""
    trace_filter = _trace_filter(kwargs)
    store = _state(ctx).store()
    with _busy("Reading traces…"):
        try:
            page = store.list_traces(trace_filter, limit=limit, cursor=cursor)
        except InvalidCursor as exc:
            _fail(f"invalid cursor: {exc}", 2)
        except InvalidFilter as exc:
            _fail(f"invalid filter: {exc}", 2)
    if as_json:
        for item in page.items:
            click.echo(json.dumps({f: getattr(item, f) for f in item.__dataclass_fields__}))
        if page.next_cursor:
            click.echo(json.dumps({"next_cursor": page.next_cursor}))
        return
    console = _console()
    if not page.items:
        console.print("no traces match" if cursor is None else "no more traces")
        return
    console.print(render.traces_table(page.items))
    if page.next_cursor:
        hint = f"next page: {_next_page_command(ctx, page.next_cursor)}"
        console.print(hint, soft_wrap=True, markup=False, highlight=False)


def _next_page_command(ctx: click.Context, cursor: str) -> str:
    """This invocation as a shell command (``--store`` and the options given on the command
    line), with ``--cursor`` set to ``cursor``."""
    parts = ["llmtrace"]
    store_url = _state(ctx).store_url
    if store_url:
        parts += ["--store", store_url]
    parts.append(ctx.info_name or "traces")
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None or name in ("cursor", "store_url"):
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params.get(name)
        option = max(param.opts, key=len)
        if param.is_flag:
            if value:
                parts.append(option)
        elif value is not None:
            parts += [option, str(value)]
    parts += ["--cursor", cursor]
    return shlex.join(parts)


@cli.command()
@click.argument("trace_id")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the trace's spans and evaluations as one JSON document."
)
@click.pass_context
def show(ctx: click.Context, trace_id: str, as_json: bool) -> None:
    """One trace as a span tree: durations, models, tokens, cost, cache hits, tool calls, agent
    steps, evaluations and errors. TRACE_ID may be the beginning of the id (4 hex digits or more)
    when only one stored trace starts with it."""
    _check_trace_id(trace_id)
    trace = _get_trace(_state(ctx).store(), trace_id)
    if as_json:
        click.echo(json.dumps(render.trace_json(trace)))
        return
    _console().print(render.render_trace(trace))


# --------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------
@cli.command()
@_call_filters
@click.option(
    "--by",
    "group_by",
    type=click.Choice(["model", "provider", "service", "service_tier"]),
    default="model",
    show_default=True,
    help="Group the usage series by (service_tier: the tier that served each call, as its provider "
    "reported it; - for calls without one).",
)
@click.option(
    "--bucket",
    type=click.Choice(["minute", "hour", "day"]),
    help="Time bucket of the usage series (default: the finest one that makes at most about "
    f"{MAX_SERIES_BUCKETS} buckets of the calls' time span).",
)
@click.option("--tz", default="UTC", show_default=True, help="Time zone the buckets start in (IANA name).")
@click.option(
    "--latency-by",
    type=click.Choice(["model", "operation"]),
    default="model",
    show_default=True,
    help="Latency percentiles per model or per operation.",
)
@click.option(
    "--errors-by",
    type=click.Choice(["error_type", "model", "provider"]),
    default="model",
    show_default=True,
    help="Error rates per error type, model or provider.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.pass_context
def stats(
    ctx: click.Context,
    /,
    group_by: Any,
    bucket: Any,
    tz: str,
    latency_by: Any,
    errors_by: Any,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Usage and cost: summary, per-model statistics, series, latency percentiles, error rates."""
    trace_filter = _trace_filter(kwargs)
    tz = _timezone(tz)
    store = _state(ctx).store()
    if bucket is None:
        try:
            bucket = auto_bucket(store.usage_time_range(trace_filter))
        except InvalidFilter as exc:
            _fail(f"invalid filter: {exc}", 2)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("summary", lambda: store.usage_summary(trace_filter)),
        ("models", lambda: store.model_stats(trace_filter)),
        ("series", lambda: store.usage_series(group_by=group_by, bucket=bucket, filter=trace_filter, tz=tz)),
        ("latency", lambda: store.latency_percentiles(by=latency_by, filter=trace_filter)),
        ("errors", lambda: store.error_rates(by=errors_by, filter=trace_filter)),
    ]
    results: dict[str, Any] = {}
    with _progress("Computing statistics", len(steps)) as advance:
        for name, query in steps:
            try:
                results[name] = query()
            except InvalidFilter as exc:
                _fail(f"invalid filter: {exc}", 2)
            advance(1)
    if as_json:

        def plain(value: Any) -> Any:
            if isinstance(value, list):
                return [plain(v) for v in value]
            fields = getattr(value, "__dataclass_fields__", None)
            return {f: getattr(value, f) for f in fields} if fields else value

        document = {name: plain(value) for name, value in results.items()}
        document["bucket"] = bucket
        click.echo(json.dumps(document, indent=2))
        return
    console = _console()
    console.print(render.summary_table(results["summary"]))
    console.print(render.model_stats_table(results["models"]))
    console.print(render.series_table(results["series"], group_by=group_by, bucket=bucket, tz=tz))
    console.print(render.percentiles_table(results["latency"], by=latency_by))
    console.print(render.error_rates_table(results["errors"], by=errors_by))


def auto_bucket(time_range: tuple[int, int] | None) -> str:
    """The finest bucket (minute, hour, day) that cuts ``time_range`` (first and last call start,
    ns) into at most about MAX_SERIES_BUCKETS buckets; ``hour`` when there are no calls."""
    if time_range is None:
        return "hour"
    span_s = max(0, time_range[1] - time_range[0]) / 1e9
    for name, size_s in (("minute", 60), ("hour", 3600)):
        if span_s / size_s < MAX_SERIES_BUCKETS:
            return name
    return "day"


@contextlib.contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    console = _console(err=True)
    if not console.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


# --------------------------------------------------------------------------------------
# prices
# --------------------------------------------------------------------------------------
@cli.command()
@click.argument("models", nargs=-1, required=True)
def prices(models: tuple[str, ...]) -> None:
    """Look up model prices (USD per 1M tokens) the way llmtrace prices calls: a row per model, and
    one per service tier (flex, priority ...) the table prices it on."""

    def per_million(value: float | None, fallback: float) -> str:
        return f"${value if value is not None else fallback:g}"

    rows: list[tuple[str, str | None, ModelPrice | None]] = []
    for model in models:
        price = lookup_price(model)
        rows.append((model, None, price))
        if price is not None:
            for name in service_tiers():
                tier_price = lookup_price(model, name)
                if tier_price is not None:
                    rows.append((model, name, tier_price))
    with_tiers = any(tier is not None for _, tier, _ in rows)
    with_1h = any(price is not None and price.cache_write_1h is not None for _, _, price in rows)
    columns = ["model", *(["tier"] if with_tiers else []), "priced as", "provider", "input", "cached input"]
    columns += ["cache write", *(["1h cache write"] if with_1h else []), "output", "reasoning"]
    table = Table(title=f"Prices per 1M tokens (bundled table checked {PRICES_CHECKED})")
    for name in columns:
        left = name in ("model", "tier", "priced as", "provider")
        table.add_column(name, justify="left" if left else "right")
    for model, tier, price in rows:
        cells = [render.clean(model)]
        if with_tiers:
            cells.append(render.clean(tier) if tier else ("standard" if price else render.NONE))
        if price is None:
            cells += ["unknown", *([render.NONE] * (len(columns) - len(cells) - 1))]
            table.add_row(*cells)
            continue
        write = price.cache_write if price.cache_write is not None else price.input
        cells += [
            render.clean(normalize_model_name(model)),
            price.provider or render.NONE,
            per_million(price.input, price.input),
            per_million(price.cache_read, price.input),
            per_million(price.cache_write, price.input),
        ]
        if with_1h:
            cells.append(per_million(price.cache_write_1h, write))
        cells += [per_million(price.output, price.output), per_million(price.reasoning, price.output)]
        table.add_row(*cells)
    _console().print(table)


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------
@cli.command()
@click.argument("trace_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="-",
    help="File to write (default: standard output).",
)
@click.option(
    "--encoding",
    type=click.Choice(["otlp", "proto3"]),
    default="otlp",
    show_default=True,
    help="otlp: the OTLP file format, one JSON line with hex ids (the Collector's otlpjsonfile "
    "receiver and Jaeger read it); proto3: plain protobuf JSON mapping (base64 ids, indented).",
)
@click.pass_context
def export(ctx: click.Context, trace_id: str, output: str, encoding: Any) -> None:
    """A trace as an OTLP ExportTraceServiceRequest in JSON, for other OpenTelemetry tools.
    TRACE_ID may be the beginning of the id, as for ``show``."""
    _check_trace_id(trace_id)
    trace = _get_trace(_state(ctx).store(), trace_id)
    trace_id = trace.trace_id
    total = len(trace.spans)
    if total >= PROGRESS_THRESHOLD:
        with _progress(f"Encoding {total:,} spans", total) as advance:
            request = trace_to_request(trace, progress=advance)
    else:
        request = trace_to_request(trace)
    text = request_to_json(request, encoding)
    if output == "-":
        click.echo(text)
    else:
        try:
            Path(output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror or exc}")
        click.echo(f"wrote {total} spans of trace {trace_id} to {output}", err=True)


# --------------------------------------------------------------------------------------
# prune
# --------------------------------------------------------------------------------------
def _amounts(counts: Pruned) -> str:
    spans = f"{counts.spans:,} span{'s' * (counts.spans != 1)}"
    if counts.evaluations:
        spans += f", {counts.evaluations:,} evaluation{'s' * (counts.evaluations != 1)}"
    return (
        f"{counts.traces:,} trace{'s' * (counts.traces != 1)} ({spans}) and "
        f"{counts.usage:,} usage record{'s' * (counts.usage != 1)}"
    )


def _write_failure(store: Store, exc: Exception) -> str:
    """One line for an error while pruning (a StoreError says it already)."""
    if isinstance(exc, StoreError):
        return str(exc)
    if classify_failure(exc) == "contention":
        return f"the store {store.url} is busy: another process held its lock too long; try again ({exc})"
    return f"cannot prune {store.url}: {type(exc).__name__}: {exc}"


@cli.command()
@click.option(
    "--older-than",
    metavar="AGE",
    help="Delete what ended more than this long ago: 30m, 24h, 7d, 2w.",
)
@click.option(
    "--before",
    metavar="TIME",
    help="Delete what ended before this time: ISO time (UTC if no offset) or an age, as --until of "
    "the other commands. With --older-than too, the earlier of the two.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed when standard input is not a terminal).")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Then give the freed space back. SQLite: the file is rewritten (VACUUM; writers wait until "
    "it is done, and as much free disk space as the store takes is needed); PostgreSQL: VACUUM ANALYZE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def prune(
    ctx: click.Context,
    older_than: str | None,
    before: str | None,
    dry_run: bool,
    yes: bool,
    vacuum: bool,
    as_json: bool,
) -> None:
    """Delete old traces with their spans, events, evaluations and usage records.

    A trace goes when its newest span ended before the cutoff and its root span is stored; a trace
    whose root span is not stored (still running, or its root is in another service) goes once it
    has also been quiet for a day, so a trace being written is never cut in half. Usage records of
    calls whose trace is not stored (sampled out) go when the call started before the cutoff and a
    day ago, and so do evaluations whose trace is not stored. Deletion runs in short batches, so
    programs writing to the store keep going.
    """
    now = dt.datetime.now(dt.timezone.utc)
    cutoffs: list[int] = []
    if older_than is not None:
        if parse_duration(older_than) is None:
            raise click.BadParameter(
                f"{older_than!r} is not an age such as 30m, 24h, 7d or 2w", param_hint="--older-than"
            )
        cutoffs.append(parse_time(older_than, now=now, name="--older-than"))
    if before is not None:
        cutoffs.append(parse_time(before, now=now, name="--before"))
    if not cutoffs:
        raise click.UsageError("say what to delete: --older-than AGE (such as 7d), --before TIME, or both")
    cutoff = min(cutoffs)
    now_ns = int(now.timestamp() * 1_000_000_000)
    state = _state(ctx)
    reader = state.store()  # read-only: a dry run works on any store the user may read
    with _busy("Counting…"):
        found = reader.count_prunable(cutoff, now_ns=now_ns)
    when = render.fmt_time(cutoff)
    report: dict[str, Any] = {"store": reader.url, "cutoff": when, "dry_run": dry_run}
    if dry_run:
        report.update(
            traces=found.traces, spans=found.spans, usage=found.usage, evaluations=found.evaluations
        )
        _echo_report(report, [f"would delete {_amounts(found)} older than {when} from {reader.url}"], as_json)
        return
    nothing = found == Pruned()
    if nothing and not vacuum:
        report.update(traces=0, spans=0, usage=0, evaluations=0)
        _echo_report(report, [f"nothing older than {when}"], as_json)
        return
    if not nothing and not yes and not sys.stdin.isatty():
        _fail(
            "prune deletes data: add --yes to confirm (standard input is not a terminal, so it "
            "cannot ask), or --dry-run to see what would go",
            2,
        )
    from llmtrace.store._open import open_store

    try:  # before asking: a store this user may not write is refused now
        store = open_store(state.url, create=False, write=True)
    except StoreError as exc:
        _fail(str(exc))
    ctx.call_on_close(store.close)
    if not nothing and not yes:
        click.confirm(f"Delete {_amounts(found)} older than {when} from {reader.url}?", abort=True, err=True)
    size_before = store.size_bytes() if vacuum else None
    done = Pruned()

    def progress(total: Pruned) -> None:
        nonlocal done
        done = total

    if not nothing:
        try:
            with _busy("Deleting…"):
                done = prune_store(store, cutoff, now_ns=now_ns, progress=progress)
        except Exception as exc:
            _fail(f"{_write_failure(store, exc)} (deleted before that: {_amounts(done)})")
    report.update(traces=done.traces, spans=done.spans, usage=done.usage, evaluations=done.evaluations)
    lines = [f"deleted {_amounts(done)} older than {when}" if not nothing else f"nothing older than {when}"]
    if vacuum:
        try:
            with _busy("Vacuuming…"):
                store.reclaim_space()
        except Exception as exc:
            _fail(_write_failure(store, exc))
        size_after = store.size_bytes()
        report.update(size_before=size_before, size_after=size_after)
        lines.append(f"vacuumed: {render.fmt_bytes(size_before)} -> {render.fmt_bytes(size_after)}")
    _echo_report(report, lines, as_json)


def _echo_report(report: dict[str, Any], lines: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in lines:
            click.echo(line)


# --------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _writer_snapshots(url: str) -> list[dict[str, Any]]:
    directory = status_dir_for(url)
    found: list[dict[str, Any]] = []
    if not directory.is_dir():
        return found
    for path in directory.glob("writer-*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            data["_file"] = str(path)
            data["_mtime"] = path.stat().st_mtime
            found.append(data)
    found.sort(key=lambda d: d.get("taken_at", 0), reverse=True)
    return found


def _pruned_cell(snap: dict[str, Any]) -> str:
    """What a writer's automatic retention deleted: ``off``, or traces (and failed batches)."""
    retention = snap.get("retention_s")
    if not isinstance(retention, (int, float)):
        return "off"
    units = (("d", 86400), ("h", 3600), ("m", 60))
    age = next((f"{retention / n:g}{unit}" for unit, n in units if retention >= n), f"{retention:g}s")
    text = f"{render.fmt_int(snap.get('pruned_traces') or 0)} traces (> {age})"
    failures = snap.get("prune_failures") or 0
    return text + (f", {failures} failed" if failures else "")


@cli.command()
@click.option(
    "--limit",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="Most recent writer snapshots to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def diagnostics(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The store (location, schema version, contents) and the snapshots its writers left.

    A writer (in each process that called llmtrace.configure()) saves its counters next to the
    store every few seconds and at exit; this shows the most recent ones, and whether each
    process still runs. It cannot see a writer that has not saved yet (its first 2 s).
    """
    state = _state(ctx)
    store = state.store()
    summary = store.usage_summary()
    latest = store.list_traces(limit=1).items
    schema = getattr(store, "schema_version", None)
    info: dict[str, Any] = {
        "store": store.url,
        "backend": type(store).__name__,
        "schema version": schema() if callable(schema) else schema,
        "model calls": summary.calls,
        "total cost (USD)": render.fmt_cost(summary.cost),
        "latest trace": (
            f"{latest[0].trace_id} at {render.fmt_time(latest[0].start_ns)}" if latest else None
        ),
        "writer snapshots in": str(status_dir_for(store.url)),
    }
    snapshots = _writer_snapshots(store.url)[:limit]
    now = time.time()
    for snap in snapshots:
        pid = snap.get("pid")
        running = isinstance(pid, int) and snap.get("state") == "running" and _alive(pid)
        snap["process"] = "running" if running else "exited"
        snap["age_s"] = round(now - float(snap.get("taken_at", now)), 1)
    if as_json:
        click.echo(json.dumps({"store": info, "writers": snapshots}, indent=2, default=str))
        return
    console = _console()
    console.print(render.kv_table(info, title="Store"))
    if not snapshots:
        console.print("no writer snapshots yet (they are saved by processes that write to this store)")
        return
    table = Table(title="Writers (most recent first)")
    for name in (
        "pid",
        "process",
        "saved",
        "accepted",
        "written",
        "dropped",
        "pending",
        "pressure",
        "high water",
        "write failures",
        "last error",
        "pruned",
    ):
        table.add_column(name)
    for snap in snapshots:
        dropped = {k: v for k, v in (snap.get("dropped_by_reason") or {}).items() if v}
        failures = {k: v for k, v in (snap.get("write_failures") or {}).items() if v}
        table.add_row(
            str(snap.get("pid")),
            render.clean(snap["process"]),
            f"{render.fmt_duration_s(snap['age_s'])} ago",
            render.fmt_int(snap.get("accepted")),
            render.fmt_int(snap.get("written")),
            render.fmt_int(snap.get("dropped")) + (f" {dropped}" if dropped else ""),
            render.fmt_int(snap.get("pending")),
            str(snap.get("pressure")),
            f"{snap.get('high_water_mark')}/{snap.get('queue_capacity')}",
            ", ".join(f"{k}={v}" for k, v in failures.items()) or "none",
            render.clean(str(snap.get("last_error") or render.NONE)[:80]),
            _pruned_cell(snap),
        )
    console.print(table)
