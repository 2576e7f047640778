"""Near-duplicate images in the real data: perceptual hashes at ingest, groups kept on one split side.

Exact duplicates (same bytes) are collapsed by ``pipeline.validate``. Re-encoded or rescaled copies of
the same slice have different bytes but the same picture; if one copy is in the training sample and
another is held out, the held-out accuracy is inflated. Every usable image gets a 256-bit perceptual
hash (``imagehash.phash`` with ``hash_size=16`` on the grayscale image, so L and RGB files of the same
picture hash alike) and images whose hashes differ in at most ``data.near_duplicate_bits`` bits are
joined into one group (transitively, union-find). ``pipeline.split`` then treats a group like a
patient: all of it goes to one side.

Threshold (default 12 of 256 bits), measured on the shared benchmark data with
``python -m benchmarks.bench_near_duplicates --calibrate`` (results in benchmarks/results/): 300 copies
rescaled by a random factor in [0.5, 1.5] and re-encoded as JPEG at quality 50-95 differ from their
originals by at most 12 bits on brain-mri (99% within 8) and at most 6 bits on covid-ct, while the
nearest *distinct-content* neighbours on brain-mri are bimodal with a valley at 12-14 bits (the lower
mode is the dataset's own re-encoded copies: 1,269 images) and on covid-ct only 2 images have a
neighbour within 12 bits (the next within 16: 20 images). A 64-bit pHash (``hash_size=8``) cannot
separate copies from ordinary neighbouring slices on brain-mri (1,702 images had a neighbour at 0 bits).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HASH_SIZE = 16  # 16x16 = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
DEFAULT_MAX_BITS = 12


def perceptual_hash(pixels: np.ndarray) -> str:
    """256-bit pHash of an HxW or HxWx3 uint8 image, as 64 hex characters (grayscale first)."""
    import imagehash
    from PIL import Image

    image = Image.fromarray(pixels)
    if image.mode != "L":
        image = image.convert("L")
    return str(imagehash.phash(image, hash_size=HASH_SIZE))


def hash_words(hashes: list[str] | pd.Series) -> np.ndarray:
    """Hex hashes -> (N, 4) uint64 words for fast Hamming distances."""
    raw = b"".join(bytes.fromhex(h) for h in hashes)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hashes), -1)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two (N, W) and (M, W) uint64 word arrays."""
    out = np.zeros((len(a), len(b)), dtype=np.int32)
    for word in range(a.shape[1]):
        out += np.bitwise_count(a[:, word, None] ^ b[None, :, word])
    return out


def near_duplicate_groups(hashes: list[str] | pd.Series, max_bits: int, chunk: int = 1024) -> np.ndarray:
    """Group index per image (transitive closure of 'within max_bits'); -1 for an image with no near copy."""
    n = len(hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n and max_bits >= 0:
        words = hash_words(list(hashes))
        for start in range(0, n, chunk):
            dist = hamming_matrix(words[start:start + chunk], words[start:])
            rows, cols = np.nonzero(dist <= max_bits)
            for r, c in zip(rows.tolist(), cols.tolist()):
                i, j = start + r, start + c
                if i < j:
                    ri, rj = find(i), find(j)
                    if ri != rj:
                        parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    sizes = np.bincount(roots, minlength=n)
    out = np.full(n, -1, dtype=np.int64)
    multi = sorted({int(r) for r in roots if sizes[r] > 1})
    index = {r: k for k, r in enumerate(multi)}
    for i, r in enumerate(roots.tolist()):
        if sizes[r] > 1:
            out[i] = index[r]
    return out


def assign_groups(manifest: pd.DataFrame, max_bits: int) -> pd.DataFrame:
    """Add ``dup_group`` (``nd-<sha256 of the group's first member>``, or None) from the ``phash`` column.

    The id is derived from content, not listing order, so adding an unrelated image never renames a group.
    """
    table = manifest.copy()
    table["dup_group"] = pd.Series([None] * len(table), index=table.index, dtype=object)
    if "phash" not in table or table.empty or max_bits < 0:
        return table
    order = table.sort_values("sha256").index
    groups = near_duplicate_groups(table.loc[order, "phash"].tolist(), max_bits)
    first: dict[int, str] = {}
    for idx, g in zip(order, groups.tolist()):
        if g >= 0:
            first.setdefault(g, str(table.at[idx, "sha256"]))
            table.at[idx, "dup_group"] = f"nd-{first[g][:16]}"
    return table


def group_listing(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per grouped image: group, size, labels in the group, relpath (for ``near_duplicates.csv``)."""
    if "dup_group" not in manifest:
        return pd.DataFrame(columns=["dup_group", "size", "labels", "relpath", "label", "sha256"])
    grouped = manifest[manifest["dup_group"].notna()]
    sizes = grouped.groupby("dup_group")["relpath"].transform("size")
    labels = grouped.groupby("dup_group")["label"].transform(lambda s: ",".join(sorted(set(map(str, s)))))
    out = pd.DataFrame({"dup_group": grouped["dup_group"], "size": sizes, "labels": labels,
                        "relpath": grouped["relpath"], "label": grouped["label"], "sha256": grouped["sha256"]})
    return out.sort_values(["dup_group", "relpath"]).reset_index(drop=True)


def group_notes(manifest: pd.DataFrame, max_bits: int) -> list[str]:
    """Sentences for notes.txt: how many groups, how many images, which groups mix labels."""
    listing = group_listing(manifest)
    if listing.empty:
        return []
    n_groups = listing["dup_group"].nunique()
    mixed = sorted(listing.loc[listing["labels"].str.contains(","), "dup_group"].unique())
    notes = [f"near-duplicates: {len(listing)} images in {n_groups} group(s) of perceptual copies (pHash "
             f"{HASH_BITS} bits, <= {max_bits} bits apart; data.near_duplicate_bits); each group stays on one "
             f"side of the split; listed in near_duplicates.csv"]
    if mixed:
        notes.append(f"near-duplicates: {len(mixed)} group(s) mix labels (same picture, different class), e.g. "
                     f"{', '.join(mixed[:3])}; check the labels")
    return notes


def crossing_groups(table: pd.DataFrame, split_column: str = "split") -> pd.DataFrame:
    """Groups with members on both sides of a split: (dup_group, train members, test members)."""
    if "dup_group" not in table:
        return pd.DataFrame(columns=["dup_group", "train", "test"])
    grouped = table[table["dup_group"].notna()]
    sides = grouped.groupby(["dup_group", split_column]).size().unstack(fill_value=0)
    for side in ("train", "test"):
        if side not in sides:
            sides[side] = 0
    crossing = sides[(sides["train"] > 0) & (sides["test"] > 0)]
    return crossing[["train", "test"]].reset_index()
