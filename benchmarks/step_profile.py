"""Where a training step's time goes: torch.profiler over steady-state steps, by phase and by op.

Used by `benchmarks/trainer_vs_plain.py --profile`. The baselines mark their phases themselves
(`phase(...)`, free when no profile runs); the trainer is profiled in its own process without
touching llm/: this file, run as a script, wraps the engine's forward / backward / step, the batch
sampler, the stop-flag collective and the train-record logging in named ranges, then runs
launch/train.py's main with the profiler on:

    python benchmarks/step_profile.py --out trainer.json --warmup 5 --steps 10 -- <launch/train.py flags>
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch.profiler import ProfilerActivity, profile, record_function, schedule

PHASE = "phase: "
_enabled = False


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """A named range in the profile while one runs; nothing otherwise."""
    if not _enabled:
        yield
        return
    with record_function(PHASE + name):
        yield


@contextlib.contextmanager
def profiling(*, warmup: int, steps: int) -> Iterator[Any]:
    """A CPU profiler that records `steps` steps after `warmup`; call `.step()` after every step."""
    global _enabled
    _enabled = True
    try:
        with profile(
            activities=[ProfilerActivity.CPU],
            schedule=schedule(wait=0, warmup=warmup, active=steps, repeat=1),
        ) as prof:
            yield prof
    finally:
        _enabled = False


def profile_steps(step: Callable[[], Any], *, warmup: int, steps: int, top: int = 30) -> dict[str, Any]:
    """Run `step` warmup + steps times under the profiler; the breakdown of the recorded steps."""
    with profiling(warmup=warmup, steps=steps) as prof:
        for _ in range(warmup + steps):
            step()
            prof.step()
    return breakdown(prof, steps=steps, top=top)


def breakdown(prof: Any, *, steps: int, top: int) -> dict[str, Any]:
    """Per step, in ms: the whole step, each phase (inclusive), the rest, and the top ops by self time."""
    averages = prof.key_averages()
    step_us = sum(e.cpu_time_total for e in averages if e.key.startswith("ProfilerStep"))
    phases = {
        e.key[len(PHASE) :]: e.cpu_time_total / steps / 1e3 for e in averages if e.key.startswith(PHASE)
    }
    ops = [e for e in averages if not e.key.startswith(("ProfilerStep", PHASE))]
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    step_ms = step_us / steps / 1e3
    return {
        "steps": steps,
        "step_ms": step_ms,
        "phases_ms": dict(sorted(phases.items(), key=lambda kv: -kv[1])),
        "outside_phases_ms": step_ms - sum(phases.values()),
        "ops_self_ms": step_ms and sum(e.self_cpu_time_total for e in ops) / steps / 1e3,
        "top_ops": [
            {"op": e.key, "self_ms": e.self_cpu_time_total / steps / 1e3, "calls": e.count / steps}
            for e in ops[:top]
        ],
    }


def _wrap(obj: Any, name: str, label: str, after: Callable[[], None] | None = None) -> None:
    """Replace obj.name with a version that runs inside phase(label) (and calls `after`)."""
    inner = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with phase(label):
            result = inner(*args, **kwargs)
        if after is not None:
            after()
        return result

    setattr(obj, name, wrapped)


def profile_trainer(out: Path, *, warmup: int, steps: int, train_args: list[str]) -> int:
    """Run launch/train.py's main in this process with the loop's pieces wrapped and the profiler on."""
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "launch"))
    import train as launch_train  # launch/train.py

    from llm.train import loop, session

    original_train = session.train

    def profiled_train(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        with profiling(warmup=warmup, steps=steps) as prof:
            engine = ctx.engine
            # one optimizer step per micro-batch here (accumulation 1): a profiler step per engine.step
            _wrap(engine, "forward", "forward")
            _wrap(engine, "backward", "backward")
            _wrap(engine, "step", "engine.step", after=prof.step)
            collectives = getattr(ctx, "collectives", None) or ctx.control  # the name before the rename
            _wrap(collectives, "any", "stop-flag collective")
            _wrap(loop.BatchSampler, "next_batch", "next_batch")
            _wrap(loop, "_log_train", "train record (loss.item, stats, emit)")
            result = original_train(ctx, *args, **kwargs)
        out.write_text(json.dumps(breakdown(prof, steps=steps, top=30), indent=2) + "\n")
        return result

    session.train = profiled_train
    return launch_train.main(train_args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="where the breakdown JSON goes")
    parser.add_argument("--warmup", type=int, default=5, help="steps before recording starts")
    parser.add_argument("--steps", type=int, default=10, help="steps recorded")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then launch/train.py's flags")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    raise SystemExit(profile_trainer(args.out, warmup=args.warmup, steps=args.steps, train_args=train_args))


if __name__ == "__main__":
    main()
