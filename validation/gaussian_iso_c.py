"""Iso-classification on the linear-Gaussian problem, checked against the closed-form iso-C curve.

    python validation/gaussian_iso_c.py --out out/gaussian_iso_c [--quick] [--json FILE]

The command line of continuation/apps/experiments/gaussian_iso_c.py (the experiment, which
`python -m continuation report` calls in-process; its docstring says what is run and written).
"""

import sys

from continuation.apps.experiments.gaussian_iso_c import main

if __name__ == "__main__":
    sys.exit(main())
