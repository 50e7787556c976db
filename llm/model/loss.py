"""Cross-entropy over the vocabulary with the softmax's gradient taken in one pass.

`F.cross_entropy` runs log_softmax then nll_loss; its backward fills a (N, V) zero tensor, scatters
the targets into it, then runs log_softmax's backward over two more (N, V) tensors. The gradient has
a closed form, (softmax(logits) - onehot(target)) * g / n, so this backward turns the saved
log-probabilities into it in place: exp, scale, and one subtraction per row at the target. Measured
here (N = 2048 positions, V = 8192, fp32, 2 threads) forward + backward take ~70 ms against ~120 ms,
with one (N, V) tensor fewer alive; values and gradients match F.cross_entropy (tests/test_model.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

IGNORE = -1  # targets equal to this are left out of the mean (padding, or nothing to predict)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor) -> Tensor:
        log_probs = torch.log_softmax(logits, dim=-1)  # (N, V)
        valid = targets != IGNORE  # (N,)
        picked = torch.where(valid, targets, 0)  # (N,) a harmless index where ignored
        count = valid.sum()
        loss = -(log_probs.gather(1, picked[:, None]).squeeze(1) * valid).sum() / count
        ctx.save_for_backward(log_probs, picked, valid, count)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        # a second backward through the same graph (retain_graph) is refused by autograd: the saved
        # log-probabilities are changed in place below, which bumps their version
        log_probs, picked, valid, count = ctx.saved_tensors
        scale = torch.where(valid, grad / count, 0.0).to(log_probs.dtype)[:, None]  # (N, 1)
        grad_logits = log_probs.exp_().mul_(scale)  # softmax * g / n, (N, V)
        grad_logits.scatter_add_(1, picked[:, None], -scale)  # minus g / n at each target
        return grad_logits, None


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) targets, ignoring targets equal to -1.

    Same value and gradient as `F.cross_entropy(logits, targets, ignore_index=-1)` (NaN when every
    target is ignored, as there).
    """
    return _CrossEntropy.apply(logits, targets)  # type: ignore[no-any-return]
