"""Cost of one Hessian-vector product over one gradient on the paper's MLP (784-256-16).

    python benchmarks/hvp_cost.py [--batches 256 1024 4096] [--repeats 10] [--device cpu] [--data-dir DIR]

The command line of continuation/apps/experiments/hvp_cost.py (its docstring says what is timed).
"""

import sys

from continuation.apps.experiments.hvp_cost import main

if __name__ == "__main__":
    sys.exit(main())
