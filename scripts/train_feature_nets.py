"""Train the small feature classifiers that FID/KID/IS use on digits and Fashion-MNIST.

Deterministic on one CPU thread (seeded weights, batch order and augmentation); about 20 s for digits and
two minutes for Fashion-MNIST on one core. Writes core/gan/assets/<name>-classifier.safetensors and
prints held-out accuracy and each file's sha256, to be pasted into CLASSIFIERS in core/gan/classifier.py.
The training images come from core.gan.data.load_images, so a change to its resizing calls for a retrain.
Bit-identical files need the same torch build and CPU kernels; on another machine the
accuracy repeats but the hash may not, which is why the hash is pinned rather than recomputed.

    .venv/bin/python scripts/train_feature_nets.py [--only digits|fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from core.gan.classifier import ASSETS, CLASSIFIERS, SmallClassifier, sha256_file, to_classifier_input
from core.gan.data import DEBIAN_FASHION_MNIST, load_images, read_idx_images, read_idx_labels

SEED = 0
MAX_SHIFT = 2  # pixels at 32x32: small enough to keep a digit whole, large enough to stop pixel matching


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    images = load_images("digits", 32, 1).images
    labels = torch.from_numpy(load_digits().target.astype(np.int64))
    if len(images) != len(labels):
        raise ValueError(f"digits: {len(images)} images but {len(labels)} labels")
    # 1797 images: hold out a seeded 20% for the accuracy report; train on the rest
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED))
    held = len(images) // 5
    return images[order[held:]], labels[order[held:]], images[order[:held]], labels[order[:held]]


def fashion_mnist_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    def labels(prefix: str) -> torch.Tensor:
        return torch.from_numpy(read_idx_labels(DEBIAN_FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz")
                                .astype(np.int64))

    if not (DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").exists():
        raise SystemExit(f"{DEBIAN_FASHION_MNIST}: Debian's dataset-fashion-mnist files are needed")
    # train: load_images() reads the same IDX file and resizes it exactly as training and metrics will
    train_x, train_y = load_images("fashion-mnist", 32, 1).images, labels("train")
    # held out: the official t10k split, left at 28x28 so the classifier's own resize brings it to 32x32
    held_x = torch.from_numpy(read_idx_images(DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").copy())
    held_y = labels("t10k")
    for what, x, y in (("train", train_x, train_y), ("t10k", held_x, held_y)):
        if len(x) != len(y):
            raise ValueError(f"fashion-mnist {what}: {len(x)} images but {len(y)} labels")
    return train_x, train_y, held_x[:, None], held_y


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to MAX_SHIFT whole pixels, filling with the background value -1."""
    n, _, h, w = x.shape
    padded = F.pad(x, (MAX_SHIFT,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * MAX_SHIFT)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    return shifted.gather(3, cols)


def accuracy(model: SmallClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        predictions = torch.cat([model(to_classifier_input(images[i:i + 1000])).argmax(1)
                                 for i in range(0, len(images), 1000)])
    return (predictions == labels).float().mean().item()


def train(name: str, epochs: int, batch_size: int, lr: float) -> Path:
    torch.manual_seed(SEED)
    train_x, train_y, held_x, held_y = {"digits": digits_data, "fashion-mnist": fashion_mnist_data}[name]()
    inputs = to_classifier_input(train_x)
    # NHWC is ~1.5x faster for these small convs on CPU (oneDNN); it changes no maths
    model = SmallClassifier().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(inputs) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for i in range(0, len(inputs), batch_size):
            index = order[i:i + batch_size]
            loss = F.cross_entropy(model(random_shift(inputs[index], generator)), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        print(f"{name}: epoch {epoch + 1}/{epochs} loss {total / len(inputs):.4f} "
              f"({time.perf_counter() - start:.0f}s)")
    held_acc = accuracy(model, held_x, held_y)
    path = ASSETS / CLASSIFIERS[name][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    info = {
        "name": name, "input": "1x32x32 float in [-1, 1]", "feature_dim": model.head.in_features,
        "num_classes": model.head.out_features, "held_out_accuracy": round(held_acc, 4),
        "train_images": len(inputs), "held_out_images": len(held_x), "seed": SEED, "torch": torch.__version__,
    }
    # one metadata key: safetensors writes a multi-key metadata map in hash order, which changes the
    # file's bytes (and sha256) from run to run although the weights are identical
    save_file(state, str(path), metadata={"feature_net": json.dumps(info, sort_keys=True)})
    print(f"{name}: held-out accuracy {held_acc:.4f} on {len(held_x)} images; train accuracy (<=10k) "
          f"{accuracy(model, train_x[:10000], train_y[:10000]):.4f}")
    print(f"{name}: wrote {path} ({path.stat().st_size} bytes) sha256 {sha256_file(path)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CLASSIFIERS), help="train just this classifier")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives reproducible bytes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    # epochs chosen so each run takes well under a minute on one core and accuracy has flattened out
    plans = {"digits": dict(epochs=15, batch_size=64, lr=3e-3),
             "fashion-mnist": dict(epochs=3, batch_size=128, lr=3e-3)}
    for name, plan in plans.items():
        if args.only in (None, name):
            train(name, **plan)


if __name__ == "__main__":
    main()
