"""--checkpoint-async: the loop is held only while each rank copies its states into host memory.

`Snapshot` copies every tensor a checkpoint file holds into host buffers kept from save to save (the
pages are touched once, on the first save, and reused), so that training may change the live tensors
while the copies are written. `BackgroundSave` then writes, hashes and commits each checkpoint on a
thread of its own, with collectives on a process group of its own (so they never interleave with the
loop's), while the next steps run. One save is in flight at a time: the next one, and the end of the
run, wait for it first. The commit protocol is the synchronous save's (llm/train/checkpoint.py):
`latest` moves only once every rank's files are written and hashed, so a crash at any moment leaves
the previous checkpoint as `latest`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llm.train.collectives import Collectives

_Copies = dict[tuple[str, int], torch.UntypedStorage]  # by the source storage's device and address


class Snapshot:
    """Copies of checkpoint state in host buffers, reused by the next save of a file with the same name.

    Storage sharing is kept as torch.save sees it: tensors that share a storage (tied weights, views of
    ZeRO's flat buffers) become views of one copied storage, so the file written from the copy has the
    bytes the original would have had. Containers are rebuilt; other values are deep-copied.
    """

    def __init__(self) -> None:
        self._pool: dict[str, list[torch.UntypedStorage]] = {}

    def take(self, key: str, obj: Any) -> Any:
        """A copy of `obj` (a state dict) safe from later in-place changes to its tensors."""
        buffers = self._pool.setdefault(key, [])
        copies: _Copies = {}
        out = self._copy(obj, buffers, copies, {})
        if any(device != "cpu" for device, _ in copies) and torch.cuda.is_available():
            torch.cuda.synchronize()  # the non-blocking copies from the GPU have landed
        return out

    def host_bytes(self) -> int:
        """Host memory the buffers hold."""
        return sum(s.nbytes() for buffers in self._pool.values() for s in buffers)

    def _copy(
        self, obj: Any, buffers: list[torch.UntypedStorage], copies: _Copies, memo: dict[int, Any]
    ) -> Any:
        """`memo` (copy.deepcopy's, by id): an object met twice is copied once, so the pickle of the copy
        shares what the original's shared (e.g. one `betas` tuple among the optimizer's groups)."""
        if id(obj) in memo:
            return memo[id(obj)]
        out: Any
        if isinstance(obj, torch.Tensor):
            out = self._copy_tensor(obj, buffers, copies)
        elif isinstance(obj, dict):  # its type and attributes too (a module's state_dict has _metadata)
            out = copy.copy(obj)
            for k, v in obj.items():
                out[k] = self._copy(v, buffers, copies, memo)
            if getattr(obj, "__dict__", None):
                out.__dict__ = copy.deepcopy(obj.__dict__, memo)
        elif type(obj) is list:
            out = [self._copy(v, buffers, copies, memo) for v in obj]
        elif type(obj) is tuple:
            out = tuple(self._copy(v, buffers, copies, memo) for v in obj)
        else:
            return copy.deepcopy(obj, memo)
        memo[id(obj)] = out
        memo.setdefault(id(memo), []).append(obj)  # as deepcopy does: the original outlives the memo
        return out

    def _copy_tensor(
        self,
        tensor: torch.Tensor,
        buffers: list[torch.UntypedStorage],
        copies: _Copies,
    ) -> torch.Tensor:
        source = tensor.untyped_storage()
        seen = (str(source.device), source.data_ptr())
        target = copies.get(seen)
        if target is None:
            index = len(copies)
            if index < len(buffers) and buffers[index].nbytes() == source.nbytes():
                target = buffers[index]
            else:
                target = torch.empty(
                    source.nbytes(), dtype=torch.uint8, pin_memory=source.device.type == "cuda"
                ).untyped_storage()
                if index < len(buffers):
                    buffers[index] = target
                else:
                    buffers.append(target)
            _bytes(target).copy_(_bytes(source), non_blocking=True)
            copies[seen] = target
        view = torch.empty(0, dtype=tensor.dtype).set_(
            target, tensor.storage_offset(), tensor.size(), tensor.stride()
        )
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(view, requires_grad=tensor.requires_grad)
        return view


def _bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


class BackgroundSave:
    """The finishing half of each save (write, hash, commit), on a thread, one save at a time."""

    def __init__(self, collectives: Collectives) -> None:
        self.collectives = collectives  # on a process group of its own, made by every rank alike
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._step = 0
        self._committed: list[tuple[int, Path]] = []
        self._lock = threading.Lock()

    def submit(self, step: int, finish: Callable[[], Path]) -> None:
        """Run `finish` (returns the committed folder) on a new thread; wait for the previous one first."""
        self.wait()

        def work() -> None:
            try:
                folder = finish()
            except BaseException as err:  # reported on the loop's thread by check() / wait()
                self._error = err
                return
            with self._lock:
                self._committed.append((step, folder))

        self._step = step
        self._thread = threading.Thread(target=work, name=f"checkpoint-{step}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the save in flight (if any) has ended; raises what made it fail."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.check()

    def check(self) -> None:
        """Raise, on the loop's thread, the error that ended a background save."""
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"the checkpoint of step {self._step} could not be saved: {err}") from err

    def committed(self) -> list[tuple[int, Path]]:
        """(step, folder) of the saves committed since the last call."""
        with self._lock:
            done, self._committed = self._committed, []
        return done
