"""Transfer between two linear-Gaussian tasks against closed forms (docs/transfer.md).

    python validation/gaussian_transfer.py --out out/gaussian_transfer [--quick] [--json FILE]

The command line of continuation/apps/experiments/gaussian_transfer.py (the experiment, which
`python -m continuation report` calls in-process; its docstring says what is run and compared).
"""

import sys

from continuation.apps.experiments.gaussian_transfer import main

if __name__ == "__main__":
    sys.exit(main())
