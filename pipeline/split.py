"""The leakage-proof 20/80 split: a stratified training sample for the generator, the rest held out.

Without patient ids the sample is drawn per class (exactly round(fraction * n) images, at least
``cv_folds``). With patient ids it is one fold of scikit-learn's StratifiedGroupKFold, so no
patient is on both sides. Near-duplicate groups from ingest (``dup_group``: re-encoded or rescaled
copies of one picture) are kept whole in the same way: without patient ids, the plain per-image draw
is kept when no group straddles it, and otherwise a class's sample is drawn group by group; with patient
ids, a group joins its patients' unit. Rows are ordered by content hash before
drawing, so the split depends on the images and the seed, not on file names or listing order.
``verify_split`` proves the sides share no file, no content, no patient and no near-duplicate
group; every stage that reads a split calls it.

With ``split.dev_fraction`` > 0 a stratified, group-aware share of the held-out side becomes the
development set (``dev``): benchmarks and ablations choose defaults on it, and the rest (``test``)
is read once, by the final scoring of frozen models. The dev draw happens after the training sample
and never moves a training row, so everything trained on the sample is the same with or without it.

Two hashes: ``split_hash`` covers every row's side (what scoring depends on); ``training_hash``
covers only the training sample (content, label, patient, near-duplicate group), which is all that
the generator, synthesis, quality and the classifier fits may depend on: relabelling or replacing
a held-out image changes the first and never the second.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import SplitConfig, hash_payload
from pipeline.errors import DataError, LeakageError

TRAIN, DEV, TEST = "train", "dev", "test"
SIDES = (TRAIN, DEV, TEST)


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
    def dev(self) -> pd.DataFrame:
        """The development share of the held-out side (empty unless ``split.dev_fraction`` > 0)."""
        return self.table[self.table["split"] == DEV].reset_index(drop=True)

    @property
    def test(self) -> pd.DataFrame:
        return self.table[self.table["split"] == TEST].reset_index(drop=True)

    @property
    def training_hash(self) -> str:
        return training_hash(self.table)

    def counts(self) -> dict[str, dict[str, int]]:
        table = self.table.groupby(["label", "split"]).size().unstack(fill_value=0)
        sides = SIDES if (self.table["split"] == DEV).any() else (TRAIN, TEST)
        return {str(label): {side: int(table.loc[label].get(side, 0)) for side in sides}
                for label in table.index}

    def summary(self) -> dict[str, object]:
        return {"split_hash": self.split_hash, "training_hash": self.training_hash, "seed": self.seed,
                "train_fraction": self.train_fraction,
                "grouped": self.grouped, "near_duplicate_groups": int(self.table["dup_group"].nunique())
                if "dup_group" in self.table else 0, "train": int((self.table["split"] == TRAIN).sum()),
                "dev": int((self.table["split"] == DEV).sum()),
                "test": int((self.table["split"] == TEST).sum()), "per_class": self.counts()}


def split_key(manifest: pd.DataFrame, config: SplitConfig, seed: int) -> str:
    """Cache key of a split: the images (content, label, patient) and the split settings."""
    rows = sorted(zip(manifest["sha256"], manifest["label"], manifest["patient_id"].fillna("")))
    payload = {"rows": rows, "train_fraction": config.train_fraction, "cv_folds": config.cv_folds, "seed": seed}
    if config.dev_fraction > 0:  # only then: keys of splits without a development set stay as they were
        payload["dev_fraction"] = config.dev_fraction
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
    if config.dev_fraction > 0:
        assignment = _draw_development(table, assignment, config.dev_fraction, seed)
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
    groups = _units(table)
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


def _units(table: pd.DataFrame) -> np.ndarray:
    """The unit a row is drawn with: its patient, else its near-duplicate group, else itself; linked ones merged."""
    dup = _dup_groups(table)
    units = dup.where(dup.notna(), "file:" + table["sha256"].astype(str))
    groups = table["patient_id"].where(table["patient_id"].notna(), units).to_numpy()
    return _merge_linked_groups(groups, dup.to_numpy())


def _draw_development(table: pd.DataFrame, assignment: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Move a stratified, group-aware ``fraction`` of the held-out rows to ``dev`` (training rows never move).

    One fold of scikit-learn's StratifiedGroupKFold over the held-out rows' units (patient, near-duplicate
    group, or file), so no unit is on both sides; a seed stream of its own, so the training draw is unchanged.
    """
    held = np.flatnonzero(assignment == TEST)
    units = _units(table)[held]
    small = min(fraction, 1 - fraction)
    n_splits = max(2, round(1 / small))
    if len(set(units)) < n_splits:
        raise DataError(f"only {len(set(units))} held-out patients/images: split.dev_fraction={fraction} needs at "
                        f"least {n_splits}")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(seed) % (2**32 - 1) + 1)
    with warnings.catch_warnings():  # "least populated class < n_splits": _check_counts says it in our words
        warnings.simplefilter("ignore", UserWarning)
        _, fold = next(splitter.split(np.zeros(len(held)), table["label"].to_numpy()[held], units))
    chosen = np.zeros(len(held), dtype=bool)
    chosen[fold] = True
    if fraction > 0.5:
        chosen = ~chosen
    out = assignment.copy()
    out[held[chosen]] = DEV
    return out


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
        if config.dev_fraction > 0 and sides.get(DEV, 0) < 1:
            raise DataError(f"class {label}: split.dev_fraction={config.dev_fraction} gave no development image "
                            f"({sides[TEST]} held out for test); raise dev_fraction or add images")


def assignment_hash(table: pd.DataFrame) -> str:
    rows = sorted(zip(table["sha256"], table["label"], table["split"]))
    return hash_payload(rows)


def training_hash(table: pd.DataFrame) -> str:
    """Hash of the training sample alone: what every stage upstream of scoring may depend on."""
    train = table[table["split"] == TRAIN]
    patients = train["patient_id"] if "patient_id" in train else pd.Series([None] * len(train), index=train.index)
    groups = _dup_groups(train)
    rows = sorted(zip(train["sha256"].astype(str), train["label"].astype(str),
                      ("" if p is None or p != p else str(p) for p in patients),
                      ("" if g is None else str(g) for g in groups)))
    return hash_payload({"training_rows": rows})


def verify_split(table: pd.DataFrame) -> None:
    """Raise ``LeakageError`` if a file, a content hash, a patient or a near-duplicate group is on two sides."""
    sides = {side: table[table["split"] == side] for side in SIDES}
    problems = []
    for column, what in (("path", "file"), ("sha256", "image content (sha256)"), ("patient_id", "patient"),
                         ("dup_group", "near-duplicate group")):
        if column not in table:
            continue
        for first, second in ((TRAIN, TEST), (TRAIN, DEV), (DEV, TEST)):
            shared = set(sides[first][column].dropna()) & set(sides[second][column].dropna())
            if shared:
                example = sorted(map(str, shared))[:3]
                where = "on both sides" if (first, second) == (TRAIN, TEST) else f"in both {first} and {second}"
                problems.append(f"{len(shared)} {what}(s) {where}, e.g. {', '.join(example)}")
    if problems:
        raise LeakageError("the split leaks held-out data into training: " + "; ".join(problems))

