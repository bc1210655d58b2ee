"""The run `python -m continuation run` makes with no configuration: iso-classification on the
bundled 8x8 digits with the paper's MLP (64-128-8 / 8-12-10), under 2 minutes on 2 CPU cores.

Why these settings (issue 14; measured with `python -m continuation run`, one thread):
- Decoder standard deviation 0.3, not 1. The digits' pixels lie in [0, 1], so a unit-variance
  Gaussian decoder leaves D's data term 0.5 |x - dec(z)|^2 at ~1.4 nats per image against a
  constant 32 log(2 pi) = 58.8: lambda barely matters (over lambda 0.25 -> 1, R moved 2.842 ->
  2.833 and D 60.251 -> 60.246). With sigma = 0.3 the data term is divided by 0.09, and along
  lambda 0.25 -> 1 at training C held the rate rises 3.7 -> 5.8 nats and D minus its constant
  64 log(0.3 sqrt(2 pi)) = -18.24 falls 12.0 -> 7.8 (the paper's Fig. 2 trade-off, visible at a
  glance). With gamma = 4 held instead (3,000 updates at each end), sigma = 1 gave R 2.90 ->
  3.05, sigma = 0.3 R 3.71 -> 7.10, sigma = 0.1 R 10.8 -> 18.1; 0.3 moves R by a factor the
  plot shows without the rate dwarfing C's scale.
- Start: 5,000 Adam updates from scratch at (lambda, gamma) = (0.25, 4), new noise every update,
  then three runs of the corrector there (C0 is taken after the last).
- Route: the cheapest one measured at the least drift (`benchmarks/iso_c_routes.py`): the exact
  iso-C law (tangents by MINRES on a 512-image subsampled Hessian, shifted by 0.1 because a
  stochastic equilibrium is neither exact nor convex) as the secant's first slope, the paper's
  "none" predictor, and Adam with a fixed budget of 150 updates per corrector run (noise
  re-drawn every 5 updates; no gradient tolerance). Training C (one fixed noise draw over the
  training set) is held to 0.5% by a secant on gamma: a finite Adam run responds to
  (lambda, gamma) less than the equilibrium tangents predict, so the law alone lets C drift by
  several percent.
- lambda in fixed steps of 0.075 until lambda = 1 (a factor of 4, as in the paper's Fig. 2).
"""

DEFAULT_CONFIG = {
    "problem": {"name": "mlp", "dataset": "digits", "hidden": 128, "latent": 8, "hvp_batch": 512, "samples": 2,
                "decoder_std": 0.3},
    "start": {"lambda": 0.25, "gamma": 4.0, "train_steps": 5000, "train_lr": 3e-3, "train_resample_every": 1,
              "settle": 3, "seed": 0},
    "process": {"name": "iso-classification", "alpha": 1.0, "tol": 5e-3, "measure": "evaluation", "clock": "lambda"},
    "projection": {"name": "secant"},
    "predictor": {"name": "none"},
    "corrector": {"name": "adam", "steps": 150, "eta_max": 1e-3, "resample_every": 5},
    "krylov": {"name": "minres", "rtol": 1e-2, "maxiter": 30, "shift": -0.1},
    "steps": {"name": "fixed", "size": 0.075},
    "stop": {"max_steps": 40, "target": {"lambda": 1.0}},
}
DEFAULT_OUT = "out/default/path.nc"
