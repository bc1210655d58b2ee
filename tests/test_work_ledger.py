"""The work ledger: a path's work columns equal what was spent, counted independently.

The independent counter wraps the autograd entry points the code reaches (torch.func's grad,
vjp and jvp as solvers/derivatives.py and continuation/surface/tangents.py hold them, and
Tensor.backward) and the problem's forward passes, and classifies each top-level call (not
nested inside another transform):

- a gradient: a call of a `grad` function, or a `backward`;
- an HVP: a call of a `vjp` pullback (reverse-over-reverse), or a `jvp` in theta (forward-over-reverse);
  inside `torch.func.vmap` over k vectors, k HVPs;
- a mixed-partial column: a `jvp` in mu alone (the shape of mu);
- an evaluation: a `jvp` in (theta, mu) (the rates of R, D, C along a tangent), or a forward
  pass of the problem (objective, functionals, evaluation or validation metrics) whose output
  is not differentiated (a forward that a `backward` differentiates is that gradient's);
- a corrector run and its iterations: a call of the corrector's `correct`.

The path's columns summed over its rows must equal these counts exactly.
"""

import contextlib

import numpy as np
import torch

import continuation.surface.tangents as tangents_module
import solvers.derivatives as derivatives
from continuation.engine.driver import Output, Start, continue_path
from continuation.strategies.correctors import AdamCorrector, NewtonCorrector
from continuation.strategies.predictors import NoPredictor, ODEPredictor
from continuation.strategies.processes import IsoClassification, IsoClassificationFD
from continuation.strategies.projections import NewtonProjection, SecantProjection
from continuation.strategies.step_control import FixedSteps, StopRule
from problems.data import Data
from problems.models import paper_mlp
from problems.neural_problem import NeuralProblem
from solvers import MINRES

COLUMNS = ("gradients", "hvps", "mixed_partials", "evaluations", "corrector_runs")


class IndependentCounter:
    """Counts model passes by wrapping torch's entry points and the problem's forwards (module docstring)."""

    def __init__(self, monkeypatch, problem, corrector):
        self.counts = dict.fromkeys(COLUMNS + ("corrector_iters", "differentiated_forwards", "backwards"), 0)
        self.depth = 0  # > 0 inside a transform (its inner passes are the transform's)
        self.width = 1  # inside torch.func.vmap: the number of vectors it maps
        self.forward_depth = 0  # > 0 inside a problem forward (Problem.objective calls functionals)
        real_grad, real_vjp, real_jvp = derivatives.grad, derivatives.vjp, derivatives.jvp

        @contextlib.contextmanager
        def nested():
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1

        def grad(f, *args, **kw):
            g = real_grad(f, *args, **kw)

            def counted(*a, **k):
                if self.depth == 0:
                    self.counts["gradients"] += 1
                with nested():
                    return g(*a, **k)
            return counted

        def vjp(f, *primals, **kw):
            with nested():
                out, pullback = real_vjp(f, *primals, **kw)

            def counted(*v):
                if self.depth == 0:
                    self.counts["hvps"] += self.width  # a vmapped pullback: one HVP per mapped vector
                with nested():
                    return pullback(*v)
            return out, counted

        def jvp(f, primals, tangents, **kw):
            if self.depth == 0:
                if len(primals) == 2:
                    self.counts["evaluations"] += 1  # R, D, C and their rate along one tangent
                elif primals[0].shape == (3,):
                    self.counts["mixed_partials"] += 1  # d/dmu of grad_theta J: mu has shape (3,)
                else:
                    self.counts["hvps"] += self.width  # d/dtheta of grad_theta J (fwd-rev)
            with nested():
                return real_jvp(f, primals, tangents, **kw)

        real_vmap = torch.func.vmap

        def vmap(f, *a, **k):
            mapped = real_vmap(f, *a, **k)

            def counted(*args):
                outer, self.width = self.width, args[0].shape[0]  # the block's vectors (in_dims 0)
                try:
                    return mapped(*args)
                finally:
                    self.width = outer
            return counted

        monkeypatch.setattr(torch.func, "vmap", vmap)
        real_backward = torch.Tensor.backward

        def backward(tensor, *a, **k):
            if self.depth == 0:
                self.counts["gradients"] += 1
                self.counts["backwards"] += 1
            with nested():
                return real_backward(tensor, *a, **k)

        monkeypatch.setattr(derivatives, "grad", grad)
        monkeypatch.setattr(derivatives, "vjp", vjp)
        monkeypatch.setattr(derivatives, "jvp", jvp)
        monkeypatch.setattr(tangents_module, "jvp", jvp)
        monkeypatch.setattr(torch.Tensor, "backward", backward)

        def forward(method, metrics: bool):
            def counted(*a, **k):
                outer = self.depth == 0 and self.forward_depth == 0
                self.forward_depth += 1
                try:
                    out = method(*a, **k)
                finally:
                    self.forward_depth -= 1
                if outer:
                    if metrics:
                        self.counts["evaluations"] += bool(out)
                    elif any(v.requires_grad for v in (out.values() if isinstance(out, dict) else [out])):
                        self.counts["differentiated_forwards"] += 1  # the forward of a backward's gradient
                    else:
                        self.counts["evaluations"] += 1
                return out
            return counted

        for name in ("objective", "functionals", "hessian_objective"):
            monkeypatch.setattr(problem, name, forward(getattr(problem, name), False))
        for name in ("evaluation_metrics", "validation_metrics"):
            monkeypatch.setattr(problem, name, forward(getattr(problem, name), True))

        # every run of the corrector's class: the run's own corrector (the start) and its step
        # corrector (Corrector.for_steps, a copy without trust-newton's L-BFGS start phase)
        real_correct = type(corrector).correct

        def correct(self_, system, x, mu):
            res = real_correct(self_, system, x, mu)
            self.counts["corrector_runs"] += 1
            self.counts["corrector_iters"] += int(res.iters)
            return res

        monkeypatch.setattr(type(corrector), "correct", correct)


def assert_columns_match(ds, counter, corrector):
    spent = counter.counts
    recorded = {name: int(ds[name].values.sum()) for name in COLUMNS}
    recorded["corrector_iters"] = int(ds[corrector.counts].values.sum())
    assert recorded == {k: spent[k] for k in recorded}, (recorded, spent)
    # every forward whose output was differentiated belongs to one backward's gradient
    assert spent["differentiated_forwards"] == spent["backwards"]


def small_mlp(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    data = Data(torch.rand(40, 1, 4, 4, generator=g, dtype=dtype), torch.randint(0, 3, (40,), generator=g),
                ("a", "b", "c"), "stand-in")
    problem = NeuralProblem(*paper_mlp(input_dim=16, hidden=6, latent=2, classes=3, classifier_hidden=4), data,
                            samples=2, dtype=dtype, hvp_batch=16)
    problem.val = problem.train  # validation metrics too: one evaluation per row
    return problem


def test_paper_route_start_and_one_step_counts_every_pass(monkeypatch):
    """The paper's route (benchmarks/iso_c_routes.py "paper"): the finite-difference law of eq. 31
    (four re-equilibrations per law), no predictor, Adam, no projection; the law is evaluated at
    the start, again at the start on the step's new draw, and at the new point."""
    problem = small_mlp()
    corrector = AdamCorrector(steps=12, eta_max=1e-3)
    counter = IndependentCounter(monkeypatch, problem, corrector)
    ds = continue_path(problem, IsoClassificationFD(h=0.02, clock="lambda"), NoPredictor(), corrector,
                       FixedSteps(size=0.075), StopRule(max_steps=1), start=Start(mu=(0.5, 2.0), equilibrate=True),
                       output=Output(progress=False), solver=MINRES(rtol=1e-2, maxiter=10))
    assert ds.sizes["step"] == 2
    assert_columns_match(ds, counter, corrector)
    # start: 1 settle + 4 (law); step: 4 (law on the new draw) + 1 (corrector) + 4 (law at the new point)
    assert ds["corrector_runs"].values.tolist() == [5, 9]
    assert counter.counts["gradients"] == 14 * 13 + 2 * 4  # 12 updates and the final check per run; grad_norm_rel: 4 per row
    assert int(ds["hvps"].sum()) == 0 and int(ds["mixed_partials"].sum()) == 0


def test_default_route_counts_every_pass(monkeypatch):
    """The default route (continuation/apps/defaults.py): the exact iso-C law on the fixed-noise
    training C, no predictor, Adam with re-drawn noise, the secant projection; tangents by
    shifted MINRES on the HVP batch. C held to 5% (10 Adam updates on this small model do not hold
    the default's 0.5%, and a miss stops a run: the test counts passes, not the hold)."""
    problem = small_mlp()
    corrector = AdamCorrector(steps=10, eta_max=1e-3, resample_every=5)
    counter = IndependentCounter(monkeypatch, problem, corrector)
    ds = continue_path(problem, IsoClassification(tol=5e-2, measure="evaluation", clock="lambda"), NoPredictor(),
                       corrector, FixedSteps(size=0.075), StopRule(max_steps=3), projection=SecantProjection(),
                       start=Start(mu=(0.5, 2.0), equilibrate=True), output=Output(progress=False),
                       solver=MINRES(rtol=1e-2, maxiter=8, shift=-0.1))
    assert ds.sizes["step"] == 4
    assert_columns_match(ds, counter, corrector)
    assert int(ds["hvps"].sum()) == int(ds["krylov_iters"].sum()) > 0  # Adam spends none: all are Krylov matvecs
    # two tangent columns at the start; each step: two at the start point on its new draw, two at the new point
    assert ds["mixed_partials"].values.tolist() == [2, 4, 4, 4]


def test_deterministic_newton_route_counts_every_pass(monkeypatch, competition):
    """Linear-Gaussian, iso-C with the exact law, an rk4 predictor (stage contexts), Newton-CG
    (line-search evaluations, CG HVPs) and the Newton projection."""
    problem = competition.problem
    corrector = NewtonCorrector()
    counter = IndependentCounter(monkeypatch, problem, corrector)
    ds = continue_path(problem, IsoClassification(tol=1e-10), ODEPredictor(method="rk4"), corrector,
                       FixedSteps(size=0.05), StopRule(max_steps=3), projection=NewtonProjection(),
                       start=Start(mu=(1.0, 1.0), equilibrate=True), output=Output(progress=False), monitor=None)
    assert ds.sizes["step"] == 4
    assert_columns_match(ds, counter, corrector)
    assert int(ds["hvps"].sum()) > int(ds["krylov_iters"].sum()) > 0  # Newton's CG matvecs beside the tangents'
    assert np.all(ds["evaluations"].values > 0)


def test_trust_newton_route_counts_every_pass(monkeypatch, competition):
    """The trust-newton corrector: its L-BFGS phase's gradients (closure backwards), the trust
    region's gradients, model HVPs and trial evaluations, all in the rows' columns."""
    from continuation.strategies.correctors import TrustRegionCorrector

    problem = competition.problem
    corrector = TrustRegionCorrector(gtol=1e-10, lbfgs_iters=3)
    counter = IndependentCounter(monkeypatch, problem, corrector)
    ds = continue_path(problem, IsoClassification(tol=1e-10), ODEPredictor(method="euler"), corrector,
                       FixedSteps(size=0.05), StopRule(max_steps=2), projection=NewtonProjection(),
                       start=Start(mu=(1.0, 1.0), equilibrate=True), output=Output(progress=False), monitor=None)
    assert ds.sizes["step"] == 3 and ds.attrs["corrector"] == "trust-newton"
    assert_columns_match(ds, counter, corrector)
    assert int(ds["hvps"].sum()) > int(ds["krylov_iters"].sum()) > 0


def test_monitor_work_is_counted_apart_once(monkeypatch, competition):
    """With the stability monitor on, its HVPs (the spectra at every point) are spent aside
    (Ledger.aside): not in the rows' `hvps`, in `monitor_hvps`; the two together are every HVP
    the independent counter saw, and the other columns still equal what was spent."""
    from continuation.singular.monitor import Monitor

    problem = competition.problem
    corrector = NewtonCorrector()
    counter = IndependentCounter(monkeypatch, problem, corrector)
    ds = continue_path(problem, IsoClassification(tol=1e-10), ODEPredictor(method="euler"), corrector,
                       FixedSteps(size=0.05), StopRule(max_steps=2), projection=NewtonProjection(),
                       start=Start(mu=(1.0, 1.0), equilibrate=True), output=Output(progress=False),
                       monitor=Monitor(modes=2))
    assert ds.sizes["step"] == 3
    monitor = int(ds["monitor_hvps"].sum())
    assert np.all(ds["monitor_hvps"].values > 0)  # a spectrum at every point
    assert int(ds["hvps"].sum()) + monitor == counter.counts["hvps"]
    counter.counts["hvps"] -= monitor
    assert_columns_match(ds, counter, corrector)
