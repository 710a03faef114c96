"""The datasets the engine knows by name, and the error for one that cannot be used.

Torch-free and cheap to import, so the API, the worker and the command line (at start-up, for its help)
all name datasets from this one list; the loaders themselves are core.gan.data's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GanError

FOLDER_PREFIX = "folder:"


class DataError(GanError):
    """A dataset that cannot be used; the message names the dataset or file."""


@dataclass(frozen=True)
class NamedDataset:
    name: str
    # Where the images come from, as a user should read it.
    source: str
    # Its own channel count (1: grayscale, so training 3 identical channels would waste work); None: any.
    channels: int | None
    # Loads on a machine without internet: the platform offers only these, as builtin:<name>.
    offline: bool


NAMED_DATASETS = (
    NamedDataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images)", 1, True),
    NamedDataset("fashion-mnist", "Debian's dataset-fashion-mnist under /usr/share/datasets/fashion-mnist/, "
                                  "else torchvision's downloader", 1, True),
    NamedDataset("mnist", "torchvision's downloader (online machines)", 1, False),
    NamedDataset("cifar10", "torchvision's downloader (online machines)", 3, False),
    NamedDataset("celeba", "torchvision's downloader (online machines)", 3, False),
    NamedDataset("fake", "seeded noise, for smoke tests", None, True),
)
NAMES = tuple(dataset.name for dataset in NAMED_DATASETS)
OFFLINE = tuple(dataset.name for dataset in NAMED_DATASETS if dataset.offline)
GRAYSCALE = tuple(dataset.name for dataset in NAMED_DATASETS if dataset.channels == 1)
# How the platform's requests name a dataset of this list (the ones that load offline): builtin:<name>.
BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = tuple(BUILTIN_PREFIX + name for name in OFFLINE)
