"""Data sets as tensors: scikit-learn's bundled 8x8 digits, Fashion-MNIST from the Debian package
`dataset-fashion-mnist`, and MNIST and CIFAR-10 from a folder the user gives (torchvision
readers, download=False). Class subsets for task paths and seeded train/validation splits.

Every loader returns a `Data(x, y, classes, name)`: x float (N, ...) in [0, 1], y long (N,).
A missing folder is one clear error naming it; nothing is downloaded.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SUBSETS = {
    "0-4": (0, 1, 2, 3, 4),
    "5-9": (5, 6, 7, 8, 9),
    "vehicles": (0, 1, 8, 9),  # CIFAR-10: airplane, automobile, ship, truck
    "animals": (2, 3, 4, 5),  # CIFAR-10: bird, cat, deer, dog
}


@dataclass
class Data:
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple
    name: str

    def __len__(self):
        return self.x.shape[0]

    def to(self, dtype=None, device=None) -> "Data":
        return Data(self.x.to(dtype=dtype, device=device), self.y.to(device=device), self.classes, self.name)

    def flat(self) -> "Data":
        """Inputs flattened to (N, features), for the MLPs."""
        return Data(self.x.reshape(len(self), -1), self.y, self.classes, self.name)


def load_digits(dtype=torch.float32) -> Data:
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features scaled to [0, 1])."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.data / 16.0, dtype=dtype)
    return Data(x, torch.tensor(d.target, dtype=torch.long), tuple(str(i) for i in range(10)), "digits")


class DataFileError(ValueError):
    """A data file that is there but cannot be read as what it should be (truncated, empty,
    not IDX, labels that do not match the images); the message is one line naming the file."""


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST-format (IDX) file of unsigned bytes, gzipped or not; a damaged one is a
    DataFileError naming the file and what is wrong."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except EOFError:
        raise DataFileError(f"{path}: truncated (the gzip stream ends early); download or copy it again") from None
    except OSError as e:  # gzip.BadGzipFile, a directory, permissions, an I/O error
        raise DataFileError(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataFileError(f"{path}: not an IDX file of unsigned bytes ({len(data)} bytes, header "
                            f"{data[:4].hex() or 'empty'}; expected 000008xx)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataFileError(f"{path}: truncated inside its header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != need:
        raise DataFileError(f"{path}: {'truncated' if len(data) < need else 'too long'}: {len(data)} bytes, its "
                            f"header (shape {shape}) needs {need}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _images_and_labels(image_file: Path, label_file: Path):
    """Images (N, 28, 28) and labels (N,) from a pair of IDX files that must agree."""
    images, labels = _read_idx(image_file), _read_idx(label_file)
    if images.ndim != 3:
        raise DataFileError(f"{image_file}: expected images (N, rows, cols), got shape {images.shape}")
    if labels.ndim != 1:
        raise DataFileError(f"{label_file}: expected labels (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataFileError(f"{label_file} has {len(labels)} labels but {image_file} has {len(images)} images")
    if len(images) == 0:
        raise DataFileError(f"{image_file}: no images")
    return images, labels


def load_fashion_mnist(root=FASHION_MNIST_DIR, train: bool = True, dtype=torch.float32) -> Data:
    """Fashion-MNIST (28x28, 10 classes) from the IDX files of the Debian package's folder."""
    root = Path(root)
    prefix = "train" if train else "t10k"
    images = [root / f"{prefix}-images-idx3-ubyte{ext}" for ext in (".gz", "")]
    labels = [root / f"{prefix}-labels-idx1-ubyte{ext}" for ext in (".gz", "")]
    image_file = next((p for p in images if p.exists()), None)
    label_file = next((p for p in labels if p.exists()), None)
    if image_file is None or label_file is None:
        raise FileNotFoundError(f"Fashion-MNIST not found in {root}: expected {images[0].name} and {labels[0].name} "
                                f"(apt-get install dataset-fashion-mnist, or pass the folder that holds them)")
    images, labels = _images_and_labels(image_file, label_file)
    x = torch.tensor(images, dtype=dtype)[:, None] / 255.0
    y = torch.tensor(labels.astype(np.int64))
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    return Data(x, y, classes, "fashion-mnist")


def _torchvision(cls, name: str, expected: str, root, train: bool):
    """A torchvision data set read from `root` with download=False; absent files: one line."""
    root = Path(root)
    try:
        return cls(str(root), train=train, download=False)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        if (root / expected).exists():
            raise DataFileError(f"{name} in {root} is damaged or incomplete ({root / expected} is there, but reading "
                                f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        raise FileNotFoundError(f"{name} not found in {root}: expected torchvision's layout {root}/{expected} etc. "
                                f"(it is never downloaded here)") from e


def load_mnist(root, train: bool = True, dtype=torch.float32) -> Data:
    """MNIST from `root` in torchvision's layout (root/MNIST/raw/...-idx3-ubyte[.gz]), never
    downloaded. The IDX files are read here (the same bytes torchvision reads), so a missing
    file and a damaged one are told apart, each naming the file."""
    raw = Path(root) / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = next((p for p in (raw / f"{prefix}-{kind}", raw / f"{prefix}-{kind}.gz") if p.exists()), None)
        if found is None:
            raise FileNotFoundError(f"MNIST not found in {root}: expected torchvision's layout {raw}/{prefix}-{kind} "
                                    f"(it is never downloaded here)")
        files.append(found)
    images, labels = _images_and_labels(*files)
    x = torch.tensor(images, dtype=dtype)[:, None] / 255.0
    return Data(x, torch.tensor(labels.astype(np.int64)), tuple(str(i) for i in range(10)), "mnist")


def load_cifar10(root, train: bool = True, dtype=torch.float32) -> Data:
    """CIFAR-10 from `root` in torchvision's layout (root/cifar-10-batches-py/...), never downloaded."""
    from torchvision.datasets import CIFAR10

    ds = _torchvision(CIFAR10, "CIFAR-10", "cifar-10-batches-py/data_batch_1", root, train)
    x = torch.tensor(ds.data, dtype=dtype).permute(0, 3, 1, 2) / 255.0
    return Data(x, torch.tensor(ds.targets, dtype=torch.long), CIFAR10_CLASSES, "cifar10")


def as_rgb32(data: Data) -> Data:
    """A grayscale 28x28 (or 8x8 flat) set as 32x32 RGB, zero-padded and with the channel
    repeated: the CIFAR-shape model on data that installs here (CPU stand-in for CIFAR-10)."""
    x = data.x
    if x.dim() == 2:
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(-1, 1, side, side)
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[2] > 32 or x.shape[3] > 32:
        raise ValueError(f"as_rgb32 needs images of at most 32x32 with 1 or 3 channels, "
                         f"got shape {tuple(data.x.shape)}")
    top, left = (32 - x.shape[2]) // 2, (32 - x.shape[3]) // 2
    x = torch.nn.functional.pad(x, (left, 32 - x.shape[3] - left, top, 32 - x.shape[2] - top))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return Data(x, data.y, data.classes, f"{data.name}:rgb32")


def class_subset(data: Data, classes, relabel: bool = False) -> Data:
    """The samples whose label is in `classes` (names from SUBSETS or label numbers).

    relabel=True maps the kept labels to 0..len(classes)-1 in the order given."""
    if isinstance(classes, str):
        if classes not in SUBSETS:
            raise ValueError(f"unknown class subset {classes!r}; valid: {', '.join(SUBSETS)}")
        classes = SUBSETS[classes]
    classes = tuple(int(c) for c in classes)
    keep = torch.isin(data.y, torch.tensor(classes))
    y = data.y[keep]
    if relabel:
        lookup = torch.full((int(data.y.max()) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(classes)] = torch.arange(len(classes))
        y = lookup[y]
        names = tuple(data.classes[c] for c in classes)
    else:
        names = data.classes
    return Data(data.x[keep], y, names, f"{data.name}[{','.join(map(str, classes))}]")


def train_val_split(data: Data, val_fraction: float = 0.2, seed: int = 0, limit: int | None = None,
                    val_limit: int | None = None):
    """A seeded random split into (train, validation); `limit` and `val_limit` cap their sizes.
    ValueError (one line naming the option and the split's size) for a cap beyond the split:
    a cap that caps nothing would be taken silently for a smaller set."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * len(data)))
    val, train = perm[:n_val], perm[n_val:]
    for option, cap, part, what in (("limit", limit, train, "training"), ("val_limit", val_limit, val, "validation")):
        if cap is not None and cap > len(part):
            raise ValueError(f"{option} = {cap} exceeds the {len(part)} {what} samples of {data.name} "
                             f"(val_fraction = {val_fraction}); give at most {len(part)}")
    if limit is not None:
        train = train[:limit]
    if val_limit is not None:
        val = val[:val_limit]
    pick = lambda idx, tag: Data(data.x[idx], data.y[idx], data.classes, f"{data.name}:{tag}")  # noqa: E731
    return pick(train, "train"), pick(val, "val")
