"""The run `python -m continuation run` makes with no configuration: iso-classification on the
bundled 8x8 digits with the paper's MLP (64-128-8 / 8-12-10), under 2 minutes on 2 CPU cores.

Why these settings (issue 14; measured with `python -m continuation run`, one thread):
- Decoder standard deviation 0.3, not 1. The digits' pixels lie in [0, 1], so a unit-variance
  Gaussian decoder leaves D's data term 0.5 |x - dec(z)|^2 at ~1.4 nats per image against a
  constant 32 log(2 pi) = 58.8: lambda barely matters (over lambda 0.25 -> 1, R moved 2.842 ->
  2.833 and D 60.251 -> 60.246). With sigma = 0.3 the data term is divided by 0.09, and along
  lambda 0.25 -> 1 at training C held the rate rises 3.69 -> 5.55 nats and D minus its constant
  64 log(0.3 sqrt(2 pi)) = -18.24 falls 12.13 -> 8.27 (the paper's Fig. 2 trade-off, visible at a
  glance). With gamma = 4 held instead (3,000 updates at each end), sigma = 1 gave R 2.90 ->
  3.05, sigma = 0.3 R 3.71 -> 7.10, sigma = 0.1 R 10.8 -> 18.1; 0.3 moves R by a factor the
  plot shows without the rate dwarfing C's scale.
- Start: 5,000 Adam updates from scratch at (lambda, gamma) = (0.25, 4), new noise every update,
  then three runs of the corrector there (C0 is taken after the last).
- Route: the cheapest one measured that holds training C to the tolerance
  (`benchmarks/iso_c_routes.py`, docs/neural_routes.md): the exact iso-C law (tangents by
  MINRES on a 512-image subsampled Hessian, shifted by 0.1 because a stochastic equilibrium is
  neither exact nor convex) as the secant's first slope, the paper's "none" predictor, and Adam
  with a fixed budget of 75 updates per corrector run (noise re-drawn every 5 updates; no
  gradient tolerance). Training C (one fixed noise draw over the training set) is held to 0.5%
  by a secant on gamma: a finite Adam run moves C by a sixth to a third of what the
  equilibrium tangents predict, whatever its budget (75 to 2,400 updates,
  benchmarks/tangent_response.py), so the law alone lets C drift by several percent. On
  Fashion-MNIST (CPU size, 3 steps from one start) this route cost 3,863 gradient-equivalents
  per unit of lambda against 40,067 for the paper's procedure (finite-difference law, Adam 600,
  no projection), with 0.27% drift of training C against 8.2%. The price of the small budget is
  lag: R rises by 0.42 nats over those 3 steps against 0.49 with Adam 600 (a corrector run does
  not reach equilibrium; R's response keeps growing with the budget).
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
    "corrector": {"name": "adam", "steps": 75, "eta_max": 1e-3, "resample_every": 5},
    "krylov": {"name": "minres", "rtol": 1e-2, "maxiter": 30, "shift": -0.1},
    "steps": {"name": "fixed", "size": 0.075},
    "stop": {"max_steps": 40, "target": {"lambda": 1.0}},
}
DEFAULT_OUT = "out/default/path.nc"
