"""The experiments of the validation scripts and benchmarks that the report runs (and that
validation/ and benchmarks/ wrap as command lines): each module's `main(argv)` is the script's
command line, and a function per experiment takes its options as arguments and writes its files
into the folder it is given. They run in-process (`python -m continuation report` calls them),
so they work from any install of the package, not only from the repository.

| module            | experiment                                              | script                          |
|-------------------|---------------------------------------------------------|---------------------------------|
| gaussian_iso_c    | linear-Gaussian iso-C against the closed-form curve     | validation/gaussian_iso_c.py    |
| foundation        | linear-Gaussian framework numbers against closed forms  | validation/gaussian_foundation.py |
| gaussian_transfer | linear-Gaussian transfer against closed forms           | validation/gaussian_transfer.py |
| fig5              | Fig. 5: iso-C transfer against fine-tuning, from scratch | validation/fig5_transfer.py     |
| routes            | iso-C routes side by side (cost per unit lambda)        | benchmarks/iso_c_routes.py      |
| hvp_cost          | HVP cost over gradient cost on the paper's MLP          | benchmarks/hvp_cost.py          |
"""
