"""Numerical machinery that knows nothing of R, D, C: flat views of parameter pytrees,
Hessian-vector products and mixed partials, Krylov solvers, and equilibrators."""

import warnings

# torch.func's first forward-mode call scripts a few decompositions internally and warns that
# torch.jit.script is deprecated; the warning is torch's own and says nothing about user code.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)

from .deflation import Deflation, orthonormal_basis
from .derivatives import HVP_MODES, check_finite, dense_hessian, gradient, hessian_operator, mixed_partials
from .flat import FlatView
from .krylov import CG, GMRES, KRYLOV_SOLVERS, MINRES, Dense, KrylovResult, make_krylov
from .newton import NewtonCG, NewtonResult
from .sparse import HessianPattern, SparseLU

KRYLOV_SOLVERS["sparse-lu"] = SparseLU  # here, not in krylov.py: solvers/sparse.py imports krylov's results

__all__ = [
    "CG", "Deflation", "Dense", "GMRES", "FlatView", "HVP_MODES", "KRYLOV_SOLVERS", "KrylovResult", "MINRES", "NewtonCG", "NewtonResult",
    "HessianPattern", "SparseLU",
    "check_finite", "dense_hessian", "gradient", "hessian_operator", "make_krylov", "mixed_partials",
    "orthonormal_basis",
]
