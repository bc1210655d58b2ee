"""Iso-classification routes side by side from one equilibrated start (issue 14).

    python benchmarks/iso_c_routes.py --points 4 --out out/routes_digits   # every route on the digits
    python benchmarks/iso_c_routes.py --help                                # the options, with examples

The command line of continuation/apps/experiments/routes.py (the experiment; its docstring says
what each route is and what is reported), with the repository's Fig. 2 configurations
(validation/configs) for Fashion-MNIST and MNIST.
"""

import sys
from pathlib import Path

from continuation.apps.experiments.routes import main

if __name__ == "__main__":
    sys.exit(main(configs=Path(__file__).resolve().parents[1] / "validation" / "configs"))
