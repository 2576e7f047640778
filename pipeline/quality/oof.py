"""Out-of-sample bookkeeping for the quality stage: which fold model embeds which image, and the real halves.

The reference classifier (pipeline.quality.judge: the real arm's k fold models) is trained on the real 20% sample;
every real image lies in the training part of k - 1 of them. A model's features of its own training
images are tighter and better separated than of images it never saw, so features averaged over the
folds compare in-sample real images with unseen synthetic ones: the real-vs-real FD/KID reference is
understated and the FD-ratio gate and the feature-space memorisation threshold are biased against
synthetic data. Here every image is embedded by exactly one fold model:

* a real image by the one model whose validation fold holds it (out of fold);
* a real-seeded synthetic image by the same model as its seed image (a copy of the seed lands exactly
  on the seed's features, so feature-space memorisation sees it);
* any other synthetic image by a model assigned per class in the proportions of the real images'
  folds, so both sides are the same mixture of fold models.

Why not the fold mean for synthetic images: the mean of k models' features is a different map from any
one model's (narrower: the models disagree), so synthetic features would not be compared like with like.
Measured once (phantoms, 150 per class at 32 px, 3 folds x 100 steps of resnet18, CV accuracy 0.57; fresh
phantoms as a perfect generator, 60 per side): FD real half A vs half B (out of fold) 236.7; fresh images
assigned to one fold model each 233.7 (ratio 0.99); fresh images by the fold mean 189.4 (ratio 0.80: the
gate would flatter the generator by a fifth). The old all-fold-mean features gave 66.6 vs 64.1 at this
(weak) training level; the in-sample bias grows as the fold models fit their training images better.

The real halves (real-vs-real reference of FD/KID/P-R) are split with scikit-learn's
StratifiedGroupKFold: a patient or a near-duplicate group is never on both sides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.errors import DataError

MEAN_OF_FOLDS = -1  # the fold column's value for an image embedded by the mean of all fold models


def image_groups(table: pd.DataFrame) -> np.ndarray:
    """One integer group per row: rows sharing a patient id or a near-duplicate group (transitively) share one;
    a row with neither is its own group."""
    n = len(table)
    heads, tails = [np.arange(n)], [np.arange(n)]
    for column in ("patient_id", "dup_group"):
        if column not in table:
            continue
        keys = table[column].astype("object")
        known = np.flatnonzero(keys.notna().to_numpy())
        if len(known) == 0:
            continue
        _, first, inverse = np.unique(keys.iloc[known].astype(str).to_numpy(), return_index=True,
                                      return_inverse=True)
        heads.append(known)
        tails.append(known[first[inverse.ravel()]])
    rows, cols = np.concatenate(heads), np.concatenate(tails)
    links = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(links, directed=False)[1]


def real_halves(train: pd.DataFrame, seed: int) -> np.ndarray:
    """Half A (True) / half B (False) of the real sample: stratified by class, patients and near-duplicate
    groups kept whole (StratifiedGroupKFold, 2 splits, the first split's test side is half A)."""
    from sklearn.model_selection import StratifiedGroupKFold

    in_a = np.zeros(len(train), dtype=bool)
    groups = image_groups(train)
    if len(np.unique(groups)) < 2:
        return in_a  # one group: no honest split exists; half A stays empty and the fidelity rows are skipped
    labels = train["label"].astype(str).to_numpy()
    splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=int(seed) % (2**32))
    import warnings

    with warnings.catch_warnings():  # a class with one group warns that it cannot be on both sides: expected
        warnings.simplefilter("ignore", UserWarning)
        _, half_a = next(splitter.split(np.zeros(len(train)), labels, groups))
    in_a[half_a] = True
    return in_a


def synthetic_folds(labels: np.ndarray, seed_folds: list[int | None], real_labels: np.ndarray,
                    real_folds: np.ndarray, folds: int) -> np.ndarray:
    """The fold model that embeds each synthetic image: its seed's fold when it has a seed, else spread over
    the folds per class in the proportions of that class's real images (a deterministic weighted round robin
    in manifest order)."""
    out = np.full(len(labels), MEAN_OF_FOLDS, dtype=int)
    for i, fold in enumerate(seed_folds):
        if fold is not None:
            out[i] = int(fold)
    for name in np.unique(labels):
        rows = np.flatnonzero((labels == name) & (out == MEAN_OF_FOLDS))
        counts = np.bincount(real_folds[real_labels == name], minlength=folds).astype(float)
        weights = counts / counts.sum() if counts.sum() > 0 else np.full(folds, 1.0 / folds)
        credit = np.zeros(folds)
        for i in rows:  # smooth weighted round robin: exact proportions in the limit, no randomness
            credit += weights
            k = int(np.argmax(credit))
            out[i] = k
            credit[k] -= 1.0
    return out


def seed_sha256s(synthetic: pd.DataFrame) -> list[str | None] | None:
    """The seed image of every real-seeded synthetic image (None for the others); None when no image has one."""
    if "seed_sha256" not in synthetic or not synthetic["seed_sha256"].notna().any():
        return None
    return [str(v) if isinstance(v, str) and v else None for v in synthetic["seed_sha256"]]


def fold_assignment(reference: Any, train_sha: list[str], labels_r: np.ndarray, labels_s: np.ndarray,
                     seeds: list[str | None] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The fold model that embeds each real and each synthetic image (pipeline.quality.oof), or (None, None)
    for a reference without folds (an injected stand-in)."""
    if reference is None or not hasattr(reference, "fold_of") or not getattr(reference, "models", None):
        return None, None
    found = reference.fold_of(train_sha)
    missing = [sha for sha, fold in zip(train_sha, found) if fold is None]
    if missing:
        raise DataError(f"{len(missing)} real training image(s) (e.g. {missing[0][:12]}) are in no validation fold "
                        f"of the reference classifier: it was trained on another split; rerun the reference stage")
    folds_r = np.asarray(found, dtype=int)
    seed_folds = reference.fold_of(seeds) if seeds is not None else [None] * len(labels_s)
    return folds_r, synthetic_folds(labels_s, seed_folds, labels_r, folds_r, len(reference.models))


def embedding_table(side: str, sha256s: list[str], labels: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    """Which fold model embedded which image (by content hash): the stage writes it as ``embedding.parquet``."""
    return pd.DataFrame({"side": side, "sha256": list(map(str, sha256s)), "label": np.asarray(labels).astype(str),
                         "fold": np.asarray(folds, dtype=int)})
