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
    # Images it loads (core.gan.data: the train split), what core.gan.cost counts epochs and memory by.
    num_images: int | None = None


NAMED_DATASETS = (
    NamedDataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images)", 1, True, 1797),
    NamedDataset("fashion-mnist", "Debian's dataset-fashion-mnist under /usr/share/datasets/fashion-mnist/, "
                                  "else torchvision's downloader", 1, True, 60_000),
    NamedDataset("mnist", "torchvision's downloader (online machines)", 1, False, 60_000),
    NamedDataset("cifar10", "torchvision's downloader (online machines)", 3, False, 50_000),
    NamedDataset("celeba", "torchvision's downloader (online machines)", 3, False, 162_770),
    NamedDataset("fake", "seeded noise, for smoke tests", None, True, 512),
)
NAMES = tuple(dataset.name for dataset in NAMED_DATASETS)
OFFLINE = tuple(dataset.name for dataset in NAMED_DATASETS if dataset.offline)
GRAYSCALE = tuple(dataset.name for dataset in NAMED_DATASETS if dataset.channels == 1)
# How the platform's requests name a dataset of this list (the ones that load offline): builtin:<name>.
BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = tuple(BUILTIN_PREFIX + name for name in OFFLINE)


def builtin_size(reference: str) -> int | None:
    """How many images `builtin:<name>` (or a bare catalog name) loads; None for a name not in the catalog."""
    name = reference.removeprefix(BUILTIN_PREFIX)
    return next((dataset.num_images for dataset in NAMED_DATASETS if dataset.name == name), None)
