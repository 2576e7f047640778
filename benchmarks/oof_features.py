"""How much do in-sample and fold-mean features bias the domain-feature FD? Phantoms; fresh phantoms = a perfect generator.

    python benchmarks/oof_features.py 100    # the real arm's classifiers.max_steps (the reference); measured numbers in pipeline/quality/oof.py
"""
import sys, tempfile
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_domain_config
from pipeline.demo_data import DEMO_CLASSES, PhantomSpec, make_demo_dataset, render_phantom
from pipeline.stages import ingest_stage, split_stage, load_split
from classifiers.reference import reference_stage
from pipeline.quality.oof import real_halves, synthetic_folds
from pipeline.quality.metrics import frechet_distance
from pipeline.image_tensors import load_image_tensors
tmp = Path(tempfile.mkdtemp())
data = make_demo_dataset(tmp / "data", PhantomSpec(150, 32, "L", 3), progress=False)
config = load_domain_config("demo", "cpu", {"runs_root": str(tmp / "runs"), "split": {"cv_folds": 3},
    "generator": {"image_size": 32}, 
    "classifiers": {"architectures": ["resnet18"], "image_size": 32, "batch_size": 32, "max_steps": int(sys.argv[1]),
                    "min_steps": 1}})
split_path = split_stage(config, ingest_stage(config, data, progress=False).manifest_path).split_path
train = load_split(split_path).train.sort_values(["label", "sha256"]).reset_index(drop=True)
out = reference_stage(config, split_path); ref = out.load()
print("cv accuracy", out.summary["cv_accuracy"], "train", len(train))
real = load_image_tensors(train["path"].tolist(), train["sha256"].tolist(), "L", 32)
rng = np.random.default_rng(11); per = len(train) // 8  # the size of half B: FD sample-size bias alike
fresh = torch.from_numpy(np.stack([np.round(render_phantom(c, 32, rng) * 255).astype(np.uint8)[None]
                                   for c in DEMO_CLASSES for _ in range(per)]))
fl = np.repeat(np.array(DEMO_CLASSES), per)
lr = train["label"].to_numpy(); fr = np.asarray(ref.fold_of(train["sha256"].tolist()))
fs = synthetic_folds(fl, [None] * len(fl), lr, fr, len(ref.models))
in_a = real_halves(train, 0)
oof = ref.fold_features(real, fr); mean_r = ref.features(real)
fresh_assigned = ref.fold_features(fresh, fs); fresh_mean = ref.features(fresh)
A, B = in_a, ~in_a
half = lambda x: x[: len(x) // 2]
res = {"oof_ref (A vs B, out of fold)": frechet_distance(oof[A], oof[B]),
       "fresh assigned vs A (new)": frechet_distance(oof[A], fresh_assigned),
       "fresh fold-mean vs A oof (lead's spec)": frechet_distance(oof[A], fresh_mean),
       "old ref (A vs B, fold mean, in sample)": frechet_distance(mean_r[A], mean_r[B]),
       "old synthetic (fresh fold-mean vs A fold-mean)": frechet_distance(mean_r[A], fresh_mean)}
for k, v in res.items(): print(f"{k}: {v:.3f}")
print("sizes", int(A.sum()), int(B.sum()), len(fresh))
