"""Sample text from a trained run: `python -m llm.generate --checkpoint runs/demo --prompt "def "`.

`--checkpoint` takes a run directory (its `checkpoints/latest`, else the newest complete checkpoint)
or one checkpoint folder (RUN_DIR/checkpoints/step_XXXXXXXX). Works for checkpoints of any ZeRO stage.
The prompt and its continuation go to stdout; everything else (DeepSpeed's logs) to stderr.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm.checkpoints.trained import TrainedModel

from llm.errors import UsageError, fail


@dataclass(frozen=True)
class Completion:
    prompt_ids: list[int]  # what the model was given (just <|endoftext|> for an empty prompt)
    new_ids: list[int]  # exactly max_new_tokens sampled tokens
    text: str  # the prompt followed by the continuation


def complete(
    trained: TrainedModel,
    prompt: str,
    *,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
) -> Completion:
    """Continue `prompt` by max_new_tokens tokens; a seed makes the sample repeatable on one device."""
    import torch

    from llm.model.sampling import generate

    tokenizer = trained.tokenizer
    # An empty prompt starts a document, as the training data does after each separator.
    prompt_ids = tokenizer.encode(prompt) if prompt else [tokenizer.eot_id]
    device = trained.model.wte.weight.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    out = generate(
        trained.model, idx, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
        generator=generator,
    )  # fmt: skip
    new_ids = out[0, len(prompt_ids) :].tolist()
    # Decoding prompt and continuation together keeps a character split across the boundary whole.
    text = tokenizer.decode(prompt_ids + new_ids) if prompt else tokenizer.decode(new_ids)
    return Completion(prompt_ids=prompt_ids, new_ids=new_ids, text=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm.generate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
        help="a run directory (its latest complete checkpoint) or one checkpoint folder",
    )  # fmt: skip
    parser.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample (default: 200)")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="0 = greedy; higher = more random (default: 0.8)"
    )
    parser.add_argument(
        "--top-k", type=int, default=50, help="sample among the k likeliest tokens, 0: all (default: 50)"
    )
    parser.add_argument("--seed", type=int, default=None, help="repeatable samples (default: random)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: must be 0 or more")
    if args.temperature < 0:
        raise UsageError(f"--temperature {args.temperature}: must be 0 (greedy) or more")
    if args.top_k < 0:
        raise UsageError(f"--top-k {args.top_k}: must be 1 or more, or 0 for no cut")


def _device(requested: str | None) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible; use --device cpu")
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        device = _device(args.device)
        from llm.checkpoints.trained import load_trained  # torch: after argparse's --help

        trained = load_trained(args.checkpoint, device=device)
        completion = complete(
            trained, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k or None, seed=args.seed,
        )  # fmt: skip
    except UsageError as err:
        fail(str(err))
    print(completion.text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
