"""``ofakit agent``: run the remote profiling agent (:mod:`profilers.agent`) on a device.

On the device: ``ofakit agent serve --token-file F``; on the host: ``--device http://DEVICE:8470`` with the
same token in ``OFAKIT_AGENT_TOKEN``. The agent binds to loopback unless told otherwise (e.g. ``--host 0.0.0.0``
behind a trusted network or an SSH tunnel).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from pathlib import Path

import typer

from ofakit.cli.common import CliError, read_token
from profilers.agent.server import DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT, make_server

log = logging.getLogger(__name__)
MIN_MB = 0.01  # MiB: the smallest --max-mb accepted

agent_app = typer.Typer(no_args_is_help=True, help="Profiling agent for remote devices.")


@agent_app.callback()
def _agent() -> None:
    """Profiling agent for remote devices."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)  # one line, never wrapped
    return typer.Exit(code)


@agent_app.command()
def serve(host: str = typer.Option(DEFAULT_HOST, help="Address to bind; loopback by default."),
          port: int = typer.Option(DEFAULT_PORT, min=0, max=65535, help="TCP port (0: any free port)."),
          token_file: Path = typer.Option(..., "--token-file", help="File holding the shared secret clients send."),
          max_mb: float = typer.Option(64.0, "--max-mb", help="Largest artifact accepted, in MiB."),
          max_connections: int = typer.Option(DEFAULT_MAX_CONNECTIONS, min=1, max=1024,
                                              help="Connections served at once (each holds a thread); "
                                                   "more are answered 503.")) -> None:
    """Serve measurements of uploaded ONNX / mlpackage / engine artifacts until Ctrl-C."""
    if not host.strip():
        raise _fail("--host '' would listen on every interface; allowed: an address such as 127.0.0.1 (the "
                    "default) or, deliberately, 0.0.0.0")
    try:
        token = read_token(token_file)
    except CliError as exc:
        raise _fail(str(exc)) from None
    if not MIN_MB <= max_mb <= 1 << 20:  # below ~10 KiB not even the smallest subnet's ONNX file fits
        raise _fail(f"--max-mb={max_mb} must be a number of MiB from {MIN_MB} to {1 << 20}")
    if not _is_loopback(host):
        log.warning("binding to non-loopback address %s: anyone on that network who has the token can run "
                    "measurements; prefer an SSH tunnel or a trusted network", host)
    try:
        server = make_server(host, port, token, max_bytes=max(1, int(max_mb * 2**20)), max_connections=max_connections)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except socket.gaierror as exc:  # not an address or a name this machine resolves: bad input
        raise _fail(f"--host {host!r} is not an address of this machine: {exc.strerror or exc}") from None
    except OSError as exc:  # in use, or not permitted: the machine's state, not the input
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
    _stop_on_signals()
    typer.echo(f"ofakit agent listening on {server.url} (runtimes: {', '.join(server.formats) or 'none'}; "
               f"max artifact {max_mb:g} MiB); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("agent stopped")
    finally:
        server.server_close()


def _stop(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the agent cleanly, also when it was started in the background: a
    non-interactive shell starts ``cmd &`` with SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
