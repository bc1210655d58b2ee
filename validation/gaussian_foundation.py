"""Foundation check on the linear-Gaussian problem: every framework number against a closed form.

    python validation/gaussian_foundation.py --out out/foundation [--seed 0] [--sweep 41]

The command line of continuation/apps/experiments/foundation.py (the experiment, which
`python -m continuation report` calls in-process; its docstring says what is checked and written).
"""

import sys

from continuation.apps.experiments.foundation import main

if __name__ == "__main__":
    sys.exit(main())
