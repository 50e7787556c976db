"""`python -m llm.sidecar`: serve the dashboard and relay a run's records (docs/dashboard.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from llm.errors import fail
from llm.sidecar.app import create_app
from llm.sidecar.state import LOOPBACK_NAMES

CHECKOUT = Path(__file__).resolve().parents[2]
TOKEN_VARIABLE = "LLM_DASHBOARD_TOKEN"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llm.sidecar", description=__doc__)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help=f"address to bind; any but loopback needs {TOKEN_VARIABLE} set (default: %(default)s)",
    )
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free one (default: %(default)s)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs are (default: runs)")
    parser.add_argument(
        "--dashboard-dist",
        type=Path,
        default=CHECKOUT / "dashboard" / "dist",
        help="the built dashboard (default: dashboard/dist of this checkout)",
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/#token={token}"


async def serve(app: web.Application, *, host: str, port: int, token: str, port_file: Path | None) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as err:
        await runner.cleanup()
        fail(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port (0 picks a free one)")
    bound = runner.addresses[0][1]
    if port_file is not None:  # before the line below: whoever read the line finds the file complete
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(f"{bound}\n")
        partial.replace(port_file)
    print(f"dashboard: {url(host, bound, token)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    given = os.environ.get(TOKEN_VARIABLE) or None
    if given is None and not is_loopback(args.host):
        fail(
            f"--host {args.host} is reachable from other machines: set {TOKEN_VARIABLE} to a secret first, "
            "or keep 127.0.0.1 and use an SSH tunnel (ssh -L 8765:127.0.0.1:8765 HOST)"
        )
    token = given or secrets.token_urlsafe(24)
    logging.basicConfig(level=logging.INFO, format="sidecar %(levelname)s: %(message)s", stream=sys.stderr)
    dist = args.dashboard_dist if (args.dashboard_dist / "index.html").is_file() else None
    app = create_app(
        runs_dir=args.runs_dir,
        token=token,
        dist=dist,
        allowed_hosts=LOOPBACK_NAMES if is_loopback(args.host) else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(app, host=args.host, port=args.port, token=token, port_file=args.port_file))


if __name__ == "__main__":
    main()
