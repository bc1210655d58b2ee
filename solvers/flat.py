"""A pytree of tensors viewed as one flat vector, so that Krylov solvers see plain vectors.

Parameters theta are nested dicts (or any torch pytree) of tensors. Solvers and tangents work
on the flat vector x = concat(leaf.reshape(-1)); `FlatView` maps both ways. `unflatten` is
split + view, so it is differentiable and cheap, and a function of the flat vector can be
transformed by torch.func (grad, jvp, vmap) exactly like the pytree function.
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree


class FlatView:
    """Bijection between pytrees shaped like `example` and vectors of length `numel`."""

    def __init__(self, example):
        leaves, self.spec = pytree.tree_flatten(example)
        if not leaves:
            raise ValueError("FlatView: the parameter pytree has no tensors")
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(f"FlatView: parameter leaves must be tensors, got {type(leaf).__name__}")
        dtypes = {leaf.dtype for leaf in leaves}
        if len(dtypes) != 1:
            raise TypeError(f"FlatView: all parameters must share one dtype, got {sorted(map(str, dtypes))}")
        self.shapes = [leaf.shape for leaf in leaves]
        self.sizes = [leaf.numel() for leaf in leaves]
        self.numel = sum(self.sizes)
        self.dtype = leaves[0].dtype
        self.device = leaves[0].device

    def flatten(self, tree) -> torch.Tensor:
        leaves, spec = pytree.tree_flatten(tree)
        if spec != self.spec:
            raise ValueError("FlatView.flatten: pytree structure differs from the one this view was built for")
        return torch.cat([leaf.reshape(-1) for leaf in leaves])

    def unflatten(self, vec: torch.Tensor):
        if vec.shape != (self.numel,):
            raise ValueError(f"FlatView.unflatten: expected a vector of length {self.numel}, got shape {tuple(vec.shape)}")
        parts = torch.split(vec, self.sizes)
        leaves = [p.view(s) for p, s in zip(parts, self.shapes)]
        return pytree.tree_unflatten(leaves, self.spec)
