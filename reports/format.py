"""Numbers, percentages and figures as the report prints them (one way everywhere)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pct(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(value) else f"{100 * value:.1f}%"


def mean_std(values: pd.Series, percent: bool = False) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return ""
    scale, unit = (100.0, "") if percent else (1.0, "")
    mean, std = scale * values.mean(), scale * (values.std(ddof=1) if len(values) > 1 else 0.0)
    return f"{mean:.1f} ± {std:.1f}{unit}" if percent else f"{mean:.3f} ± {std:.3f}"


def num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def plain_text(text: Any) -> str:
    """A user string for matplotlib text: '$' would start mathtext."""
    return str(text).replace("$", r"\$")


def flatten(payload: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("synth-augment")
    except Exception:
        return "unknown"
