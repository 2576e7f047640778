"""Errors the user is meant to read.

Every failure the user can fix (bad config, bad data folder, an unusable class) raises one of
these with a message that names the thing and what would make it right; the CLI prints the
message without a traceback.
"""

from __future__ import annotations


class SynthAugmentError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(SynthAugmentError, ValueError):
    """A configuration file or value is invalid."""


class DataError(SynthAugmentError):
    """The dataset cannot support the protocol (missing, empty, too few classes or images)."""


class LeakageError(SynthAugmentError):
    """Training data and held-out data overlap: the evaluation would be dishonest."""


class QualityGateError(SynthAugmentError):
    """The synthetic set failed a configured quality threshold (quality.gate, action: stop)."""


class TrainingError(SynthAugmentError):
    """Training cannot produce a usable model (a diverging loss); nothing downstream may use it."""


class IntegrityError(SynthAugmentError):
    """A file changed after it was recorded (an image after ingest): results would silently be wrong."""


def short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never echoes a huge value back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
