"""Sample runs for looking at the dashboard without training: schema-valid records, written or streamed.

    # a finished run folder (metrics.jsonl + run.json) for `python -m llm.sidecar --runs-dir RUNS`
    .venv/bin/python dashboard/scripts/sample_run.py write RUNS --name sample-a --steps 3000 --fp16
    # a live run: streams to a sidecar's trainer socket as a trainer would, and obeys its commands
    .venv/bin/python dashboard/scripts/sample_run.py live RUNS --name live --url http://127.0.0.1:8765 \
        --token TOKEN --steps 2000 --rate 10

The curves have what the page must show: a loss spike, a NaN loss, fp16 overflows (skipped steps, the
loss scale halving), evaluations, per-device load, per-layer norms and a weight histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llm.telemetry.schema import (
    ControlEvent,
    DeviceStats,
    EvalEvent,
    Event,
    Histogram,
    LayerStats,
    ParamsEvent,
    RunStateEvent,
    SystemEvent,
    TrainEvent,
)

LAYERS = ["wte.weight", "wpe.weight"] + [
    f"blocks.{i}.{part}.weight"
    for i in range(6)
    for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
]
NUMEL = {
    name: (8192 * 384 if "wte" in name else 256 * 384 if "wpe" in name else 384 * 1152) for name in LAYERS
}
SPIKE_STEP = 1234
NAN_STEP = 1777


@dataclass
class Sample:
    run_id: str
    steps: int
    fp16: bool
    gpus: bool
    seed: int
    start: float
    seq: int = 0
    step: int = 0
    loss_scale: float = 65536.0
    good_steps: int = 0
    skipped: int = 0
    lr_scale: float = 1.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    def _base(self) -> dict[str, object]:
        self.seq += 1
        return {"run_id": self.run_id, "seq": self.seq - 1, "time": self.start + self.step * 0.9}

    def started(self) -> Event:
        return RunStateEvent(**self._base(), state="started", step=0)  # type: ignore[arg-type]

    def lr(self) -> float:
        warm = 100
        peak = 6e-4
        if self.step < warm:
            return peak * (self.step + 1) / warm
        progress = (self.step - warm) / max(1, self.steps - warm)
        return self.lr_scale * (6e-5 + 0.5 * (peak - 6e-5) * (1 + math.cos(math.pi * min(1.0, progress))))

    def next_step(self) -> Iterator[Event]:
        """One optimizer step: its train record, and the eval / system / params records due at it."""
        self.step += 1
        s, r = self.step, self.rng
        loss = 2.1 + 7.0 * math.exp(-s / 280) + 0.35 * math.exp(-s / 1500) + r.gauss(0, 0.06)
        if s == SPIKE_STEP:
            loss += 2.5
        if s == NAN_STEP:
            loss = float("nan")
        # DeepSpeed's dynamic scaler: halve on an overflow (the step is skipped), double after
        # scale_window = 1000 steps without one
        if self.fp16 and s % 1377 in (0, 611):
            self.skipped += 1
            self.loss_scale = max(1.0, self.loss_scale / 2)
            self.good_steps = 0
        elif self.fp16:
            self.good_steps += 1
            if self.good_steps == 1000:
                self.loss_scale *= 2
                self.good_steps = 0
        tps = (8829 if self.gpus else 1400) * (1 + r.gauss(0, 0.02))
        yield TrainEvent(
            **self._base(),  # type: ignore[arg-type]
            step=s,
            tokens_seen=s * 16 * 1024,
            loss=loss,
            lr=self.lr(),
            grad_norm=0.4 + 3 * math.exp(-s / 200) + abs(r.gauss(0, 0.05)),
            loss_scale=self.loss_scale if self.fp16 else 1.0,
            skipped_steps=self.skipped,
            step_time=0.9,
            tokens_per_s=tps,
            tflops=tps * 6 * 20e6 / 1e12,
            mfu=0.388 * tps / 8829 if self.gpus else 0.52 * tps / 1400,
            memory_gb=20.1 if self.gpus else None,
        )
        if s % 250 == 0 or s == self.steps:
            val = 2.2 + 7.0 * math.exp(-s / 280) + 0.4 * math.exp(-s / 1500)
            yield EvalEvent(**self._base(), step=s, val_loss=val, val_bpb=val / math.log(2) / 3.47)  # type: ignore[arg-type]
        if s % 25 == 0:
            yield SystemEvent(**self._base(), step=s, devices=self.devices())  # type: ignore[arg-type]
        if s % 50 == 0:
            yield self.params()

    def devices(self) -> list[DeviceStats]:
        r = self.rng
        if self.gpus:
            return [
                DeviceStats(
                    node="gpu-box",
                    rank=i,
                    kind="gpu",
                    index=i,
                    name="NVIDIA GeForce RTX 3090",
                    utilization=min(100.0, 94 + r.gauss(0, 3)),
                    memory_used_gb=20.1 + 0.2 * i,
                    memory_total_gb=24.0,
                    temperature_c=68 + 3 * i + r.gauss(0, 1),
                    power_w=325 + r.gauss(0, 8),
                )
                for i in range(2)
            ]
        return [
            DeviceStats(
                node="laptop",
                rank=i,
                kind="cpu",
                index=i,
                name="AMD EPYC",
                utilization=48 + r.gauss(0, 4),
                memory_used_gb=1.6,
                memory_total_gb=16.0,
            )
            for i in range(2)
        ]

    def params(self) -> Event:
        s, r = self.step, self.rng
        layers = []
        for depth, name in enumerate(LAYERS):
            grad = (0.05 + 0.4 * math.exp(-s / 300)) * (1.6 if "c_attn" in name else 1.0) / (1 + depth / 10)
            if s == SPIKE_STEP // 50 * 50 and "blocks.3" in name:
                grad *= 12
            layers.append(
                LayerStats(
                    name=name,
                    numel=NUMEL[name],
                    weight_norm=20 + depth + s / 500,
                    grad_norm=grad * (1 + r.gauss(0, 0.05)),
                    update_ratio=1e-3
                    * math.exp(-s / 2000)
                    * (1 + r.gauss(0, 0.1))
                    * (2 if "wte" in name else 1),
                )
            )
        histogram = None
        if s % 200 == 0:
            width = 0.02 + s / 1e5
            edges = [-4 * width + i * (8 * width / 40) for i in range(41)]
            centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
            counts = [
                int(442368 * math.exp(-((c / width) ** 2) / 2) * (8 * width / 40) / (width * 2.5066))
                for c in centres
            ]
            histogram = Histogram(name="blocks.0.attn.c_attn.weight", edges=edges, counts=counts)
        return ParamsEvent(**self._base(), step=s, layers=layers, histogram=histogram)  # type: ignore[arg-type]

    def state(self, state: str, detail: str = "") -> Event:
        return RunStateEvent(**self._base(), state=state, step=self.step, detail=detail)  # type: ignore[arg-type]

    def ack(
        self, command_id: str, action: str, status: str, detail: str = "", lr_scale: float | None = None
    ) -> Event:
        return ControlEvent(
            **self._base(),  # type: ignore[arg-type]
            command_id=command_id,
            action=action,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            step=self.step,
            lr_scale=lr_scale,
            detail=detail,
        )


def run_dir(runs: Path, name: str, steps: int) -> Path:
    folder = runs / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"run_id": name, "settings": {"max_steps": steps}}))
    return folder


def write(args: argparse.Namespace) -> None:
    start = time.time() - args.steps * 0.9 - args.age_s
    sample = Sample(args.name, args.steps, args.fp16, not args.cpu, args.seed, start)
    folder = run_dir(args.runs, args.name, args.steps)
    with (folder / "metrics.jsonl").open("w") as out:
        out.write(sample.started().model_dump_json() + "\n")
        while sample.step < args.steps:
            for event in sample.next_step():
                out.write(event.model_dump_json() + "\n")
        if not args.unfinished:
            out.write(sample.state("finished", "max_steps reached").model_dump_json() + "\n")
    print(f"{folder}: {sample.seq} records, {args.steps} steps")


async def live(args: argparse.Namespace) -> None:
    """Train (pretend) at --rate steps a second whether or not the sidecar is there, as rank 0 does; on
    every (re)connection send what the sidecar lacks after its `welcome`, then the live records."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    sample = Sample(args.name, args.steps, args.fp16, not args.cpu, args.seed, time.time())
    folder = run_dir(args.runs, args.name, args.steps)
    log = (folder / "metrics.jsonl").open("w")
    events: list[str] = []  # events[seq]: the record's JSON
    state = {"paused": False, "done": False}

    def emit(event: Event) -> None:
        line = event.model_dump_json()
        log.write(line + "\n")
        log.flush()
        events.append(line)

    def obey(message: dict[str, object]) -> None:
        cid, action = str(message["id"]), str(message["action"])
        paused = state["paused"]
        if state["done"]:
            return
        if action == "pause" and not paused:
            state["paused"] = True
            emit(sample.ack(cid, action, "applied"))
            emit(sample.state("paused"))
        elif action == "resume" and paused:
            state["paused"] = False
            emit(sample.ack(cid, action, "applied"))
            emit(sample.state("unpaused"))
        elif action in ("pause", "resume"):
            emit(sample.ack(cid, action, "rejected", "already paused" if paused else "not paused"))
        elif action == "save":
            emit(sample.ack(cid, action, "applied"))
            emit(sample.state("checkpoint_saved", f"checkpoint at step {sample.step}"))
        elif action == "set_lr":
            sample.lr_scale = float(str(message["lr_scale"]))
            emit(sample.ack(cid, action, "applied", lr_scale=sample.lr_scale))
        elif action == "stop":
            emit(sample.ack(cid, action, "applied"))
            emit(sample.state("checkpoint_saved", f"checkpoint at step {sample.step}"))
            emit(sample.state("stopped", "stopped from the dashboard"))
            state["done"] = True

    async def train() -> None:
        emit(sample.started())
        while sample.step < args.steps and not state["done"]:
            await asyncio.sleep(1 / args.rate)
            if not state["paused"] and not state["done"]:
                for event in sample.next_step():
                    emit(event)
        if not state["done"]:
            emit(sample.state("finished", "max_steps reached"))
            state["done"] = True

    async def report() -> None:
        ws_url = args.url.replace("http", "ws", 1).rstrip("/") + "/ws/trainer"
        hello = {
            "kind": "hello",
            "run_id": args.name,
            "run_dir": str(folder),
            "max_steps": args.steps,
            "world_size": 2,
        }
        while True:
            try:
                async with connect(
                    ws_url, additional_headers={"Authorization": f"Bearer {args.token}"}
                ) as ws:
                    await ws.send(json.dumps(hello))
                    sent = int(json.loads(await ws.recv())["last_seq"]) + 1
                    while True:
                        while sent < len(events):
                            await ws.send('{"kind": "event", "event": ' + events[sent] + "}")
                            sent += 1
                        if state["done"]:
                            return
                        try:
                            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.05))
                        except TimeoutError:
                            continue
                        if message.get("kind") == "control":
                            print("command", message, flush=True)
                            obey(message)
            except (OSError, ConnectionClosed) as error:
                print("sidecar gone:", error, flush=True)
                await asyncio.sleep(1)

    await asyncio.gather(train(), report())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["write", "live"])
    parser.add_argument("runs", type=Path, help="the runs folder (the sidecar's --runs-dir)")
    parser.add_argument("--name", default="sample")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--fp16", action="store_true", help="dynamic loss scaling with overflow skips")
    parser.add_argument("--cpu", action="store_true", help="CPU ranks instead of two GPUs")
    parser.add_argument(
        "--unfinished", action="store_true", help="no final state (the sidecar shows crashed)"
    )
    parser.add_argument("--age-s", type=float, default=3600.0, help="write: how long ago it ended")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default="http://127.0.0.1:8765", help="live: the sidecar")
    parser.add_argument("--token", default="", help="live: the sidecar's token")
    parser.add_argument("--rate", type=float, default=10.0, help="live: steps a second")
    args = parser.parse_args()
    if args.mode == "write":
        write(args)
    else:
        asyncio.run(live(args))


if __name__ == "__main__":
    main()
