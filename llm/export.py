"""Export a trained run as plain files: `python -m llm.export RUN_DIR OUT_DIR [--force]`.

OUT_DIR gets
    model.safetensors   fp32 weights; the tied lm_head.weight is wte.weight, stored once (as wte.weight)
    config.json         {"architecture": "llm-gpt", "model": <GPTConfig>, "parameters", "source": {...}}
    tokenizer.json      the run's tokenizer, byte for byte
which `load_exported(OUT_DIR)` (or safetensors.torch.load_model into a fresh GPT) opens without
DeepSpeed. RUN_DIR may also be one checkpoint folder (RUN_DIR/checkpoints/step_XXXXXXXX).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from llm.errors import UsageError, fail

if TYPE_CHECKING:
    from llm.checkpoints.trained import TrainedModel
    from llm.model.gpt import GPT

ARCHITECTURE = "llm-gpt"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
TIED = {"lm_head.weight": "wte.weight"}  # GPT ties its output head to the token embedding


def check_destination(out_dir: Path, *, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: a file, not a folder; give a folder to export into")
    if (out_dir / WEIGHTS).exists() and not force:
        raise UsageError(f"{out_dir / WEIGHTS} already exists; pass --force to overwrite it")


def export_trained(trained: TrainedModel, out_dir: Path) -> list[Path]:
    """Write the three files (each via a temporary name, then renamed); returns their paths."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = trained.model.state_dict()
    for alias, kept in TIED.items():
        assert state[alias].data_ptr() == state[kept].data_ptr(), f"{alias} is no longer tied to {kept}"
        del state[alias]  # safetensors refuses tensors that share memory; the loader re-ties it
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    config = {
        "architecture": ARCHITECTURE,
        "model": trained.config.model_dump(),
        "parameters": trained.model.num_parameters(),
        "dtype": "float32",
        "tied_weights": TIED,
        "source": {
            "run_dir": str(trained.run_dir),
            "checkpoint": trained.checkpoint.name,
            "step": trained.step,
        },
    }
    written = []
    for name, write in (
        (TOKENIZER, lambda tmp: shutil.copyfile(trained.tokenizer_path, tmp)),
        (CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n")),
        (WEIGHTS, lambda tmp: save_file(weights, str(tmp), metadata={"format": "pt"})),
    ):
        final = out_dir / name
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        write(tmp)
        os.replace(tmp, final)  # a reader sees the old file or the new one, never half of one
        written.append(final)
    return written


def load_exported(folder: Path) -> GPT:
    """A GPT (eval mode, CPU) from an export folder's config.json and model.safetensors."""
    from safetensors.torch import load_model

    from llm.model.config import stored_config
    from llm.model.gpt import GPT

    config = json.loads((folder / CONFIG).read_text())
    if config.get("architecture") != ARCHITECTURE:
        raise UsageError(
            f"{folder / CONFIG}: architecture is {config.get('architecture')!r}, not {ARCHITECTURE}"
        )
    model = GPT(stored_config(config["model"]))
    load_model(model, str(folder / WEIGHTS), strict=True)  # drops the tied alias from what it expects
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm.export", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="run directory or one checkpoint folder")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder to write the files into")
    parser.add_argument("--force", action="store_true", help=f"overwrite an existing {WEIGHTS}")
    parser.add_argument(
        "--format", choices=("llm", "hf"), default="llm",
        help="llm: our own files, read by load_exported (default); hf: a folder Hugging Face "
        "transformers opens with AutoModelForCausalLM / AutoTokenizer (learned positions as GPT-2, "
        "rope as GPT-NeoX; needs pip install -e '.[hf]')",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_destination(args.out_dir, force=args.force)
        from llm.checkpoints.trained import load_trained

        trained = load_trained(args.run)
        if args.format == "hf":
            from llm.hf_export import export_hf

            written = export_hf(trained, args.out_dir)
        else:
            written = export_trained(trained, args.out_dir)
    except UsageError as err:
        fail(str(err))
    print(
        f"exported {trained.checkpoint} (step {trained.step}, "
        f"{trained.model.num_parameters():,} parameters) to {args.out_dir}:"
    )
    for path in written:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
