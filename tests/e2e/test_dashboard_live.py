"""The dashboard end to end: a real 2-rank CPU run through the deepspeed launcher, the real sidecar,
and the built page in Debian's Chromium (Playwright, never `playwright install`).

Assertions read the page's state (the step counter, the control status, the loss chart's data through
`Chart.getChart(canvas)`) and the run's own files, never pixels.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from llm.checkpoints.catalogue import checkpoint_problem, tag_for
from tests.helpers import (
    REPO,
    free_port,
    kill_tree,
    metrics,
    start_sidecar,
    start_train,
    tiny_args,
    train_losses,
    wait_for,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]

TOKEN = "e2e-token-0123456789abcdef"
DIST_TIMEOUT = 15  # s: the pause below outlasts it
# where the screenshots for docs/dashboard.md go when asked (DASHBOARD_SCREENSHOTS=docs/img)
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")

LOSS_STEPS_JS = """(runId) => {
  const canvas = document.querySelector('[data-testid="chart-loss"]');
  const chart = canvas && window.Chart && window.Chart.getChart(canvas);
  if (!chart) return null;
  const d = chart.data.datasets.find(
    (d) => d.series && d.series.runId === runId && d.series.key === 'loss' && d.series.role === 'raw');
  return d ? d.data.map((p) => p.x) : null;
}"""


def control_records(run_dir: Path, action: str) -> list[dict[str, Any]]:
    return [r for r in metrics(run_dir, "control") if r["action"] == action]


def click_and_wait_applied(page: Any, run_dir: Path, action: str) -> int:
    """Press a control; the page must show it applied; returns the step the run acknowledged."""
    before = len(control_records(run_dir, action))
    # the controls are on once the page knows the trainer reports to this sidecar (after a sidecar
    # restart, the page may reconnect before the trainer does)
    page.locator(f'[data-testid="control-{action}"]:not([aria-disabled="true"])').wait_for(timeout=120_000)
    page.get_by_test_id(f"control-{action}").click()
    if action == "stop":
        page.get_by_test_id("stop-confirm").click()
    status = page.get_by_test_id(f"control-status-{action}")
    if action != "stop":  # the page of a stopped run may show the run's end instead
        status.and_(page.locator('[data-phase="applied"]')).wait_for(timeout=120_000)
    wait_for(lambda: len(control_records(run_dir, action)) > before, timeout=120, what=f"{action} applied")
    record = control_records(run_dir, action)[-1]
    assert record["status"] == "applied", record
    return int(record["step"])


def shown_step(page: Any) -> int:
    return int(page.get_by_test_id("step-counter").get_attribute("data-step"))


def loss_steps(page: Any, run_id: str) -> list[float] | None:
    return page.evaluate(LOSS_STEPS_JS, run_id)  # type: ignore[no-any-return]


def test_a_live_two_rank_run_is_watched_and_steered_from_the_browser(browser: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / "live"
    sidecar, port = start_sidecar(runs, token=TOKEN, log=tmp_path / "sidecar.log")
    url = f"http://127.0.0.1:{port}"
    args = tiny_args(
        run_dir, "--max-steps", 100000, "--log-every", 1, "--eval-every", 25, "--eval-batches", 1,
        "--save-every", 100000, "--dist-timeout", DIST_TIMEOUT, "--dashboard", url, "--params-every", 2,
    )  # fmt: skip
    proc = start_train(args, nproc=2, log=tmp_path / "train.log", LLM_DASHBOARD_TOKEN=TOKEN)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(f"{url}/?run=live#token={TOKEN}")
        wait_for(lambda: len(metrics(run_dir, "train")) >= 5, timeout=600, what="5 steps", proc=proc)
        page.wait_for_function("() => document.querySelector('[data-testid=\"step-counter\"]')")

        # Pause: every rank holds at one step, longer than --dist-timeout, and the job lives on
        paused_at = click_and_wait_applied(page, run_dir, "pause")
        time.sleep(DIST_TIMEOUT + 5)
        assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
        steps = sorted(train_losses(run_dir))
        assert steps[-1] == paused_at, f"trained past the pause at {paused_at}: {steps[-5:]}"
        page.wait_for_function(
            f"() => document.querySelector('[data-testid=\"step-counter\"]')?.dataset.step === '{paused_at}'"
        )
        assert shown_step(page) == paused_at
        # the loss chart ends at the last step the trainer logged, each step once
        page.wait_for_function(f"() => ({LOSS_STEPS_JS})('live')?.at(-1) === {paused_at}")
        assert loss_steps(page, "live") == steps
        # the Model panel: a heatmap row per parameter and a column per `params` record (ZeRO-1's
        # partitions, summed over both ranks), and the histograms the records carried
        params = metrics(run_dir, "params")
        assert params and params[-1]["step"] == paused_at - paused_at % 2
        heatmap = page.get_by_test_id("chart-layers")
        cols = "document.querySelector('[data-testid=\"chart-layers\"]')?.dataset.cols"
        page.wait_for_function(f"() => {cols} === '{len(params)}'")
        assert heatmap.get_attribute("data-rows") == str(len(params[-1]["layers"]))
        shown = page.get_by_test_id("histogram-layer").locator("option").all_inner_texts()
        assert sorted(shown) == sorted({p["histogram"]["name"] for p in params})
        # the Hardware panel: both ranks' processes (psutil: no GPU here), sampled every 5 s, paused too
        system = metrics(run_dir, "system")
        assert len(system) >= 3, system  # the pause alone outlasts three sampling periods
        for record in system:
            devices = record["devices"]
            assert [(d["rank"], d["kind"]) for d in devices] == [(0, "cpu"), (1, "cpu")]
            assert all(0 < d["memory_used_gb"] < d["memory_total_gb"] for d in devices)
        rows = page.get_by_test_id("device-table").locator("tbody tr")
        assert [text.split()[:2] for text in rows.all_inner_texts()] == [["rank", "0"], ["rank", "1"]]
        if SHOTS:  # for docs/dashboard.md: the page as it opens on a desktop and on a phone
            page.screenshot(path=str(REPO / SHOTS / "dashboard-desktop.png"))
            phone = browser.new_page(viewport={"width": 375, "height": 812}, device_scale_factor=2)
            phone.goto(f"{url}/?run=live#token={TOKEN}")
            phone.wait_for_function(f"() => document.querySelector('[data-step=\"{paused_at}\"]')")
            time.sleep(1.0)  # the charts' first draw
            phone.screenshot(path=str(REPO / SHOTS / "dashboard-phone.png"))
            phone.close()

        # Resume: stepping goes on from the same step
        click_and_wait_applied(page, run_dir, "resume")
        wait_for(lambda: max(train_losses(run_dir)) >= paused_at + 3, timeout=300, what="steps after resume",
                 proc=proc)  # fmt: skip

        # Save now: a complete checkpoint at the acknowledged step
        saved_at = click_and_wait_applied(page, run_dir, "save")
        folder = run_dir / "checkpoints" / tag_for(saved_at)
        wait_for(lambda: checkpoint_problem(folder) is None, timeout=300, what=f"checkpoint {folder.name}")

        # Kill the sidecar mid-run and start another on the same port: the page reconnects and shows
        # the whole history, no gap, nothing twice
        kill_tree(sidecar)
        page.get_by_test_id("disconnected-banner").wait_for(timeout=60_000)
        time.sleep(3.0)  # the run goes on meanwhile: these steps reach the new sidecar from the file
        sidecar, _ = start_sidecar(runs, token=TOKEN, log=tmp_path / "sidecar2.log", port=port)
        page.get_by_test_id("disconnected-banner").wait_for(state="detached", timeout=120_000)
        paused_again = click_and_wait_applied(page, run_dir, "pause")
        page.wait_for_function(f"() => ({LOSS_STEPS_JS})('live')?.at(-1) === {paused_again}", timeout=120_000)
        assert loss_steps(page, "live") == sorted(train_losses(run_dir))

        # Stop (confirmed): a complete checkpoint, then every rank exits 0
        stopped_at = click_and_wait_applied(page, run_dir, "stop")
        assert proc.wait(timeout=300) == 0, (tmp_path / "train.log").read_text()[-3000:]
        last = run_dir / "checkpoints" / tag_for(stopped_at)
        assert checkpoint_problem(last, verify_hashes=True) is None
        states = [r["state"] for r in metrics(run_dir, "run_state")]
        assert states[-1] == "stopped" and "paused" in states and "unpaused" in states
        print(f"\npaused at {paused_at}, saved at {saved_at}, paused again at {paused_again}, "
              f"stopped at {stopped_at}")  # fmt: skip
    finally:
        page.close()
        kill_tree(proc)
        kill_tree(sidecar)


def test_training_is_the_same_with_the_sidecar_absent_or_killed(tmp_path: Path) -> None:
    """Three one-process runs of 30 steps: no dashboard; a dashboard URL where nothing listens; a
    sidecar killed at step 10. Same losses at every step, and a complete metrics.jsonl each time."""
    runs = tmp_path / "runs"
    common = ["--max-steps", "30", "--log-every", "1", "--eval-every", "30", "--eval-batches", "1",
              "--save-every", "30"]  # fmt: skip
    dead_port = free_port()  # nothing listens there
    outcomes = {}
    for name, extra, with_sidecar in (
        ("plain", [], False),
        ("absent", ["--dashboard", f"http://127.0.0.1:{dead_port}"], False),
        ("killed", [], True),
    ):
        run_dir = runs / name
        sidecar = None
        if with_sidecar:
            sidecar, port = start_sidecar(runs, token=TOKEN, log=tmp_path / "sidecar.log")
            extra = ["--dashboard", f"http://127.0.0.1:{port}"]
        proc = start_train(tiny_args(run_dir, *common, *extra), log=tmp_path / f"{name}.log",
                           LLM_DASHBOARD_TOKEN=TOKEN)  # fmt: skip
        try:
            if sidecar is not None:
                wait_for(lambda: len(metrics(run_dir, "train")) >= 10, timeout=300, what="step 10", proc=proc)  # noqa: B023
                os.killpg(sidecar.pid, signal.SIGKILL)
            assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        finally:
            kill_tree(proc)
            if sidecar is not None:
                kill_tree(sidecar)
        outcomes[name] = train_losses(run_dir)
        assert sorted(outcomes[name]) == list(range(1, 31))
        assert metrics(run_dir, "run_state")[-1]["state"] == "finished"
    assert outcomes["absent"] == outcomes["plain"]
    assert outcomes["killed"] == outcomes["plain"]
