"""Iso-classification routes side by side from one equilibrated start (issue 14).

    python benchmarks/iso_c_routes.py                                   # digits, every route, 4 points each
    python benchmarks/iso_c_routes.py --dataset fashion-mnist --points 3 --out out/routes_fmnist
    python benchmarks/iso_c_routes.py --routes paper,adam150-secant --threads 2
    python benchmarks/iso_c_routes.py --dataset mnist --data-dir DIR --full --device cuda
    python benchmarks/iso_c_routes.py --set problem.limit=200 --set start.train_steps=50   # a smaller run
    python benchmarks/iso_c_routes.py --from out/default/path.nc --from-step 0   # start: a point of a run

The command line of continuation/apps/experiments/routes.py (the experiment; its docstring says
what each route is and what is reported), with the repository's Fig. 2 configurations
(validation/configs) for Fashion-MNIST and MNIST.
"""

import sys
from pathlib import Path

from continuation.apps.experiments.routes import main

if __name__ == "__main__":
    sys.exit(main(configs=Path(__file__).resolve().parents[1] / "validation" / "configs"))
