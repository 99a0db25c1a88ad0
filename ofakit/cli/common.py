"""What every ``ofakit`` command shares: one-line errors, path options, the agent token, the status console
and tables whose first column never wraps."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from deploy_targets import ExporterUnavailable
from profilers.agent.client import AgentError
from profilers.runtimes import RuntimeUnavailable

log = logging.getLogger(__name__)

console = Console(stderr=True)
"""Status lines, progress bars and warnings (stderr, so that ``--json`` output on stdout stays parseable)."""


def progress_bars(quiet: bool) -> Progress:
    """Progress bars for long phases: what is done, of how many, the time taken and the time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=console, disable=quiet)


class CliError(ValueError):
    """Bad command-line input; printed as one line."""


CLI_ERRORS = (ValueError, OSError, RuntimeUnavailable, AgentError, ExporterUnavailable)
"""What a command reports as one ``error:`` line: bad input, an unusable path, a runtime or agent that
cannot do the work."""


def fail(exc: Exception) -> None:
    """Print ``error: ...`` on one line and exit with status 2."""
    if isinstance(exc, OSError) and exc.filename:  # e.g. an output path that is a directory or unwritable
        exc = CliError(f"{exc.filename}: {exc.strerror or exc}")
    text = str(exc).strip().splitlines()
    typer.echo(f"error: {text[0] if text else type(exc).__name__}", err=True)
    raise typer.Exit(2)


def path_option(text: str | Path) -> Path:
    """Parse a path option; an empty one is a usage error (typer would turn it into ``.``, the current folder)."""
    if not str(text).strip():
        raise typer.BadParameter("'' is empty; give a path")
    return Path(text)


def artifact_option(text: str) -> str:
    """Parse an artifact path option as given: a trailing slash (which ``Path`` drops) names a directory, and
    the exporter refuses it; an empty one is a usage error."""
    path_option(text)
    return str(text)


def existing_table(table: Path) -> Path:
    """``table`` if it is a file; a one-line error saying what it is otherwise."""
    if table.is_dir():
        raise CliError(f"--table {table} is a directory; give the .sqlite file (e.g. {table / 'lut.sqlite'})")
    if not table.is_file():
        raise CliError(f"--table {table} does not exist; build one with `ofakit profile build`")
    return table


def read_token(path: Path | None) -> str | None:
    """The agent's shared secret from ``--token-file`` (``None`` when the option is not given); a file that
    cannot be read, is not text or is empty is a :class:`CliError`. A file other users can read is logged."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"--token-file {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CliError(f"--token-file {path} is not UTF-8 text") from None
    if not token:
        raise CliError(f"--token-file {path} is empty; put a long random secret in it (e.g. `openssl rand -hex 32`)")
    if path.stat().st_mode & 0o077:
        log.warning("token file %s is readable by other users; chmod 600 it", path)
    return token


def name_table(title: str, *columns: str, names: list[str]) -> Table:
    """A table whose first column (``names``) never wraps or truncates."""
    table = Table(title=title)
    table.add_column(columns[0], no_wrap=True, min_width=max((len(n) for n in names), default=0))
    for col in columns[1:]:
        table.add_column(col)
    return table


def millions(v: float) -> str:
    """``12.35M`` for 12,345,678 (MACs, parameters)."""
    return f"{v / 1e6:.2f}M"
