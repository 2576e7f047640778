"""What the quality stage writes, as typed models: ``quality.json`` (``QualityReport``) and ``gate.json``
(``GateRecord``). The report section and the gate read these files; a field added here is documented here.

Tables beside them (parquet, CSV copies): ``metrics.parquet`` (one ``MetricRow`` per metric, extractor and
class), ``per_image.parquet`` (one row per synthetic image: relpath inside the synthesis folder, label,
sha256, pixel/feature distance and nearest training image, memorised, predicted, confidence, agrees),
``embedding.parquet`` (side, sha256, label and the fold model that embedded each image: real images out
of fold, -1 = the mean over folds), ``pairs/pair-NN.png`` (closest synthetic | training pairs).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = 1


class Record(BaseModel):
    """A stored record: unknown keys are an error (a field the code writes must be declared here)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Sizes(Record):
    synthetic: int
    real_train: int
    """the generator's training sample (the real 20%); the held-out side is never decoded"""
    real_half_a: int
    """real half A: the reference side of every fidelity metric (halves are group-aware)"""
    real_half_b: int
    """real half B: scored against half A to show what "good" looks like in this domain"""


class Extractor(Record):
    available: bool
    label: str
    note: str


class MetricRow(Record):
    """One row of metrics.parquet (and of ``QualityReport.metrics``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

    metric: Literal["frechet_distance", "kid", "precision", "recall", "ms_ssim"]
    label: str
    """what to call it in a report, e.g. "Fréchet distance, domain features" (never "FID" except on
    Inception-v3 features)"""
    extractor: str
    """domain | inception | pixels (ms_ssim is computed on pixels)"""
    class_: str = Field(alias="class")
    """a class name, or "all" (classes pooled)"""
    synthetic: float | None
    """the synthetic set against real half A (ms_ssim: within the synthetic set)"""
    synthetic_std: float | None = None
    """KID only: std over subsets; None when both sides fit one subset (no spread exists)"""
    reference: float | None
    """real half B against real half A (ms_ssim: within the real sample)"""
    reference_std: float | None = None
    n_real: int | None = None
    n_synthetic: int | None = None
    """the synthetic side and half B are subsampled per class to the smaller of the two"""
    n_reference: int | None = None
    higher_is_better: bool | None
    """None for ms_ssim: lower is more diverse, compare it with the reference"""


class Space(Record):
    threshold: float
    """a synthetic image closer than this to a training image is flagged"""
    calibration_median: float
    nn_ratio_median: float | None = None
    """median over synthetic images of nearest / second-nearest training distance (Gu et al.; ~1 for fresh
    samples, 0 for copies)"""
    copy_fraction: float | None = None
    """share of synthetic images whose ratio is under 1/3 (Gu et al.'s copy criterion)"""


class ClassFlags(Record):
    images: int
    flagged: int
    fraction: float


class ClosestPair(Record):
    rank: int
    image: str
    """the side-by-side PNG, relative to the stage folder"""
    synthetic: str
    training: str
    label: str
    space: str
    pixel_distance: float
    feature_distance: float | None
    memorised: bool


class Memorisation(Record):
    quantile: float
    spaces: dict[str, Space]
    """pixel always; feature with the domain (else the first) extractor"""
    feature_extractor: str | None
    per_class: dict[str, ClassFlags]
    flagged_fraction: float
    closest_pairs: list[ClosestPair]


class LabelConsistency(Record):
    class_names: list[str]
    per_class_agreement: dict[str, float]
    cas: float
    overall_agreement: float
    confusion: list[list[int]]
    """rows: the class asked for; columns: the class the reference predicted"""
    reference_cv_accuracy: float | None
    """the reference's own cross-validated accuracy on real images: the ceiling to read agreement against"""


class QualityReport(Record):
    """``quality.json``: everything judged against the split's training side only."""

    schema_version: int = SCHEMA
    domain: str
    key: str
    sizes: Sizes
    extractors: dict[str, Extractor]
    metrics: list[dict[str, Any]]
    """rows of metrics.parquet (``MetricRow``), as the report reads them"""
    memorisation: Memorisation
    label_consistency: LabelConsistency | None
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        payload = self.model_dump(mode="json")
        payload["schema"] = payload.pop("schema_version")
        payload["metrics"] = [MetricRow.model_validate(row).model_dump(by_alias=True) for row in self.metrics]
        return payload


class GateCheck(Record):
    metric: str
    value: float | None
    threshold: float
    op: str
    passed: bool | None
    """None: the metric was not measured (its extractor was unavailable)"""


class GateFilter(Record):
    drop_memorised: bool
    label_filter_confidence: float | None
    dropped: int
    dropped_memorised: int
    dropped_label: int
    kept: int
    manifest: str
    """the synthetic manifest the classifiers train on (the stage's filtered copy when anything was dropped)"""


class GateRecord(Record):
    """``gate.json``, rewritten on every call (changing a threshold recomputes nothing)."""

    action: str
    passed: bool
    checks: list[GateCheck]
    messages: list[str]
    filter: GateFilter
