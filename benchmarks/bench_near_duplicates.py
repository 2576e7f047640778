"""Near-duplicate groups in the real data and how many of them the split without grouping put on both sides.

    python -m benchmarks.bench_near_duplicates --domain brain-mri --data ../shared/data/brain-mri
    python -m benchmarks.bench_near_duplicates --domain covid-ct --data ../shared/data/covid-ct

``--calibrate`` adds the threshold's calibration (simulated copies vs nearest distinct neighbours).
Ingests the dataset (validation + 256-bit perceptual hashes + grouping, see
pipeline/near_duplicates.py), then draws the split twice with the same seed: as before this
change (groups ignored: the per-class draw over single images) and as now (groups kept whole). Prints a
table and writes benchmarks/results/near_duplicates-<domain>.json and a row in near_duplicates.md.
No torch: decoding and hashing only. With ``--accuracy`` (torch; run it under the CPU lock) it also
trains the real arm (the config's first architecture, the cpu profile's budget) on both splits and
reports the held-out accuracy: on the old split over all held-out images, over the held-out images
with a near-copy in the training side (leaked) and over the rest; on the new split over all.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline.config import load_domain_config
from pipeline.near_duplicates import crossing_groups, group_listing
from pipeline.split import TEST, TRAIN, make_split
from pipeline.stages import ingest_stage
from pipeline.store import read_table

RESULTS = Path(__file__).resolve().parent / "results"


def measure(domain: str, data: str | None, runs_root: str, seed: int | None) -> dict[str, object]:
    overrides = {"runs_root": runs_root, **({"seed": seed} if seed is not None else {})}
    config = load_domain_config(domain, "cpu", overrides)
    started = time.perf_counter()
    ingest = ingest_stage(config, data, progress=False)
    ingest_seconds = time.perf_counter() - started
    manifest = read_table(ingest.manifest_path)
    listing = group_listing(manifest)
    old = make_split(manifest.drop(columns=["dup_group"]).assign(dup_group=None), config.split, config.seed)
    old_table = old.table.merge(manifest[["sha256", "dup_group"]], on="sha256", suffixes=("_unused", ""))
    crossing = crossing_groups(old_table)
    new = make_split(manifest, config.split, config.seed)
    # held-out images (old split) with a near-copy on the training side: the ones whose accuracy is inflated
    leaked = old_table[(old_table["split"] == TEST) & old_table["dup_group"].isin(set(crossing["dup_group"]))]
    sizes = listing.groupby("dup_group").size() if not listing.empty else None
    return {
        "domain": domain, "seed": config.seed, "bits": config.data.near_duplicate_bits, "usable": int(len(manifest)),
        "quarantined": int(ingest.summary["quarantined"]),
        "groups": int(listing["dup_group"].nunique()) if not listing.empty else 0,
        "images_in_groups": int(len(listing)),
        "largest_group": int(sizes.max()) if sizes is not None else 0,
        "mixed_label_groups": int(listing.loc[listing["labels"].str.contains(","), "dup_group"].nunique())
        if not listing.empty else 0,
        "old_split_crossing_groups": int(len(crossing)),
        "old_split_crossing_images": int(crossing[["train", "test"]].to_numpy().sum()) if len(crossing) else 0,
        "old_split_leaked_test_images": int(len(leaked)),
        "old_split_test_images": int((old_table["split"] == TEST).sum()),
        "new_split_crossing_groups": int(len(crossing_groups(new.table))),
        "old_train": int((old.table["split"] == TRAIN).sum()), "new_train": int((new.table["split"] == TRAIN).sum()),
        "old_split_hash": old.split_hash, "new_split_hash": new.split_hash,
        "ingest_seconds": round(ingest_seconds, 1),
        "leaked_test_sha256": sorted(leaked["sha256"].astype(str).tolist()),
    }


def calibrate(manifest, copies: int = 300, seed: int = 0) -> dict[str, object]:
    """Hamming distance of simulated copies (rescale x0.5-1.5, JPEG q50-95) to their originals, and of every
    image to its nearest distinct-content neighbour: the two distributions the threshold separates."""
    import io

    from PIL import Image

    from pipeline.imageio import read_image
    from pipeline.near_duplicates import HASH_BITS, hamming_matrix, hash_words, perceptual_hash

    rng = np.random.default_rng(seed)
    copy_bits = []
    for i in rng.choice(len(manifest), min(copies, len(manifest)), replace=False):
        row = manifest.iloc[int(i)]
        image = Image.fromarray(read_image(row["path"], "L").pixels)
        scale = rng.uniform(0.5, 1.5)
        image = image.resize((max(8, int(image.width * scale)), max(8, int(image.height * scale))),
                             Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(50, 96)))
        copy = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))
        copy_bits.append(int(hamming_matrix(hash_words([perceptual_hash(copy)]), hash_words([row["phash"]]))[0, 0]))
    words = hash_words(manifest["phash"].tolist())
    nearest = np.full(len(words), HASH_BITS)
    for start in range(0, len(words), 1024):
        d = hamming_matrix(words[start:start + 1024], words)
        d[np.arange(len(d)), np.arange(start, start + len(d))] = HASH_BITS  # not itself (sha256 are unique here)
        nearest[start:start + len(d)] = d.min(1)
    copy_bits = np.array(copy_bits)
    return {"copies": int(len(copy_bits)), "copy_bits_max": int(copy_bits.max()),
            "copy_bits_p99": float(np.percentile(copy_bits, 99)),
            "copies_within": {t: float((copy_bits <= t).mean()) for t in (4, 8, 12, 16)},
            "images_with_neighbour_within": {t: int((nearest <= t).sum()) for t in (4, 8, 12, 16, 20, 24)},
            "nearest_neighbour_histogram": np.bincount(nearest, minlength=41)[:41].tolist()}


def real_arm_accuracy(domain: str, data: str | None, runs_root: str, seed: int | None,
                      architecture: str, splits: tuple[str, ...] = ("old", "new")) -> dict[str, object]:
    """Held-out accuracy of the real arm trained on the old (ungrouped) and the new (grouped) split."""
    from pipeline.folds import canonical_order
    from classifiers.stage import classifiers_stage
    from pipeline.store import atomic_write_json, atomic_write_table

    overrides = {"runs_root": runs_root, "classifiers": {"arms": ["real"], "architectures": [architecture]},
                 **({"seed": seed} if seed is not None else {})}
    config = load_domain_config(domain, "cpu", overrides)
    manifest = read_table(ingest_stage(config, data, progress=False).manifest_path)
    old = make_split(manifest.assign(dup_group=None), config.split, config.seed)
    new = make_split(manifest, config.split, config.seed)
    groups = manifest.set_index("sha256")["dup_group"]
    out: dict[str, object] = {"architecture": architecture}
    for name, split in (("old", old), ("new", new)):
        if name not in splits:
            continue
        directory = Path(runs_root) / domain / "bench-split" / name
        atomic_write_table(directory / "split.parquet", split.table)
        atomic_write_json(directory / "split.json", split.summary())
        started = time.perf_counter()
        result = classifiers_stage(config, directory / "split.parquet", None, progress=False)
        table = read_table(result.results_path)
        fits = table[(table["fold"] != "ensemble")]["fit_key"].tolist()
        probs = np.mean([np.load(Path(runs_root) / domain / "classifier-fits" / k / "test_probs.npy") for k in fits], 0)
        test = canonical_order(split.test.reset_index(drop=True))
        names = config.data.resolve_class_names(manifest["label"])
        truth = np.array([names.index(v) for v in test["label"]])
        correct = probs.argmax(1) == truth
        out[f"{name}_accuracy"] = round(float(correct.mean()), 4)
        out[f"{name}_fit_seconds"] = round(time.perf_counter() - started, 1)
        if name == "old":
            train_groups = set(groups.reindex(split.train["sha256"]).dropna())
            leaked = test["sha256"].map(groups).isin(train_groups).to_numpy()
            out["old_leaked_images"] = int(leaked.sum())
            out["old_accuracy_leaked"] = round(float(correct[leaked].mean()), 4) if leaked.any() else None
            out["old_accuracy_clean"] = round(float(correct[~leaked].mean()), 4)
        print(json.dumps(out), flush=True)  # partial results survive an interrupted run
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data")
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--accuracy", nargs="*", choices=["old", "new"],
                        help="also train the real arm on the old and/or new split (torch; default both)")
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--calibrate", action="store_true", help="simulated copies vs distinct neighbours (no torch)")
    args = parser.parse_args()
    result = measure(args.domain, args.data, args.runs_root, args.seed)
    if args.calibrate:
        config = load_domain_config(args.domain, "cpu", {"runs_root": args.runs_root})
        result["calibration"] = calibrate(read_table(ingest_stage(config, args.data, progress=False).manifest_path))
    if args.accuracy is not None:
        result["real_arm"] = real_arm_accuracy(args.domain, args.data, args.runs_root, args.seed, args.architecture,
                                               tuple(args.accuracy or ("old", "new")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"near_duplicates-{args.domain}.json"
    previous = json.loads(target.read_text()) if target.is_file() else {}
    if previous.get("new_split_hash") == result["new_split_hash"]:  # same data and settings: keep other parts
        result = {**previous, **result}
    target.write_text(json.dumps(result, indent=2) + "\n")
    shown = {k: v for k, v in result.items() if k not in ("leaked_test_sha256", "calibration")}
    for key, value in shown.items():
        print(f"{key:>30}: {value}")


if __name__ == "__main__":
    main()
