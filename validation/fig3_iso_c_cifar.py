"""Paper Fig. 3: iso-classification runs of the CIFAR-shape model (ResNet-18 encoder, FC + 4
deconvolutions, linear classifier) from lambda0 = 0.5 and gamma0 in {5, 10, 15, 20}.

The runs are a sweep (continuation/apps/sweep.py); this script plots and tabulates its folder:

    python -m continuation sweep validation/configs/fig3_fashion_mnist.toml --out out/fig3   # CPU smoke size
    python validation/fig3_iso_c_cifar.py out/fig3                    # fig3.png and the table

    python -m continuation sweep validation/configs/fig3_cifar10_full.toml --out out/fig3_full --workers 1
    python validation/fig3_iso_c_cifar.py out/fig3_full               # the paper's size (one GPU)

    python validation/fig3_iso_c_cifar.py out/fig3 --run validation/configs/fig3_fashion_mnist.toml  # both steps

Configurations (validation/configs/): fig3_fashion_mnist.toml (CPU smoke size, gamma0 in {5,
20}), fig3_cifar10_full.toml (the paper's size and gamma0; set its problem.data_dir),
fig3_digits.toml (the bundled digits, one gamma0: a check of the pipeline).

The procedure is Fig. 2's (validation/fig2_iso_c.py): Adam from scratch, `settle` corrector
runs, then the exact iso-C law with training C held by the secant projection, the paper's Adam
equilibration between points, s = lambda - lambda0, to lambda = 4 lambda0 (a factor of 4).

CPU size runs the 11M-parameter network on 256 Fashion-MNIST images padded to 32x32 RGB (the
stand-in that installs here; CIFAR-10 needs its data_dir) and 256 validation images, 80
training updates of batch 32, T = 16: a smoke-size run that shows the pipeline works at this
model size on 2 cores, not the paper's numbers. Full size: CIFAR-10 whole, 100 epochs of batch
128, T = one epoch, for one GPU.

Writes DIR/fig3.png and prints Fig. 2's table (validation/fig2_iso_c.py), with its exit status:
1 when a member misses the targets or has no point, 2 when the folder is not a sweep.
"""

from __future__ import annotations

import sys

import fig2_iso_c  # noqa: E402


def main(argv=None):
    return fig2_iso_c.main(argv, figure="fig3.png", doc=__doc__, compare=False)


if __name__ == "__main__":
    sys.exit(main())
