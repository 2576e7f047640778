"""K-fold cross-validation folds for one arm, and the proof that the held-out set is never in one.

Folds are stratified by label (scikit-learn's StratifiedKFold) and, when rows carry patient ids,
grouped too (StratifiedGroupKFold), so one patient's slices never sit on both sides of a fold; so are
near-duplicate groups from ingest (``dup_group``), so copies of one slice never straddle a fold.
Rows are sorted by content hash first: the folds depend on the images and the seed only, not on
file names or listing order, and the same call always gives the same folds.

``fold_plan`` says what one fit trains and validates on. With ``validation: real`` (the default)
the folds are those of the real 20% sample, whatever the arm: fold k's real images validate every
arm (early stopping and model selection never see a synthetic image), and the arm trains on its
pool minus those images (minus their patients, minus synthetic images seeded from them). With
``validation: arm`` (the old protocol, kept for the ablation) the folds are the arm's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from pipeline.errors import DataError, LeakageError
from pipeline.hashing import hash_payload


@dataclass(frozen=True)
class FoldPlan:
    """One fit's rows: ``train`` indexes the arm table, ``val`` indexes the table named by ``val_table``."""

    train: np.ndarray
    val: np.ndarray
    val_table: str  # "real" (the real 20% sample) or "arm" (the arm's own table)

    @property
    def digest(self) -> str:
        """Which rows train and validate (fit keys hash it: patients, near-duplicate groups and the fold
        algorithm all reach a fit through these rows, whatever the manifests' content hashes say)."""
        return hash_payload([self.val_table, self.train.tolist(), self.val.tolist()])


def canonical_order(manifest: pd.DataFrame) -> pd.DataFrame:
    """The arm's rows in content-hash order (the order folds and cached tensors are defined on)."""
    return manifest.sort_values(["sha256", "label"], kind="stable").reset_index(drop=True)


def fold_indices(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train_index, val_index) pairs over rows in the given order; stratified, deterministic."""
    labels = np.asarray(labels)
    counts = pd.Series(labels).value_counts()
    if (counts < folds).any():
        small = ", ".join(f"{k} ({v})" for k, v in counts[counts < folds].items())
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} images per class; "
                        f"too few in: {small}. Lower split.cv_folds or add images")
    dummy = np.zeros(len(labels))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        pairs = splitter.split(dummy, labels, groups)
    else:
        pairs = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(dummy, labels)
    return [(np.sort(train), np.sort(val)) for train, val in pairs]


def fold_plan(arm: pd.DataFrame, real: pd.DataFrame, fold: int, folds: int, seed: int,
              validation: str) -> FoldPlan:
    """Train/validation rows of fold ``fold`` (both tables in canonical order)."""
    return fold_plans(arm, real, folds, seed, validation)[fold]


def fold_plans(arm: pd.DataFrame, real: pd.DataFrame, folds: int, seed: int, validation: str) -> list[FoldPlan]:
    """Every fold's train/validation rows (both tables in canonical order), the folds formed once."""
    if validation == "arm":
        return [FoldPlan(train, val, "arm")
                for train, val in fold_indices(arm["label"].to_numpy(), groups_of(arm), folds, seed)]
    if validation != "real":
        raise ValueError(f"validation must be 'real' or 'arm', got {validation!r}")
    return [_real_validated(arm, real, val)
            for _, val in fold_indices(real["label"].to_numpy(), groups_of(real), folds, seed)]


def _real_validated(arm: pd.DataFrame, real: pd.DataFrame, val: np.ndarray) -> FoldPlan:
    """The arm's rows minus real validation rows ``val`` (and their patients and the synthetic images they seeded)."""
    held = set(real["sha256"].iloc[val].astype(str))
    excluded = arm["sha256"].astype(str).isin(held)
    if "seed_sha256" in arm:  # real-seeded synthetic images are near copies of their seeds
        excluded = excluded | (arm["seed_sha256"].notna() & arm["seed_sha256"].astype(str).isin(held))
    if "patient_id" in arm and "patient_id" in real:
        patients = set(real["patient_id"].iloc[val].dropna().astype(str))
        excluded = excluded | (arm["patient_id"].notna() & arm["patient_id"].astype(str).isin(patients))
    return FoldPlan(np.flatnonzero(~excluded.to_numpy(dtype=bool)), np.sort(val), "real")


def groups_of(manifest: pd.DataFrame) -> np.ndarray | None:
    """Fold groups: images linked by a shared patient id or a shared near-duplicate group (``dup_group``).

    Near-duplicates (re-encoded or rescaled copies of one slice) in the training and validation folds
    would let early stopping and model selection score images the fit has effectively seen; a copy
    filed under another patient links both patients. Connected components of those links, so every
    image with neither is its own group. None when no row has a patient or a near-duplicate group.
    """
    columns = [c for c in ("patient_id", "dup_group") if c in manifest and manifest[c].notna().any()]
    if not columns:
        return None
    heads, tails = [], []
    for column in columns:  # link every row to the first row with the same key
        keys = manifest[column].astype("object")
        known = np.flatnonzero(keys.notna().to_numpy())
        _, first, inverse = np.unique(keys.iloc[known].astype(str).to_numpy(), return_index=True, return_inverse=True)
        heads.append(known)
        tails.append(known[first[inverse]])
    n = len(manifest)
    links = coo_matrix((np.ones(sum(len(h) for h in heads)), (np.concatenate(heads), np.concatenate(tails))),
                       shape=(n, n))
    _, component = connected_components(links, directed=False)
    return np.array([f"group:{c}" for c in component], dtype=object)


def assert_disjoint_from_test(arm: pd.DataFrame, test: pd.DataFrame, arm_name: str) -> None:
    """Raise LeakageError when any arm image (by content hash) or patient is in the held-out set."""
    shared = set(arm["sha256"]) & set(test["sha256"])
    if shared:
        raise LeakageError(f"arm {arm_name!r}: {len(shared)} image(s) of its training data are also in the "
                           f"held-out real test set (by content hash), e.g. {sorted(shared)[0][:16]}; "
                           f"the evaluation would be dishonest")
    if "patient_id" in arm and "patient_id" in test:
        patients = set(arm["patient_id"].dropna()) & set(test["patient_id"].dropna())
        if patients:
            raise LeakageError(f"arm {arm_name!r}: patient(s) {sorted(map(str, patients))[:3]} appear in both its "
                               f"training data and the held-out real test set")
