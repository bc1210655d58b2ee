"""The run `python -m continuation run` makes with no configuration: iso-classification on the
bundled 8x8 digits with the paper's MLP (64-128-8 / 8-12-10), a few minutes on 2 CPU cores.

Start: 8,000 Adam updates from scratch at (lambda, gamma) = (0.25, 4), new noise every update,
then three runs of the corrector there (C0 is taken after the last; with 3,000 updates and noise
re-drawn every 50 the start was not settled and R fell by 0.11 along the path). Then the exact
iso-C law (tangents by MINRES on a 512-image subsampled Hessian, shifted by 0.1 because a
stochastic equilibrium is neither exact nor convex), the paper's own "none" predictor and Adam
equilibration schedule with the batch noise re-drawn every 5 updates (a fixed budget of 600
updates, no gradient tolerance), lambda in fixed steps of 0.075 until lambda = 1 (a factor of 4). Training C (one fixed noise draw over the training set) is held
to 0.5% by a secant on gamma: a finite Adam run responds to (lambda, gamma) less than the
equilibrium tangents predict, so the law alone lets C drift by several percent.
"""

DEFAULT_CONFIG = {
    "problem": {"name": "mlp", "dataset": "digits", "hidden": 128, "latent": 8, "hvp_batch": 512, "samples": 2},
    "start": {"lambda": 0.25, "gamma": 4.0, "train_steps": 8000, "train_lr": 3e-3, "train_resample_every": 1,
              "settle": 3, "seed": 0},
    "process": {"name": "iso-classification", "alpha": 1.0, "tol": 5e-3, "measure": "evaluation", "clock": "lambda"},
    "projection": {"name": "secant"},
    "predictor": {"name": "none"},
    "corrector": {"name": "adam", "steps": 600, "eta_max": 1e-3, "resample_every": 5},
    "krylov": {"name": "minres", "rtol": 1e-2, "maxiter": 30, "shift": -0.1},
    "steps": {"name": "fixed", "size": 0.075},
    "stop": {"max_steps": 40, "target": {"lambda": 1.0}},
}
DEFAULT_OUT = "out/default/path.nc"
