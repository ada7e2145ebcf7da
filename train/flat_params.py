"""One contiguous buffer per module for its trainable parameters, and one for their gradients.

QMIX's networks are small (about 25k weights in some 20 tensors on simple_spread), so an
optimizer step over the separate tensors is dominated by per-tensor overhead: torch's RAdam ran
about 1.6 ms per step that way, longer than the agent network's whole forward pass over a batch.
`FlatParameters` re-seats every parameter of a module as a view into one flat tensor, and every
gradient as a view into a second one, so that

- the optimizer steps one tensor per module (the math is torch's own optimizer, unchanged);
- the global gradient norm is one reduction, and clipping one multiply;
- zeroing the gradients is one fill (autograd accumulates into the existing views in place).

The modules keep their ordinary parameters, state dicts and ``load_state_dict`` (which copies into
the views), so checkpoints, exports and target-network copies see no difference. One buffer per
module, not one for all: a module's saved state dict then holds only its own storage.
`flatten_optimizer_state` converts an optimizer state saved per tensor (runs written before the
buffers existed) into the flat layout, so those runs resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class FlatParameters:
    """The trainable parameters of ``modules`` as views of one flat tensor per module.

    ``tensors`` are the flat parameter tensors (leaves whose ``.grad`` is the flat gradient):
    what the optimizer steps. Gradients must be zeroed with `zero_grad` (never set to None: the
    views must stay the gradients autograd accumulates into).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.tensors: list[torch.Tensor] = []
        self.sizes: list[list[int]] = []
        """Per flat tensor, the element counts of the parameters it holds, in order."""
        for module in modules:
            params = [p for p in module.parameters() if p.requires_grad]
            if not params:
                continue
            total = sum(p.numel() for p in params)
            flat = torch.empty(total, dtype=params[0].dtype)
            grad = torch.zeros(total, dtype=params[0].dtype)
            offset = 0
            for p in params:
                n = p.numel()
                flat[offset : offset + n].copy_(p.detach().reshape(-1))
                p.data = flat[offset : offset + n].view_as(p)
                p.grad = grad[offset : offset + n].view_as(p)
                offset += n
            flat.requires_grad_(True)
            flat.grad = grad
            self.tensors.append(flat)
            self.sizes.append([p.numel() for p in params])

    def zero_grad(self) -> None:
        for t in self.tensors:
            assert t.grad is not None
            t.grad.zero_()

    def grad_norm(self) -> torch.Tensor:
        """The global L2 norm of every gradient (a 0-d tensor)."""
        norms = [torch.linalg.vector_norm(t.grad) for t in self.tensors if t.grad is not None]
        return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Scale the gradients so their global norm is at most ``max_norm`` (as torch's
        ``clip_grad_norm_``: factor ``max_norm / (norm + 1e-6)`` when below 1). Returns the norm
        before clipping."""
        norm = self.grad_norm()
        factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for t in self.tensors:
            assert t.grad is not None
            t.grad.mul_(factor)
        return norm


def flatten_optimizer_state(saved: Mapping[str, Any], sizes: Sequence[Sequence[int]]) -> dict:
    """An optimizer state dict saved over the separate parameters, in the flat layout.

    ``sizes`` are `FlatParameters.sizes`. A state already in the flat layout is returned as is.
    Per-parameter tensors of each buffer's parameters are concatenated in order; scalars (the step
    count, equal for every parameter) are taken from the buffer's first parameter.
    """
    groups = saved["param_groups"]
    n_saved = sum(len(g["params"]) for g in groups)
    if n_saved == len(sizes):
        return dict(saved)
    if n_saved != sum(len(s) for s in sizes) or len(groups) != 1:
        raise ValueError(
            f"the optimizer state holds {n_saved} parameters in {len(groups)} groups; expected "
            f"{len(sizes)} flat buffers or {sum(len(s) for s in sizes)} separate parameters in "
            "one group"
        )
    order = list(groups[0]["params"])
    state = saved["state"]
    new_state: dict[int, dict[str, Any]] = {}
    start = 0
    for k, counts in enumerate(sizes):
        ids = order[start : start + len(counts)]
        start += len(counts)
        if not all(i in state for i in ids):
            continue  # never stepped
        merged: dict[str, Any] = {}
        for key, value in state[ids[0]].items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:  # one entry per weight
                merged[key] = torch.cat([state[i][key].reshape(-1) for i in ids])
            elif isinstance(value, torch.Tensor):  # never shared with the saved state
                merged[key] = value.clone()
            else:
                merged[key] = value
        new_state[k] = merged
    group = {**groups[0], "params": list(range(len(sizes)))}
    return {"state": new_state, "param_groups": [group]}
