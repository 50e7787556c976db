"""Train a GPT through DeepSpeed: `deepspeed launch/train.py --deepspeed ds_configs/3090.json`.

Thin on purpose: parse and validate everything before any rank starts work, then wire the stages.
`python launch/train.py ...` without the launcher runs as a single process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llm.errors import UsageError, fail_before_ranks_meet


def main(argv: list[str]) -> int:
    import os

    if os.environ.get("DS_ACCELERATOR") == "cpu":
        # DeepSpeed's launcher sets CUDA_VISIBLE_DEVICES for every rank even on the CPU accelerator:
        # a CPU run must not see (or default to) a GPU the machine happens to have
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from llm.launchers import adopt_launcher_env
    from llm.train.plan import Plan  # torch, not DeepSpeed: after argparse's --help

    try:
        adopt_launcher_env()  # OpenMPI's or srun's rank variables, before anything reads WORLD_SIZE
        plan = Plan.from_argv(argv)  # every check that needs no other rank: exit 2 before any work
    except UsageError as err:
        fail_before_ranks_meet(str(err), speaks=_prints_errors())
    gathered = plan.cfg.checkpoint_sync == "rsync" and int(os.environ.get("WORLD_SIZE", 1)) > 1
    resumed = plan.resume_manifest
    if resumed is not None and resumed.step >= plan.cfg.max_steps and not gathered:
        # (with --checkpoint-sync rsync only rank 0 knows: every rank learns it in the session)
        if _prints_errors():
            print(
                f"{plan.resume_from} is at step {resumed.step}, --max-steps is "
                f"{plan.cfg.max_steps}: nothing to train; raise --max-steps to continue the run",
                flush=True,
            )
        return 0
    import torch

    if not torch.cuda.is_available():  # what DeepSpeed would detect, said up front: no warning banner
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from llm.train.session import run  # imports DeepSpeed

    return run(plan)


def _prints_errors() -> bool:
    import os

    return os.environ.get("LOCAL_RANK", "0") == "0"  # one line per node, not one per rank


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        from llm.config import build_parser

        build_parser().print_help()
        raise SystemExit(0)
    code: int | str | None
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit_:  # an error already said (exit 2) leaves the same way as success
        code = exit_.code
    except BaseException:  # a crash still gets its traceback and a non-zero exit
        import traceback

        traceback.print_exc()
        code = 1
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    # Everything is written and closed by now (metrics, checkpoints, the reporter), on success and on
    # error. Leave without the interpreter's teardown: with several ranks it has aborted in native
    # code under load ("terminate called without an active exception" from a thread left joinable,
    # exit 134), failing a finished job or turning a usage error's exit 2 into a SIGABRT.
    from llm.telemetry.gpu_memory import write_reports

    write_reports()  # what atexit would have written (GPU_MEMORY_REPORT_DIR)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
