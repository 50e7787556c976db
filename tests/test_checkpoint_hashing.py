"""A save hashes its files as they are written: nothing is read back on the step path, and the manifest
still holds every file's true sha256.

A real DeepSpeed engine (one process: ZeRO-0, ds_configs/cpu.json's ZeRO-1 on one rank) saves through
llm.train.checkpoint.save_checkpoint while every way of reading a file back to hash it counts its calls.
A file that DeepSpeed writes some other way is still hashed, by reading it back; and the checkpoint
loads, its hashes verified, into a fresh engine with the same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from llm.storage import sha256_file
from tests.helpers import CPU_CONFIG, REPO, child_env

SCRIPT = """
import json, sys
from pathlib import Path
import torch
import llm.storage.local as local
from llm.checkpoints.catalogue import verify_or_fail
from llm.ds_config import load_ds_config
from llm.model.config import from_preset
from llm.model.gpt import GPT
from llm.train import checkpoint
from llm.train.collectives import Collectives
from llm.train.engine import build_engine, dist_env, init_distributed

config, root, extra = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "extra"
info = init_distributed(timeout_s=60)
settings = load_ds_config(config, world_size=1, cuda_available=False, max_steps=10)
cfg = from_preset("tiny", vocab_size=256, block_size=32)
torch.manual_seed(0)
engine = build_engine(GPT(cfg), settings)
x, y = torch.randint(0, 256, (2, settings.micro_batch, 32))
_, loss = engine(x, y); engine.backward(loss); engine.step()

read_back = []
real = local.sha256_file
def counting(path):
    read_back.append(Path(path).name)
    return real(path)
local.sha256_file = counting

if extra:  # a file that does not go through DeepSpeed's checkpoint engine
    inner = engine.save_checkpoint
    def save_with_extra(save_dir, tag, **kw):
        out = inner(save_dir, tag=tag, **kw)
        (Path(save_dir) / tag / "written_aside.bin").write_bytes(b"aside" * 1000)
        return out
    engine.save_checkpoint = save_with_extra

state = dict(tokens_seen=64, sampler={"samples_drawn": 2}, model={"n_layer": 2}, config_hash="c",
             tokenizer_hash="t", zero_stage=settings.zero_stage, precision="fp32", code={})
folder = checkpoint.save_checkpoint(engine, root, step=1, state=state, dist_info=info,
                                    collectives=Collectives(timeout_s=60), keep_last=2)
saved_read_back = list(read_back)
local.sha256_file = real
verify_or_fail(folder)  # every size and sha256 against the manifest

torch.manual_seed(1)  # other initial weights: the load must bring the saved ones back
fresh = build_engine(GPT(cfg), settings)
checkpoint.load_checkpoint(fresh, folder, dist_info=info)
diff = max((a - b).abs().max().item() for a, b in zip(engine.module.parameters(), fresh.module.parameters()))
print(json.dumps({"read_back": saved_read_back, "folder": str(folder), "weights_diff": diff}))
"""


def _save(tmp_path: Path, *, extra: bool) -> dict[str, object]:
    root = tmp_path / ("extra" if extra else "plain") / "checkpoints"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CPU_CONFIG), str(root), "extra" if extra else "plain"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _manifest_files(folder: Path) -> dict[str, dict[str, object]]:
    return dict(json.loads((folder / "manifest.json").read_text())["files"])


def test_a_save_reads_nothing_back_and_its_manifest_holds_the_true_hashes(tmp_path: Path) -> None:
    result = _save(tmp_path, extra=False)
    folder = Path(str(result["folder"]))
    files = _manifest_files(folder)
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    assert sorted(files) == on_disk
    assert {"rng_state_rank0.pt", "mp_rank_00_model_states.pt"} <= set(files), files
    for name, entry in files.items():
        path = folder / name
        assert entry == {"sha256": sha256_file(path), "bytes": path.stat().st_size}, name
    assert result["read_back"] == [], result  # hashed on the way to disk, not read back
    assert result["weights_diff"] == 0.0, result  # and it loads, verified, to the same weights
    for name in files:  # the sha256 guards each file: its zip records go without CRC32 (not computed)
        if name.endswith(".pt"):
            with zipfile.ZipFile(folder / name) as archive:
                records = [info for info in archive.infolist() if info.file_size > 0]
            assert records and all(info.CRC == 0 for info in records), name


def test_a_file_written_outside_the_checkpoint_engine_is_read_back_and_hashed(tmp_path: Path) -> None:
    result = _save(tmp_path, extra=True)
    folder = Path(str(result["folder"]))
    files = _manifest_files(folder)
    aside = folder / "written_aside.bin"
    assert files["written_aside.bin"] == {"sha256": sha256_file(aside), "bytes": 5000}
    assert result["read_back"] == ["written_aside.bin"], result  # only that one
