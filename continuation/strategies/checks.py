"""Whole-run input checks before any work: one ValueError line naming the option and the value.

`check_inputs(problem, process, stop, start=..., theta0=...)`, which `continue_path` calls
first: the start multipliers, the initial parameters' dtype and shapes against the problem's,
and whether the stop rule's target lies ahead in the direction the process moves
(`check_reachable`, also called by continuation/files/config.py for configuration files);
`check_roles`: each argument is an object of the role it fills; `check_combination`:
strategies that cannot work together, or that need what the problem lacks. The scalar checks
each strategy makes of its own options are in continuation/strategies/options.py.
"""

from __future__ import annotations

from problems.base import Problem, StochasticProblem

from continuation.errors import Misconfigured

from continuation.strategies.correctors import Corrector
from continuation.strategies.options import MU_NAMES, check_start, described, integer
from continuation.strategies.predictors import Predictor
from continuation.strategies.processes import IsoClassificationFD, IsoFunctional, Process, QuasiStatic
from continuation.strategies.projections import Projection
from continuation.strategies.step_control import StepControl, StopRule
from continuation.strategies.transfer_processes import IsoClassificationTransfer


def directions(process, problem=None) -> dict:
    """{name: +1 | -1 | 0} for the multipliers whose direction of travel is known before running
    (0: the process does not move it); multipliers absent: unknown (set by the law at each point).

    With a deterministic `problem`, iso-classification's lambda (clock "alpha") moves with the
    sign of alpha: lambda' = -alpha C_gamma, and at a stable equilibrium C_gamma = -grad C^T
    A^-1 grad C < 0 (A = Hess_theta J positive definite; F is concave in the multipliers, paper
    section 3). On a stochastic problem the corrector's points are not equilibria: unknown."""

    sign = lambda r: (r > 0) - (r < 0)  # noqa: E731
    if isinstance(process, QuasiStatic):
        return {"lambda": sign(process.lambda_rate), "gamma": sign(process.gamma_rate), "t": sign(process.t_rate)}
    if isinstance(process, IsoClassificationTransfer):
        out = {"t": 1}
        if process.condition == "lambda":
            out["lambda"] = sign(process.k)
        return out
    if isinstance(process, (IsoFunctional, IsoClassificationFD)):
        # clock = "lambda": lambda' = 1 whatever the law; t never moves off a task path
        if process.clock == "lambda":
            return {"lambda": 1, "t": 0}
        if process.holds == "C" and problem is not None and not isinstance(problem, StochasticProblem):
            return {"lambda": sign(process.alpha), "t": 0}
        return {"t": 0}
    return {}


def check_reachable(process, stop, start, problem=None) -> None:
    """Refuse a target that lies behind (or off) the direction of travel, where it is known
    before running (directions(process, problem)); `start` is (lambda, gamma[, t])."""
    known = directions(process, problem)
    here = dict(zip(MU_NAMES, list(start) + [0.0] * (3 - len(start))))
    for name, value in stop.target.items():
        if float(value) == here[name]:
            raise ValueError(f"target {name} = {value} is the start's value: the run would end at its first point; "
                             f"give a target ahead of the start")
        if name not in known:
            continue
        way, need = known[name], (float(value) > here[name]) - (float(value) < here[name])
        if way == 0:
            raise ValueError(f"target {name} = {value} is unreachable: process {process.name!r} does not move {name} "
                             f"(it stays at {here[name]:g})")
        if way != need:
            moves = "up" if way > 0 else "down"
            raise ValueError(f"target {name} = {value} is unreachable: process {process.name!r} moves {name} {moves} "
                             f"from its start {here[name]:g}{_why(process, name)}")
    for name, values in stop.milestones.items():
        if name in stop.target:
            end = float(stop.target[name])
            for value in values:
                if (float(value) - here[name]) * (end - here[name]) > 0 and \
                        abs(float(value) - here[name]) > abs(end - here[name]):
                    raise ValueError(f"milestone {name} = {value} lies beyond the target {name} = {stop.target[name]} "
                                     f"(from the start {here[name]:g}): the run stops at the target first")
        if name not in known:
            continue
        for value in values:
            need = (float(value) > here[name]) - (float(value) < here[name])
            if need != 0 and known[name] != need:
                moves = {1: "up", -1: "down", 0: "not at all"}[known[name]]
                raise ValueError(f"milestone {name} = {value} is unreachable: process {process.name!r} moves {name} "
                                 f"{moves} from its start {here[name]:g}{_why(process, name)}")


def _why(process, name) -> str:
    """Why the law's direction is known (directions()), where it is the law's."""
    if name == "lambda" and getattr(process, "holds", None) == "C" and getattr(process, "clock", None) == "alpha":
        return (f" (lambda' = -alpha C_gamma with alpha = {process.alpha:g}, and C_gamma < 0 at a stable "
                f"equilibrium)")
    return ""


ROLES = {  # role -> (the class its object must be, where such objects come from)
    "problem": (Problem, "problems.registry, or build('problem', {...}) of continuation.files.config"),
    "process": (Process, "continuation.strategies.processes, or build('process', {...})"),
    "predictor": (Predictor, "continuation.strategies.predictors, or build('predictor', {...})"),
    "corrector": (Corrector, "continuation.strategies.correctors, or build('corrector', {...})"),
    "control": (StepControl, "continuation.strategies.step_control: AdaptiveSteps, FixedSteps, HeldSteps"),
    "stop": (StopRule, "continuation.strategies.step_control.StopRule"),
    "projection": (Projection, "continuation.strategies.projections, or None"),
}


def check_roles(**objects) -> None:
    """Each object is of the role it fills (ROLES); `solver` is a Krylov solver (solvers.CG,
    MINRES, GMRES: an object with `solve(matvec, b)`). One ValueError line naming the argument,
    what it must be and what it got (a name given where an object is needed says how to build one)."""
    for role, value in objects.items():
        if role == "solver":
            if not callable(getattr(value, "solve", None)):
                raise ValueError(f"continue_path: solver must be a Krylov solver (solvers.MINRES(), CG(), GMRES()) "
                                 f"or None, got {described(value)}")
            continue
        cls, where = ROLES[role]
        if not isinstance(value, cls):
            raise ValueError(f"continue_path: {role} must be a {cls.__name__} ({where}), got {described(value)}")


def check_combination(problem, process, predictor, corrector, projection=None, monitor=None) -> None:
    """Strategies that cannot work together, and strategies that need a capability the problem
    lacks, refused before any work: one Misconfigured line (exit 2 from the command line) whose
    `section` names the configuration table to change. The one check the command line, each
    sweep member and continue_path share.

    - pseudo-arclength: its process, its predictor (which carries the arclength condition) and a
      corrector that solves that condition ('bordered-newton') come together, or not at all;
    - the `none` predictor with move = 'clock' needs a process that moves t;
    - a process that moves t needs a problem on a task path (`Problem.task_path`);
    - a projection other than 'none' needs a process that holds a functional;
    - a projection or an event location that needs equilibria (`needs_equilibria`: Newton in the
      multipliers along the tangents) needs a deterministic problem."""
    p_arc, q_arc = getattr(process, "arclength", False), getattr(predictor, "arclength", False)
    c_arc = getattr(corrector, "solves_arclength", False)
    if p_arc and not q_arc:
        raise Misconfigured(f"process {process.name!r} moves along the arclength of the extended tangent: it needs "
                            f"predictor 'pseudo-arclength', got {predictor.name!r}", "predictor")
    if q_arc and not p_arc:
        raise Misconfigured(f"predictor {predictor.name!r} follows the extended tangent of process "
                            f"'pseudo-arclength', got process {process.name!r}", "predictor")
    if getattr(predictor, "move", "all") == "clock" and directions(process).get("t") == 0:
        raise Misconfigured(f"predictor {predictor.name!r} with move = 'clock' moves t alone, and process "
                            f"{process.name!r} does not move t: nothing would move; use move = 'all' or a process on "
                            f"a task path", "predictor")
    if q_arc and not c_arc:
        raise Misconfigured(f"predictor {predictor.name!r} needs a corrector that solves the arclength condition "
                            f"('bordered-newton'); corrector {corrector.name!r} corrects at fixed mu only", "corrector")
    if c_arc and not q_arc:
        raise Misconfigured(f"corrector {corrector.name!r} solves grad J = 0 together with the arclength condition of "
                            f"process 'pseudo-arclength' and predictor 'pseudo-arclength'; process {process.name!r} "
                            f"corrects at fixed mu: use corrector 'newton' (or 'lbfgs', 'adam')", "corrector")
    if directions(process).get("t", 0) != 0 and not getattr(problem, "task_path", False):
        raise Misconfigured(f"process {process.name!r} moves the task time t, and problem {problem.name!r} has no task "
                            f"path (its J does not depend on t): use a problem on a task path (transfer-mlp, "
                            f"transfer-resnet; problems.LinearGaussianTransferProblem in Python) or a process that does "
                            f"not move t", "process")
    if projection is not None and projection.name != "none" and process.holds is None:
        raise Misconfigured(f"projection {projection.name!r} has nothing to hold: process {process.name!r} holds no "
                            f"functional; use projection 'none' (the default)", "projection")
    stochastic = isinstance(problem, StochasticProblem)
    if projection is not None and getattr(projection, "needs_equilibria", False) and stochastic:
        raise Misconfigured(f"projection {projection.name!r} moves the multipliers by Newton along the equilibrium "
                            f"tangents, and problem {problem.name!r} is stochastic (its corrector's points are not "
                            f"equilibria of one J): use projection 'secant'", "projection")
    if getattr(monitor, "branch", None) == "switch" and not getattr(process, "arclength", False):
        raise Misconfigured(f"branch = 'switch' continues on the branch born at a bifurcation, which needs the "
                            f"pseudo-arclength process (it follows saddles); the process is {process.name!r} (use "
                            f"'minimising' or 'follow')", "monitor")
    if getattr(monitor, "locate", None) == "newton" and stochastic:
        raise Misconfigured(f"monitor locate = 'newton' needs a deterministic problem; {problem.name!r} draws a new J "
                            f"with each batch (use 'interpolate' or 'auto')", "monitor")


# --- the Python entry: continue_path's inputs -----------------------------------------------

def _leaves(theta):
    import torch

    if isinstance(theta, torch.Tensor):
        return {"": theta}
    if isinstance(theta, dict):
        out = {}
        for k, v in theta.items():
            for kk, leaf in _leaves(v).items():
                out[f"{k}.{kk}" if kk else str(k)] = leaf
        return out
    if isinstance(theta, (list, tuple)):
        out = {}
        for i, v in enumerate(theta):
            for kk, leaf in _leaves(v).items():
                out[f"{i}.{kk}" if kk else str(i)] = leaf
        return out
    raise ValueError(f"theta0 must be a parameter pytree of tensors (the problem's init_params), got {type(theta).__name__}")


def check_theta(problem, theta0) -> None:
    """theta0 against the problem's own parameters (init_params(0)): the same names, shapes and
    dtype (float64 parameters on float32 data silently mix precisions; NewtonCG then reports
    max_iters, the tangents 'singular'), all finite."""
    import torch

    ref, got = _leaves(problem.init_params(0)), _leaves(theta0)
    if set(ref) != set(got):
        missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
        raise ValueError(f"theta0 does not fit problem {problem.name!r}: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, r in ref.items():
        g = got[name]
        if not isinstance(g, torch.Tensor):
            raise ValueError(f"theta0[{name!r}] must be a tensor, got {type(g).__name__}")
        if g.dtype != r.dtype:
            raise ValueError(f"theta0[{name!r}] has dtype {str(g.dtype).removeprefix('torch.')} but problem "
                             f"{problem.name!r} computes in {str(r.dtype).removeprefix('torch.')}; convert theta0 "
                             f"(or build the problem in that precision)")
        if g.shape != r.shape:
            raise ValueError(f"theta0[{name!r}] has shape {tuple(g.shape)}, problem {problem.name!r} expects "
                             f"{tuple(r.shape)}")
        if g.is_floating_point() and not bool(torch.isfinite(g).all()):
            raise ValueError(f"theta0[{name!r}] is not finite (NaN or inf)")


def check_inputs(problem, process=None, stop=None, *, start=None, theta0=None, from_point=None, settle=1,
                 checkpoint_every=1):
    """continue_path's inputs before any work; returns `start` as a tuple of floats (or None).

    Raises ValueError, one line naming the argument: start not 2 or 3 finite numbers with
    lambda, gamma > 0 and t in [0, 1]; theta0 of another dtype or shape than the problem's; a
    target behind the process's direction of travel; checkpoint_every < 1. (The arguments' roles
    are check_roles', their combination check_combination's; `settle` is
    continuation/engine/options.py Start's.)"""
    if start is not None:
        start = check_start(start)
    if from_point is not None:
        if not isinstance(from_point, (list, tuple)) or len(from_point) != 2:
            raise ValueError(f"from_point must be (path, step), got {from_point!r}")
        integer("from_point step", from_point[1])
    integer("checkpoint_every", checkpoint_every, minimum=1)
    if theta0 is not None:
        check_theta(problem, theta0)
    if stop is not None and process is not None and start is not None and from_point is None:
        check_reachable(process, stop, start, problem)
    return start
