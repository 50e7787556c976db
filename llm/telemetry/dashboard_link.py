"""Where rank 0 finds the dashboard's sidecar: `--dashboard URL`, `LLM_DASHBOARD_URL`, or `auto`.

`auto` uses a sidecar already answering at 127.0.0.1:8765 (or at `LLM_DASHBOARD_URL` when that is
set: a loopback address with a port), or starts one there (its own process
group, so it outlives the run and the page stays up to look at the finished curves). The token comes
from `LLM_DASHBOARD_TOKEN`, else from RUNS_DIR/.dashboard-token (made once, mode 0600), so the runs
and the sidecar that one runs folder starts agree without anyone copying a token.

`python -m llm.telemetry.dashboard_link [--runs-dir runs]` does the same from a shell and prints the
page's URL (`make demo` runs it first).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from llm.errors import UsageError

DEFAULT_URL = "http://127.0.0.1:8765"
TOKEN_ENV = "LLM_DASHBOARD_TOKEN"
URL_ENV = "LLM_DASHBOARD_URL"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DashboardLink:
    url: str  # http://host:port
    token: str

    def page(self) -> str:
        return f"{self.url}/#token={self.token}"


def dashboard_setting(flag: str | None) -> str | None:
    return flag if flag is not None else os.environ.get(URL_ENV) or None


def check_dashboard_setting(flag: str | None) -> None:
    """Before launch: a named sidecar needs the token it printed."""
    setting = dashboard_setting(flag)
    if setting is None or setting == "auto":
        return
    if not setting.startswith(("http://", "https://")):
        raise UsageError(f"--dashboard {setting}: give the sidecar's URL (http://HOST:PORT) or 'auto'")
    if not os.environ.get(TOKEN_ENV):
        raise UsageError(
            f"--dashboard {setting}: set {TOKEN_ENV} to the token the sidecar printed (after #token= in "
            "its URL), or use --dashboard auto"
        )


def answers(url: str, *, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout_s) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def connect(flag: str | None, *, runs_dir: Path, log: Path) -> DashboardLink | None:
    """Rank 0: the sidecar to report to (started here for `auto` when none answers), or None."""
    setting = dashboard_setting(flag)
    if setting is None:
        return None
    if setting != "auto":
        return DashboardLink(setting.rstrip("/"), os.environ.get(TOKEN_ENV, ""))
    return start_or_find(runs_dir=runs_dir, log=log, url=os.environ.get(URL_ENV) or DEFAULT_URL)


def runs_token(runs_dir: Path) -> str:
    """LLM_DASHBOARD_TOKEN, else the runs folder's own token (created on first use, owner-only)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = runs_dir / ".dashboard-token"
    if not path.exists():
        runs_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def spawn_sidecar(
    runs_dir: Path,
    *,
    token: str,
    log: Path,
    port: int = 0,
    env: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> tuple[subprocess.Popen[bytes], int] | None:
    """`python -m llm.sidecar` on loopback in its own session, output appended to `log`.

    Returns it and its port once it listens (it writes the port to `log`'s `.port` file then; port 0
    picks a free one), or None when it exits or does not listen within `timeout_s`."""
    port_file = log.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "llm.sidecar", "--port", str(port), "--runs-dir", str(runs_dir)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--port-file", str(port_file)],
            env={**(os.environ if env is None else env), TOKEN_ENV: token},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not part of the caller's job: a training run may end before it
        )
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return process, int(port_file.read_text().strip())


def start_or_find(*, runs_dir: Path, log: Path, url: str = DEFAULT_URL) -> DashboardLink | None:
    """The sidecar at `url`, started (detached) when none answers; None if it cannot start."""
    url = url.rstrip("/")
    token = runs_token(runs_dir)
    if answers(url):
        return DashboardLink(url, token)
    started = spawn_sidecar(runs_dir, token=token, log=log, port=int(url.rsplit(":", 1)[1]))
    if started is None:
        print(
            f"warning: the dashboard did not start (see {log}); training goes on without it",
            file=sys.stderr,
            flush=True,
        )
        return None
    link = DashboardLink(url, token)
    print(f"dashboard: {link.page()} (sidecar pid {started[0].pid}, left running)", flush=True)
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm.telemetry.dashboard_link",
        description=f"Find or start the dashboard's sidecar at {DEFAULT_URL} (or {URL_ENV}) and print the "
        "page's URL.",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="runs the sidecar lists")
    args = parser.parse_args(argv)
    url = os.environ.get(URL_ENV) or DEFAULT_URL
    already = answers(url)
    link = start_or_find(runs_dir=args.runs_dir, log=args.runs_dir / "sidecar.log", url=url)
    if link is None:
        return 1
    if already:
        print(f"dashboard: {link.page()} (already running)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
