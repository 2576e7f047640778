"""The leakage-proof 20/80 split: a stratified training sample for the generator, the rest held out.

Without patient ids the sample is drawn per class (exactly round(fraction * n) images, at least
``cv_folds``). With patient ids it is one fold of scikit-learn's StratifiedGroupKFold, so no
patient is on both sides. Near-duplicate groups from ingest (``dup_group``: re-encoded or rescaled
copies of one picture) are kept whole in the same way: without patient ids, the plain per-image draw
is kept when no group straddles it, and otherwise a class's sample is drawn group by group; with patient
ids, a group joins its patients' unit. Rows are ordered by content hash before
drawing, so the split depends on the images and the seed, not on file names or listing order.
``verify_split`` proves the two sides share no file, no content, no patient and no near-duplicate
group; every stage that reads a split calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import SplitConfig, hash_payload
from pipeline.errors import DataError, LeakageError

TRAIN, TEST = "train", "test"


@dataclass
class Split:
    table: pd.DataFrame  # the manifest plus a ``split`` column (train | test)
    split_hash: str  # content hash of the assignment: later stages key their outputs on it
    seed: int
    train_fraction: float
    grouped: bool

    @property
    def train(self) -> pd.DataFrame:
        return self.table[self.table["split"] == TRAIN].reset_index(drop=True)

    @property
    def test(self) -> pd.DataFrame:
        return self.table[self.table["split"] == TEST].reset_index(drop=True)

    def counts(self) -> dict[str, dict[str, int]]:
        table = self.table.groupby(["label", "split"]).size().unstack(fill_value=0)
        return {str(label): {side: int(table.loc[label].get(side, 0)) for side in (TRAIN, TEST)}
                for label in table.index}

    def summary(self) -> dict[str, object]:
        return {"split_hash": self.split_hash, "seed": self.seed, "train_fraction": self.train_fraction,
                "grouped": self.grouped, "near_duplicate_groups": int(self.table["dup_group"].nunique())
                if "dup_group" in self.table else 0, "train": int((self.table["split"] == TRAIN).sum()),
                "test": int((self.table["split"] == TEST).sum()), "per_class": self.counts()}


def split_key(manifest: pd.DataFrame, config: SplitConfig, seed: int) -> str:
    """Cache key of a split: the images (content, label, patient) and the split settings."""
    rows = sorted(zip(manifest["sha256"], manifest["label"], manifest["patient_id"].fillna("")))
    payload = {"rows": rows, "train_fraction": config.train_fraction, "cv_folds": config.cv_folds, "seed": seed}
    groups = _dup_groups(manifest)
    if groups.notna().any():  # only then: keys of data without near-duplicates stay as they were
        payload["dup_groups"] = sorted(zip(manifest["sha256"][groups.notna()], groups[groups.notna()]))
    return hash_payload(payload)


def _dup_groups(table: pd.DataFrame) -> pd.Series:
    """Near-duplicate group per row, None for an image without a near copy (NaN from a table becomes None)."""
    if "dup_group" in table:
        values = table["dup_group"].astype(object)
        return values.where(values.notna(), None)
    return pd.Series([None] * len(table), index=table.index, dtype=object)


def make_split(manifest: pd.DataFrame, config: SplitConfig, seed: int) -> Split:
    """Assign every manifest row to ``train`` (the generator's sample) or ``test`` (held out)."""
    table = manifest.sort_values(["sha256", "relpath"]).reset_index(drop=True)
    grouped = bool(table["patient_id"].notna().any())
    if grouped:
        assignment = _grouped_assignment(table, config, seed)
    else:
        assignment = _per_class_assignment(table, config, seed)
    table["split"] = assignment
    table = table.sort_values(["split", "label", "relpath"], ascending=[False, True, True]).reset_index(drop=True)
    split = Split(table=table, split_hash=assignment_hash(table), seed=seed,
                  train_fraction=config.train_fraction, grouped=grouped)
    verify_split(split.table)
    _check_counts(split, config)
    return split


def _per_class_assignment(table: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    groups = _dup_groups(table).to_numpy()
    plain = _per_class_assignment(table.assign(dup_group=None), config, seed) if any(
        g is not None for g in groups) else None
    if plain is not None and not any(len(set(plain[groups == g])) > 1 for g in {g for g in groups if g is not None}):
        return plain  # no near-duplicate group straddles the plain draw: keep it (and every result keyed on it)
    rng = np.random.default_rng(seed)
    assignment = np.full(len(table), TEST, dtype=object)
    for label in sorted(table["label"].unique()):
        index = np.flatnonzero(table["label"].to_numpy() == label)
        n_train = min(max(round(config.train_fraction * len(index)), config.cv_folds), len(index) - 1)
        if not any(g is not None for g in groups[index]):
            assignment[rng.permutation(index)[:n_train]] = TRAIN
            continue
        # near-duplicate groups are drawn whole: units in a seeded order until the class's quota is reached
        units: dict[str, list[int]] = {}
        for i in index:
            units.setdefault(groups[i] if groups[i] is not None else f"file:{i}", []).append(int(i))
        names = list(units)
        taken = 0
        for k in rng.permutation(len(names)):
            if taken >= n_train:
                break
            members = units[names[k]]
            if taken + len(members) > n_train and taken > 0 and len(members) > 1:
                continue  # a large group would overshoot the quota: leave it held out whole
            assignment[members] = TRAIN
            taken += len(members)
    # a group whose members carry different labels was drawn once per label: keep it on one side (held out)
    for g in {g for g in groups if g is not None}:
        members = np.flatnonzero(groups == g)
        if len(set(assignment[members])) > 1:
            assignment[members] = TEST
    return assignment


def _grouped_assignment(table: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    """One fold of StratifiedGroupKFold; files without a patient id are their own group."""
    units = _dup_groups(table).where(_dup_groups(table).notna(), "file:" + table["sha256"])
    groups = table["patient_id"].where(table["patient_id"].notna(), units).to_numpy()
    groups = _merge_linked_groups(groups, _dup_groups(table).to_numpy())
    small = min(config.train_fraction, 1 - config.train_fraction)
    n_splits = max(2, round(1 / small))
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} patients: group-aware splitting at train_fraction="
                        f"{config.train_fraction} needs at least {n_splits}")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, fold = next(splitter.split(np.zeros(len(table)), table["label"].to_numpy(), groups))
    assignment = np.full(len(table), TEST if config.train_fraction <= 0.5 else TRAIN, dtype=object)
    assignment[fold] = TRAIN if config.train_fraction <= 0.5 else TEST
    return assignment


def _merge_linked_groups(groups: np.ndarray, dup: np.ndarray) -> np.ndarray:
    """Patients linked by a near-duplicate group become one unit (a copy of a slice may carry another id)."""
    parent: dict[object, object] = {}

    def find(x: object) -> object:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for g, d in zip(groups, dup):
        if d is not None:
            a, b = find(g), find(("dup", d))
            if a != b:
                parent[b] = a
    return np.array([str(find(g)) for g in groups], dtype=object)


def _check_counts(split: Split, config: SplitConfig) -> None:
    for label, sides in split.counts().items():
        if sides[TRAIN] < config.cv_folds or sides[TEST] < 1:
            raise DataError(f"class {label}: the split gave {sides[TRAIN]} training and {sides[TEST]} held-out "
                            f"images; {config.cv_folds}-fold CV needs at least {config.cv_folds} training images "
                            f"and evaluation at least one held-out image")


def assignment_hash(table: pd.DataFrame) -> str:
    rows = sorted(zip(table["sha256"], table["label"], table["split"]))
    return hash_payload(rows)


def verify_split(table: pd.DataFrame) -> None:
    """Raise ``LeakageError`` if a file, a content hash or a patient is on both sides of the split."""
    train, test = table[table["split"] == TRAIN], table[table["split"] == TEST]
    problems = []
    for column, what in (("path", "file"), ("sha256", "image content (sha256)"), ("patient_id", "patient"),
                         ("dup_group", "near-duplicate group")):
        if column not in table:
            continue
        shared = set(train[column].dropna()) & set(test[column].dropna())
        if shared:
            example = sorted(map(str, shared))[:3]
            problems.append(f"{len(shared)} {what}(s) on both sides, e.g. {', '.join(example)}")
    if problems:
        raise LeakageError("the split leaks held-out data into training: " + "; ".join(problems))

