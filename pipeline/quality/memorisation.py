"""Memorisation: is a synthetic image a near-copy of one of the generator's training images?

For every synthetic image, its nearest neighbour among the training images (the real 20% sample the
generator saw), in two spaces: pixels (both sides decoded and resized the same way, [0, 1], RMS
distance) and features (the domain extractor's, L2-normalised, Euclidean). The flagging threshold of a
space is calibrated on real data: each training image's distance to its nearest *other* training image
(images of one near-duplicate group do not count as each other's neighbours), and the threshold is the
``quantile`` (default 1%) of those distances. A synthetic image is flagged when it is closer to a
training image than that in either space: closer than 99% of real images are to their nearest distinct
real image. A fresh sample from the training distribution is then flagged with probability about
``quantile`` per space; a copy (distance ~0) always is.

Beside it, the criterion of Gu et al. (arXiv 2310.02664): the ratio of a synthetic image's distance to its
nearest training image and to its second nearest; under 1/3 counts as a copy (a copy sits on one training
image, a fresh sample about as far from its first as from its second neighbour). It needs no calibration,
so it reads the same on every data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _normalise(x: np.ndarray, space: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if space == "feature":
        return torch.nn.functional.normalize(t, dim=1)
    return t / np.sqrt(max(t.shape[1], 1))  # pixel space: RMS distance


def nearest(query: torch.Tensor, reference: torch.Tensor, exclude: np.ndarray | None = None,
            chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of each query's nearest reference; ``exclude[i, j]`` True hides a pair."""
    dists, index = [], []
    for start in range(0, len(query), chunk):
        d = torch.cdist(query[start:start + chunk], reference)
        if exclude is not None:
            d[torch.as_tensor(exclude[start:start + chunk])] = float("inf")
        value, position = d.min(dim=1)
        dists.append(value)
        index.append(position)
    return torch.cat(dists).numpy(), torch.cat(index).numpy()


COPY_RATIO = 1.0 / 3.0  # Gu et al.: nearest / second-nearest distance under this is a copy


def nearest_two(query: torch.Tensor, reference: torch.Tensor, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest reference of each query ((N,), (N,); inf with one reference)."""
    first, second = [], []
    for start in range(0, len(query), chunk):
        d = torch.cdist(query[start:start + chunk], reference)
        values = torch.topk(d, k=min(2, d.shape[1]), dim=1, largest=False).values
        first.append(values[:, 0])
        second.append(values[:, 1] if values.shape[1] > 1 else torch.full_like(values[:, 0], float("inf")))
    return torch.cat(first).numpy(), torch.cat(second).numpy()


def real_to_real(reference: torch.Tensor, groups: list[object] | None = None) -> np.ndarray:
    """Each training image's distance to its nearest other training image outside its near-duplicate group."""
    n = len(reference)
    exclude = np.eye(n, dtype=bool)
    if groups is not None:
        g = np.array([("single", i) if v is None else ("group", v) for i, v in enumerate(groups)], dtype=object)
        keys = np.array([str(x) for x in g])
        exclude |= keys[:, None] == keys[None, :]
    distances, _ = nearest(reference, reference, exclude)
    return distances[np.isfinite(distances)]


@dataclass
class SpaceResult:
    space: str  # "pixel" or "feature"
    threshold: float
    distances: np.ndarray  # per synthetic image, to its nearest training image
    neighbour: np.ndarray  # index of that training image
    calibration: np.ndarray  # real-to-real nearest-neighbour distances
    ratio: np.ndarray | None = None  # nearest / second-nearest training distance (Gu et al.)

    @property
    def flagged(self) -> np.ndarray:
        return self.distances < self.threshold

    @property
    def copies(self) -> np.ndarray:
        """Gu et al.'s copies: nearest training image under 1/3 of the distance to the second nearest."""
        return self.ratio < COPY_RATIO if self.ratio is not None else np.zeros(len(self.distances), dtype=bool)


def check_space(synthetic: np.ndarray, training: np.ndarray, space: str, quantile: float,
                groups: list[object] | None = None) -> SpaceResult:
    """Nearest training neighbour of every synthetic vector and the calibrated threshold in one space."""
    train = _normalise(training, space)
    synth = _normalise(synthetic, space)
    calibration = real_to_real(train, groups)
    if len(calibration) == 0:
        raise ValueError("memorisation needs at least two distinct training images to calibrate its threshold")
    threshold = float(np.quantile(calibration, quantile))
    distances, neighbour = nearest(synth, train)
    first, second = nearest_two(synth, train)
    ratio = np.divide(first, second, out=np.zeros_like(first), where=second > 0)
    return SpaceResult(space, threshold, distances, neighbour, calibration, ratio)


def flagged_per_class(labels: np.ndarray, flagged: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for name in class_names:
        mask = labels == name
        n = int(mask.sum())
        k = int(flagged[mask].sum())
        out[name] = {"images": n, "flagged": k, "fraction": k / n if n else 0.0}
    return out
