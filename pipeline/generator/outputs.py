"""What the generator and synthesis stages hand on (their outputs), apart from the stages themselves, so
that selection (which reads a trained generator) and the stages never import each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class GeneratorOutput:
    key: str
    directory: Path
    pipeline_path: Path  # the exported ClassConditionalPipeline folder (EMA UNet, scheduler, class names)
    pipeline_hash: str  # content hash of that folder: the synthesis key depends on it
    summary: dict[str, Any]
    cached: bool = False
    split_path: Path | None = None  # the split it was trained on (real-seeded synthesis and selection read it)


@dataclass
class SynthesisOutput:
    key: str
    directory: Path
    manifest_path: Path  # manifest.parquet (manifest.csv beside it)
    summary: dict[str, Any]
    cached: bool = False
