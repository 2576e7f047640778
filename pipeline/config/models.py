"""The typed configuration: one pydantic model per stage and the DomainConfig that holds them.

Each field's docstring is its description (``use_attribute_docstrings``): the JSON schema and Prefect show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import ChannelMode, FieldProblem, Profile, Section
from pipeline.config.classification import ClassifierConfig
from pipeline.config.generation import GeneratorConfig, SynthesisConfig
from pipeline.errors import DataError
from pipeline.hashing import hash_payload


class DataConfig(Section):
    """Where the real images are and how to read them."""

    path: str | None = None
    """ImageFolder root, or a CSV/parquet manifest with path,label[,patient_id]"""
    mode: ChannelMode = "L"
    """channels at every boundary: L = grayscale (MRI, CT), RGB = microscopy"""
    class_names: list[str] = []
    """expected classes; empty = whatever is found"""
    min_side: int = Field(32, ge=1)
    """images smaller than this on either side are quarantined"""
    max_pixels: int = Field(80_000_000, ge=1)
    """decompression-bomb guard: larger images are quarantined unread"""
    near_duplicate_bits: int = Field(12, ge=-1, le=128)
    """perceptual copies (256-bit pHash at most this many bits apart) form one group that the split keeps on
    one side; -1 = off. 12 is measured in pipeline/near_duplicates.py"""

    def resolve_class_names(self, labels: Iterable[Any]) -> list[str]:
        """The label order every stage uses: ``class_names`` when given, else the sorted labels found.

        Raises DataError when a label is not among the configured class names.
        """
        found = {str(label) for label in labels}
        names = list(self.class_names) or sorted(found)
        missing = sorted(found - set(names))
        if missing:
            raise DataError(f"labels {missing} are not in data.class_names {names}")
        return names


class SplitConfig(Section):
    """The study's protocol: a stratified 20% per class trains the generator, 80% is held out."""

    train_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    cv_folds: int = Field(5, ge=2)
    """The one knob for k: the classifiers run k-fold CV on the training side, and the split checks that every
    class gives each fold a training image."""
    dev_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """A development share of the held-out side, for choosing defaults (ablations, benchmarks) without ever
    reading the test images; stratified and group-aware, drawn after the training sample so the generator's
    data does not depend on it. 0 = the study's protocol: everything held out is test."""

    def min_images_per_class(self) -> int:
        """Smallest class that still gives every CV fold one training image and leaves a test image."""
        import math

        held_out_needed = 2 if self.dev_fraction > 0 else 1  # a dev image and a test image per class
        return max(math.ceil(self.cv_folds / self.train_fraction), self.cv_folds + held_out_needed)


class QualityGateConfig(Section):
    """Thresholds that stop (or only warn about) a run before classifiers train; null = not checked."""

    action: Literal["warn", "stop"] = "warn"
    min_label_agreement: float | None = Field(None, ge=0, le=1)
    """CAS: mean per-class agreement of the reference"""
    max_memorised_fraction: float | None = Field(None, ge=0, le=1)
    """share of synthetic images flagged as near-copies"""
    max_domain_fd_ratio: float | None = Field(None, gt=0)
    """Fréchet distance (domain features): synthetic / real-vs-real"""
    min_domain_recall: float | None = Field(None, ge=0, le=1)
    """improved recall (domain features), all classes"""


class QualityConfig(Section):
    """The quality stage between synthesis and classifiers (pipeline.quality.stage)."""

    enabled: bool = True
    extractors: list[Literal["domain", "inception"]] = ["domain", "inception"]
    inception_weights: str | None = None
    """local inception_v3_google-0cc3c7bd.pth; else hub cache or download"""
    inception_download: bool = True
    """try torchvision's download when no local file (fails fast offline)"""
    kid_subsets: int = Field(50, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    pr_k: int = Field(3, ge=1)
    """k of the k-NN manifolds of improved precision/recall"""
    msssim_pairs: int = Field(100, ge=1)
    """random pairs per class and set for the MS-SSIM diversity"""
    memorisation_quantile: float = Field(0.01, gt=0, lt=0.5)
    """flag: closer to a training image than this quantile of real-to-real NN"""
    closest_pairs: int = Field(8, ge=0)
    """closest synthetic/training pairs saved as images for the report"""
    drop_memorised: bool = False
    """remove flagged near-copies from the synthetic set before classifiers train"""
    label_filter_confidence: float | None = Field(None, gt=0, le=1)
    """drop images the reference assigns to another class with p >= this"""
    gate: QualityGateConfig = Field(default_factory=QualityGateConfig)

    @field_validator("extractors")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a list without repeats from: domain, inception")
        return value


Segmentation = Literal["slic", "quickshift", "felzenszwalb"]


class ReportConfig(Section):
    """LIME explanations and the HTML report (used by reports/)."""

    explain: bool = True
    """run LIME; false leaves the report's Explanations section as \"not run\""""
    num_samples: int = Field(1000, ge=10)
    """perturbed images per explanation (LIME's neighbourhood)"""
    batch_size: int = Field(64, ge=1)
    """perturbed images per model call (LIME's own default is 10)"""
    segmentation: Segmentation = "slic"
    """superpixels on the gray image rendered to 3 channels"""
    n_segments: int = Field(40, ge=2)
    """slic/felzenszwalb target count (quickshift: ~8 at 128 px, too coarse)"""
    compactness: float = Field(10.0, gt=0)
    """slic: shape regularity (higher = squarer superpixels)"""
    top_k: int = Field(5, ge=1)
    """superpixels reported per explanation"""
    top_fraction: float = Field(0.2, gt=0, lt=1)
    """share of pixels counted as a map's "top region" (for IoU)"""
    real_per_kind: int = Field(1, ge=0)
    """held-out images per class and kind (confident-correct, wrong, uncertain)"""
    synthetic_per_class: int = Field(3, ge=0)
    """synthetic images explained per class"""
    bootstrap_resamples: int = Field(2000, ge=100)
    """paired bootstrap of the accuracy difference to real-only"""


class DomainConfig(Section):
    """Everything one run of one domain needs; saved, resolved, next to every run."""

    name: str
    """the domain: names the run store folder"""
    profile: Profile = "cpu"
    """the machine profile layered in"""
    budget: str | None = None
    """the budget layered in, if any (recorded with the run)"""
    seed: int = Field(20240501, ge=0, lt=2**32)
    """one seed for the split, training and sampling (numpy's range)"""
    runs_root: str = "runs"
    """the run store root"""
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    classifiers: ClassifierConfig = Field(default_factory=ClassifierConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or "/" in value or value in {".", ".."}:
            raise ValueError("a non-empty domain name without '/'")
        return value

    @model_validator(mode="after")
    def _autoguidance_has_a_guide(self) -> "DomainConfig":
        if self.synthesis.guidance_method == "autoguidance" and self.generator.guide_step is None:
            raise FieldProblem("synthesis.guidance_method", "autoguidance",
                               "'cfg', or a guide: set generator.guide_step (an early step, e.g. "
                               f"{max(1, self.generator.train_steps // 4)}) so the generator keeps that step's weights")
        return self

    @property
    def channels(self) -> int:
        return 1 if self.data.mode == "L" else 3

    def stage_hash(self, *sections: str) -> str:
        """Content hash of the named config sections: a cache key that changes only when they do."""
        payload = {name: self.to_dict()[name] for name in sections}
        return hash_payload(payload)


