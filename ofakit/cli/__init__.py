"""The ``ofakit`` command line: one module per command group (``zoo``/``parity``, ``train``, ``profile``,
``agent``, ``search``/``export``/``ship``, ``demo``); what they share (one-line errors, the agent token, the
status console) is in :mod:`ofakit.cli.common`."""

from __future__ import annotations

import logging

import typer

from ofakit.cli.agent import agent_app
from ofakit.cli.demo import demo
from ofakit.cli.profile import profile_app
from ofakit.cli.search import export, search, ship_cmd
from ofakit.cli.train import train
from ofakit.cli.zoo import parity, zoo_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ofa-kit: once-for-all elastic model kit.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(profile_app, name="profile")
app.add_typer(agent_app, name="agent")
app.command("parity")(parity)
app.command("train")(train)
app.command("search")(search)
app.command("export")(export)
app.command("ship")(ship_cmd)
app.command("demo")(demo)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # import-time version notices, not our problems
    app()
