"""Paper Fig. 5 (and 6): iso-classification transfer from classes 0-4 to 5-9, against
fine-tuning the source model and training on the target from scratch.

    python validation/fig5_transfer.py --out out/fig5                      # CPU mode, Fashion-MNIST
    python validation/fig5_transfer.py --dataset digits --out out/fig5d    # a quick check (~3 min)
    python validation/fig5_transfer.py --dataset mnist --data-dir DIR --full --device cuda
    python validation/fig5_transfer.py --dataset cifar10 --data-dir DIR --full --device cuda  # vehicles -> animals

The command line of continuation/apps/experiments/fig5.py (the experiment; its docstring says what
is run, written and checked, and the exit statuses). `--help` prints it.
"""

if __name__ == "__main__":  # Ctrl-C or SIGTERM while torch loads (seconds): one line, not a traceback
    import signal as _signal
    import sys as _sys

    def _starting(signum, frame):
        print(f"error: {_signal.Signals(signum).name}: interrupted while starting; nothing to resume",
              file=_sys.stderr)
        raise SystemExit(128 + signum)

    for _sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_sig, _starting)

import sys  # noqa: E402

from continuation.apps.experiments.fig5 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
