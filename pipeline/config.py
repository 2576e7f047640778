"""Typed configuration: one dataclass per stage, a DomainConfig that holds them, strict YAML loading.

A run is configured by layering three YAML documents over the dataclass defaults:

    profile (flows/configs/profiles/<profile>.yaml)   sizes for the machine: cpu or gpu
    domain  (flows/configs/domains/<domain>.yaml)      classes, channel mode, counts per class
    domain.profiles.<profile>                          the domain's own overrides for that profile

Unknown keys are errors (a typo must not silently fall back to a default), and every value is
type-checked with an error that names the dotted key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError

ChannelMode = Literal["L", "RGB"]
Profile = Literal["cpu", "gpu"]
PROFILES: tuple[str, ...] = typing.get_args(Profile)


@dataclass
class DataConfig:
    """Where the real images are and how to read them."""

    path: str | None = None  # ImageFolder root, or a CSV/parquet manifest with path,label[,patient_id]
    mode: ChannelMode = "L"  # channels at every boundary: L = grayscale (MRI, CT), RGB = microscopy
    class_names: list[str] = field(default_factory=list)  # expected classes; empty = whatever is found
    min_side: int = 32  # images smaller than this on either side are quarantined
    max_pixels: int = 80_000_000  # decompression-bomb guard: larger images are quarantined unread

    def __post_init__(self) -> None:
        _require(self.min_side >= 1, "data.min_side", self.min_side, "an integer >= 1")
        _require(self.max_pixels >= 1, "data.max_pixels", self.max_pixels, "an integer >= 1")


@dataclass
class SplitConfig:
    """The study's protocol: a stratified 20% per class trains the generator, 80% is held out."""

    train_fraction: float = 0.2
    cv_folds: int = 5  # later stages run k-fold CV on the training side; the split checks it is possible

    def __post_init__(self) -> None:
        _require(0.0 < self.train_fraction < 1.0, "split.train_fraction", self.train_fraction,
                 "a number strictly between 0 and 1")
        _require(self.cv_folds >= 2, "split.cv_folds", self.cv_folds, "an integer >= 2")

    def min_images_per_class(self) -> int:
        """Smallest class that still gives every CV fold one training image and leaves a test image."""
        import math

        return max(math.ceil(self.cv_folds / self.train_fraction), self.cv_folds + 1)


@dataclass
class GeneratorConfig:
    """Class-conditional diffusion UNet and its training schedule (used by pipeline.generator)."""

    image_size: int = 64
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    layers_per_block: int = 1
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, False, True])
    train_steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    ema_decay: float = 0.999  # upper bound; EMA warm-up ramps towards it so short runs still average
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    class_dropout: float = 0.1  # label dropout for classifier-free guidance
    augment_flip: bool = False  # horizontal flips: only where anatomy allows it
    augment_affine: bool = True  # small rotation/scale/shift
    affine_degrees: float = 5.0  # max rotation of the light affine augmentation
    affine_scale: float = 0.05  # max relative zoom in or out
    affine_shift: float = 0.03  # max shift as a fraction of the image side
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"

    def __post_init__(self) -> None:
        _require(self.image_size >= 16 and self.image_size % 8 == 0, "generator.image_size",
                 self.image_size, "a multiple of 8, at least 16")
        _require(len(self.block_out_channels) >= 2, "generator.block_out_channels",
                 self.block_out_channels, "a list of at least 2 channel counts")
        _require(all(c >= 8 and c % 8 == 0 for c in self.block_out_channels), "generator.block_out_channels",
                 self.block_out_channels, "channel counts that are multiples of 8")
        _require(self.image_size % (2 ** (len(self.block_out_channels) - 1)) == 0, "generator.image_size",
                 self.image_size, f"divisible by 2**(levels-1) = {2 ** (len(self.block_out_channels) - 1)}")
        _require(len(self.attention_levels) == len(self.block_out_channels), "generator.attention_levels",
                 self.attention_levels, f"a list of {len(self.block_out_channels)} booleans (one per level)")
        _require(self.layers_per_block >= 1, "generator.layers_per_block", self.layers_per_block, "an integer >= 1")
        _require(self.train_steps >= 1, "generator.train_steps", self.train_steps, "an integer >= 1")
        _require(self.batch_size >= 1, "generator.batch_size", self.batch_size, "an integer >= 1")
        _require(self.learning_rate > 0, "generator.learning_rate", self.learning_rate, "a number > 0")
        _require(self.warmup_steps >= 0, "generator.warmup_steps", self.warmup_steps, "an integer >= 0")
        _require(self.weight_decay >= 0, "generator.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.grad_clip >= 0, "generator.grad_clip", self.grad_clip, "a number >= 0 (0 = off)")
        _require(0.0 <= self.class_dropout < 1.0, "generator.class_dropout", self.class_dropout,
                 "a number in [0, 1)")
        _require(0.0 <= self.ema_decay < 1.0, "generator.ema_decay", self.ema_decay, "a number in [0, 1)")
        _require(self.num_train_timesteps >= 2, "generator.num_train_timesteps",
                 self.num_train_timesteps, "an integer >= 2")
        _require(0.0 <= self.affine_degrees <= 45.0, "generator.affine_degrees", self.affine_degrees,
                 "a number of degrees in [0, 45]")
        _require(0.0 <= self.affine_scale < 0.5, "generator.affine_scale", self.affine_scale, "a number in [0, 0.5)")
        _require(0.0 <= self.affine_shift < 0.5, "generator.affine_shift", self.affine_shift, "a number in [0, 0.5)")
        _require(self.checkpoint_every >= 1, "generator.checkpoint_every", self.checkpoint_every,
                 "an integer >= 1")
        _require(self.keep_checkpoints >= 1, "generator.keep_checkpoints", self.keep_checkpoints,
                 "an integer >= 1")


SAMPLERS: tuple[str, ...] = ("sde-dpmsolver++", "dpmsolver++", "ddim", "ddpm")


@dataclass
class SynthesisConfig:
    """How the balanced synthetic set is sampled from the trained generator."""

    per_class: int = 100  # images generated for every class (balanced)
    sampler: Literal["sde-dpmsolver++", "dpmsolver++", "ddim", "ddpm"] = "sde-dpmsolver++"
    steps: int = 25  # denoising steps (ddpm ignores fewer than its training steps only if you ask it to)
    guidance_scale: float = 2.0  # classifier-free guidance; 1 = off, 0 = unconditional
    batch_size: int = 32

    def __post_init__(self) -> None:
        _require(self.per_class >= 1, "synthesis.per_class", self.per_class, "an integer >= 1")
        _require(self.sampler in SAMPLERS, "synthesis.sampler", self.sampler, f"one of {', '.join(SAMPLERS)}")
        _require(self.steps >= 1, "synthesis.steps", self.steps, "an integer >= 1")
        _require(self.guidance_scale >= 0, "synthesis.guidance_scale", self.guidance_scale,
                 "a number >= 0 (1 = no guidance)")
        _require(self.batch_size >= 1, "synthesis.batch_size", self.batch_size, "an integer >= 1")


CLASSIFIER_ARCHITECTURES: tuple[str, ...] = (
    "resnet18", "resnet50", "vgg16", "vgg19", "alexnet", "densenet121", "mobilenetv2_100", "googlenet")
Arm = Literal["synthetic", "real", "real+aug", "real+synthetic"]
ARMS: tuple[str, ...] = typing.get_args(Arm)


@dataclass
class ClassifierConfig:
    """The CNN panel and the evaluation protocol (used by classifiers/)."""

    architectures: list[str] = field(default_factory=lambda: list(CLASSIFIER_ARCHITECTURES))
    arms: list[Arm] = field(default_factory=lambda: list(ARMS))
    pretrained: Literal["auto", "true", "false"] = "auto"
    checkpoints: list[str] = field(default_factory=list)  # local weights per architecture: ARCH=PATH
    image_size: int = 224
    folds: int = 5
    max_epochs: int = 50
    patience: int = 5  # epochs without a validation-loss improvement before stopping
    min_delta: float = 0.0  # an improvement must lower the validation loss by more than this
    batch_size: int = 64
    eval_batch_size: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    lr_schedule: Literal["cosine", "none"] = "cosine"  # cosine: anneal to 1% over max_epochs
    time_budget_s: float | None = None  # per fit; stops gracefully and records that it did
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    augment_hflip: bool = True  # real+aug arm: classic augmentation (flips, rotations, scaling)
    augment_vflip: bool = False
    augment_rotation_deg: float = 15.0
    augment_scale: list[float] = field(default_factory=lambda: [0.9, 1.1])

    def __post_init__(self) -> None:
        _require(self.image_size >= 16, "classifiers.image_size", self.image_size, "an integer >= 16")
        _require(self.folds >= 2, "classifiers.folds", self.folds, "an integer >= 2")
        _require(self.max_epochs >= 1, "classifiers.max_epochs", self.max_epochs, "an integer >= 1")
        _require(self.patience >= 1, "classifiers.patience", self.patience, "an integer >= 1")
        _require(self.min_delta >= 0, "classifiers.min_delta", self.min_delta, "a number >= 0")
        _require(self.batch_size >= 2, "classifiers.batch_size", self.batch_size, "an integer >= 2")
        _require(self.eval_batch_size >= 1, "classifiers.eval_batch_size", self.eval_batch_size,
                 "an integer >= 1")
        _require(self.learning_rate > 0, "classifiers.learning_rate", self.learning_rate, "a number > 0")
        _require(self.weight_decay >= 0, "classifiers.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.time_budget_s is None or self.time_budget_s > 0, "classifiers.time_budget_s",
                 self.time_budget_s, "null (no limit) or a number of seconds > 0")
        unknown = [a for a in self.architectures if a not in CLASSIFIER_ARCHITECTURES]
        _require(len(self.architectures) >= 1 and not unknown, "classifiers.architectures", self.architectures,
                 f"a non-empty list of architecture names from: {', '.join(CLASSIFIER_ARCHITECTURES)}")
        _require(len(set(self.architectures)) == len(self.architectures), "classifiers.architectures",
                 self.architectures, "a list without repeated names")
        _require(len(self.arms) >= 1 and len(set(self.arms)) == len(self.arms), "classifiers.arms", self.arms,
                 f"a non-empty list without repeats from: {', '.join(ARMS)}")
        _require(len(self.augment_scale) == 2 and 0 < self.augment_scale[0] <= self.augment_scale[1],
                 "classifiers.augment_scale", self.augment_scale, "[min, max] with 0 < min <= max")
        _require(0 <= self.augment_rotation_deg <= 180, "classifiers.augment_rotation_deg",
                 self.augment_rotation_deg, "a number of degrees in [0, 180]")
        for entry in self.checkpoints:
            name, sep, path = entry.partition("=")
            _require(bool(sep) and name.strip() in CLASSIFIER_ARCHITECTURES and bool(path.strip()),
                     "classifiers.checkpoints", entry,
                     f"ARCH=PATH entries with ARCH one of: {', '.join(CLASSIFIER_ARCHITECTURES)}")


@dataclass
class DomainConfig:
    """Everything one run of one domain needs; saved, resolved, next to every run."""

    name: str
    profile: Profile = "cpu"
    seed: int = 20240501
    runs_root: str = "runs"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    classifiers: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name and self.name not in {".", ".."},
                 "name", self.name, "a non-empty domain name without '/'")

    @property
    def channels(self) -> int:
        return 1 if self.data.mode == "L" else 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_hash(self, *sections: str) -> str:
        """Content hash of the named config sections: a cache key that changes only when they do."""
        payload = {name: self.to_dict()[name] for name in sections}
        return hash_payload(payload)


# ----------------------------------------------------------------------------------------------
# Loading


def configs_dir() -> Path:
    """The packaged config folder (flows/configs), found the same way installed or in a checkout."""
    return Path(str(resources.files("flows") / "configs"))


def available_domains() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "domains").glob("*.yaml"))


def load_domain_config(domain: str | Path, profile: str = "cpu",
                       overrides: dict[str, Any] | None = None) -> DomainConfig:
    """Resolve a domain config: dataclass defaults < profile < domain < domain.profiles[profile] < overrides.

    ``domain`` is a packaged domain name (``brain-mri``) or a path to a YAML file of the same shape.
    """
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r}; allowed values: {', '.join(PROFILES)}")
    domain_path = Path(domain)
    if domain_path.suffix not in {".yaml", ".yml"}:
        domain_path = configs_dir() / "domains" / f"{domain}.yaml"
        if not domain_path.is_file():
            raise ConfigError(f"domain: unknown domain {str(domain)!r}; available domains: "
                              f"{', '.join(available_domains())} (or pass a path to a YAML file)")
    elif not domain_path.is_file():
        raise ConfigError(f"domain: config file {str(domain_path)!r} does not exist")

    merged: dict[str, Any] = read_yaml(configs_dir() / "profiles" / f"{profile}.yaml")
    domain_doc = read_yaml(domain_path)
    per_profile = domain_doc.pop("profiles", {}) or {}
    if not isinstance(per_profile, dict) or not set(per_profile) <= set(PROFILES):
        raise ConfigError(f"{domain_path}: 'profiles' must map profile names ({', '.join(PROFILES)}) "
                          f"to overrides, got {per_profile!r}")
    merged = deep_merge(merged, domain_doc)
    merged = deep_merge(merged, per_profile.get(profile) or {})
    merged = deep_merge(merged, overrides or {})
    merged["profile"] = profile
    merged.setdefault("name", domain_path.stem)
    return from_dict(DomainConfig, merged, source=str(domain_path))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` over ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``classifiers.folds=3`` into ``{"classifiers": {"folds": 3}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example classifiers.folds=3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def from_dict(cls: type, data: Any, source: str = "config", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrongly typed values."""
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"allowed keys{' under ' + where if prefix else ''}: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(hints[name], value, source, prefix + name) for name, value in data.items()}
    missing = [n for n, f in known.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing required key(s): {', '.join(prefix + m for m in missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{source}: {key} has an invalid value {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and str(value).lower() in args:  # YAML reads `pretrained: false` as a bool
            value = str(value).lower()
        if value not in args:
            raise ConfigError(f"{source}: {key} = {value!r} is not allowed; allowed values: "
                              f"{', '.join(repr(a) for a in args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(args[0], item, source, f"{key}[{i}]") for i, item in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported config type {tp!r}")  # a programming error


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid; expected {allowed}")


def hash_payload(payload: Any) -> str:
    """Stable short content hash of a JSON-able payload (sorted keys), used for cache keys."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
