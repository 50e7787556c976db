"""--checkpoint-async: the loop waits only for a copy of the states; the file written later from that copy
has the bytes a synchronous save would have written at the same step, however training went on meanwhile.

The snapshot itself (storage sharing, attributes, shared objects, buffers kept from save to save), then a
real DeepSpeed engine (one process) whose background writes are held until two more optimizer steps have
changed every weight.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from llm.train.async_save import Snapshot
from tests.helpers import CPU_CONFIG, REPO, child_env


def _state() -> dict[str, Any]:
    flat = torch.arange(12, dtype=torch.float32)  # as ZeRO's flat buffer, with views into it
    weights: OrderedDict[str, torch.Tensor] = OrderedDict(wte=torch.randn(4, 3), pos=torch.randn(2, 3))
    weights["lm_head"] = weights["wte"]  # tied: one storage under two names
    weights._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    betas = (0.9, 0.95)
    return {
        "module": weights,
        "partitions": [flat[:6].view(2, 3), flat[6:]],
        "param": torch.nn.Parameter(torch.ones(3)),
        "optimizer": {"param_groups": [{"betas": betas, "params": [0]}, {"betas": betas, "params": [1]}]},
        "client": {"step": 7, "sampler": {"samples_drawn": [1, 2]}},
    }


def _bytes(obj: Any) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def _change_in_place(state: dict[str, Any]) -> None:
    for tensor in (state["module"]["wte"], state["module"]["pos"], state["partitions"][1]):
        tensor.mul_(-3).add_(1)
    with torch.no_grad():
        state["param"].add_(5)
    state["client"]["sampler"]["samples_drawn"].append(3)


def test_a_snapshot_saves_the_bytes_of_the_state_when_taken_and_reuses_its_buffers() -> None:
    state = _state()
    expected = _bytes(state)
    snapshot = Snapshot()
    first = snapshot.take("mp_rank_00_model_states.pt", state)
    _change_in_place(state)  # training goes on while the copy is written
    assert _bytes(first) == expected  # same storages shared, same attributes, same pickle
    assert first["module"]["lm_head"] is first["module"]["wte"]
    assert isinstance(first["param"], torch.nn.Parameter)
    held = snapshot.host_bytes()
    assert held == (4 * 3 + 2 * 3 + 12 + 3) * 4  # each storage once: tied and views not copied twice

    pointers = {t.untyped_storage().data_ptr() for t in (first["module"]["wte"], first["partitions"][0])}
    second = snapshot.take("mp_rank_00_model_states.pt", state)  # the next save of the same file
    assert _bytes(second) == _bytes(state) != expected
    assert {
        t.untyped_storage().data_ptr() for t in (second["module"]["wte"], second["partitions"][0])
    } == pointers
    assert snapshot.host_bytes() == held  # no new host memory for a file saved before


SCRIPT = """
import json, sys, threading
from pathlib import Path
import torch
from llm.checkpoints.catalogue import is_complete_checkpoint, verify_or_fail
from llm.ds_config import load_ds_config
from llm.model.config import from_preset
from llm.model.gpt import GPT
from llm.storage import sha256_file
from llm.train import checkpoint
from llm.train.async_save import BackgroundSave
from llm.train.collectives import Collectives
from llm.train.engine import build_engine, init_distributed

config, tmp = Path(sys.argv[1]), Path(sys.argv[2])
info = init_distributed(timeout_s=60)
settings = load_ds_config(config, world_size=1, cuda_available=False, max_steps=10)
cfg = from_preset("tiny", vocab_size=256, block_size=32)
torch.manual_seed(0)
engine = build_engine(GPT(cfg), settings)
batches = torch.randint(0, 256, (4, 2, settings.micro_batch, 32))

def step(i):
    _, loss = engine(batches[i][0], batches[i][1]); engine.backward(loss); engine.step()

state = dict(tokens_seen=64, sampler={"samples_drawn": 2}, model={"n_layer": 2}, config_hash="c",
             tokenizer_hash="t", zero_stage=settings.zero_stage, precision="fp32", code={})
collectives = Collectives(timeout_s=60)
def save(root, background=None):
    return checkpoint.save_checkpoint(engine, root, step=1, state=state, dist_info=info,
                                      collectives=collectives, keep_last=2, background=background)

step(0)
sync_folder = save(tmp / "sync")

gate, writing = threading.Event(), threading.Event()
real_write = checkpoint.ShardWriter.write
def held_write(self, deferred):
    writing.set()
    gate.wait()
    real_write(self, deferred)
checkpoint.ShardWriter.write = held_write
background = BackgroundSave(Collectives(timeout_s=60, force_group=True))
returned = save(tmp / "async", background)
writing.wait()
folder = tmp / "async" / sync_folder.name
listed = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
before = {"returned": returned, "folder_files": listed,
          "complete": is_complete_checkpoint(folder), "latest": (tmp / "async" / "latest").exists(),
          "committed": background.committed()}
weights_at_save = [p.detach().clone() for p in engine.module.parameters()]
step(1); step(2)  # every weight and Adam moment changes while the save is held
changed = min((a - p).abs().max().item() for a, p in zip(weights_at_save, engine.module.parameters()))
gate.set()
background.wait()
committed = [(s, str(f)) for s, f in background.committed()]
verify_or_fail(folder)
names = sorted(p.name for p in sync_folder.glob("*.pt") if not p.name.startswith("rng"))
print(json.dumps({
    "before": {**before, "committed": [list(c) for c in before["committed"]]},
    "changed": changed, "committed": committed, "latest": (tmp / "async" / "latest").read_text(),
    "same_bytes": {n: sha256_file(sync_folder / n) == sha256_file(folder / n) for n in names},
    "rng_file": (folder / "rng_state_rank0.pt").is_file(),
}))
"""


def test_training_goes_on_while_a_save_is_written_and_the_file_holds_the_state_at_the_save(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CPU_CONFIG), str(tmp_path)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    before = out["before"]
    # save_checkpoint returned before anything was written or committed
    assert before["returned"] is None
    assert before["folder_files"] == [] and not before["complete"] and not before["latest"]
    assert before["committed"] == []
    assert out["changed"] > 0  # the two steps did move every weight
    assert out["committed"] == [[1, str(tmp_path / "async" / "step_00000001")]]
    assert out["latest"] == "step_00000001" and out["rng_file"]
    assert out["same_bytes"] and all(out["same_bytes"].values()), out["same_bytes"]
