"""Layering (the one place it is defined; README "Configuration" points here). Later layers win,
mappings merge key by key, everything else (lists included) replaces:

    1. model defaults                 the field defaults below
    2. profile                        flows/configs/profiles/<profile>.yaml: sizes for the machine (cpu | gpu)
    3. domain                         flows/configs/domains/<domain>.yaml (or a YAML path): classes, mode, counts
    4. domain.profiles.<profile>      the domain file's own overrides for that profile
    5. budget                         flows/configs/budgets/<budget>.yaml ``overrides`` (optional; the budget
                                      names its profile, which is then the default profile)
    6. overrides                      ``--set key=value`` on the command line (value parsed as YAML), or the
                                      ``overrides`` mapping of ``load_domain_config``

Validation: unknown keys are errors (a typo must not silently fall back to a default); types are
strict (booleans are YAML true/false, numbers are numbers, no "true" or "5" strings); ranges are
``Field`` constraints or validators. Every problem becomes one ``ConfigError`` line that names the
dotted key and what is allowed. ``DomainConfig.model_json_schema()`` is the JSON schema (Prefect
shows it for flow parameters).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pipeline import yaml_bounded
from pipeline.config.base import PROFILES
from pipeline.config.messages import from_dict
from pipeline.config.models import DomainConfig
from pipeline.errors import ConfigError, short


def configs_dir() -> Path:
    """The packaged config folder (flows/configs), found the same way installed or in a checkout."""
    return Path(str(resources.files("flows") / "configs"))


def available_domains() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "domains").glob("*.yaml"))


def available_budgets() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "budgets").glob("*.yaml"))


def find_config(kind: Literal["domain", "budget"], name: str | Path) -> Path:
    """A packaged config (``flows/configs/<kind>s/<name>.yaml``) by name, or any YAML file by path."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"{kind}: config file {str(path)!r} does not exist")
        return path
    path = configs_dir() / f"{kind}s" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{kind}: unknown {kind} {str(name)!r}; available {kind}s: {', '.join(known)} "
                          f"(or pass a path to a YAML file)")
    return path


def load_budget(budget: str | Path) -> tuple[str, dict[str, Any]]:
    """A budget file (name or path): ``(profile, overrides)``."""
    path = find_config("budget", budget)
    doc = read_yaml(path)
    unknown = sorted(set(doc) - {"profile", "overrides"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed keys: overrides, profile")
    profile = doc.get("profile", "cpu")
    if profile not in PROFILES:
        raise ConfigError(f"{path}: profile = {profile!r} is not allowed; allowed values: {', '.join(PROFILES)}")
    overrides = doc.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: overrides must be a mapping, got {overrides!r}")
    return profile, overrides


def load_domain_config(domain: str | Path, profile: str | None = None, overrides: dict[str, Any] | None = None,
                       budget: str | Path | None = None) -> DomainConfig:
    """Resolve a domain config through the layers in this module's docstring.

    ``domain`` is a packaged domain name (``brain-mri``) or a path to a YAML file of the same shape;
    ``profile`` defaults to the budget's profile, else ``cpu``; ``budget`` is a budget name or path.
    """
    budget_profile, budget_overrides = load_budget(budget) if budget is not None else (None, {})
    if profile is None:
        profile = budget_profile or "cpu"
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r}; allowed values: {', '.join(PROFILES)}")
    if budget_profile is not None and budget_profile != profile:
        raise ConfigError(f"budget {str(budget)!r} is made for profile {budget_profile!r}, not {profile!r}; "
                          f"drop --profile or pass --profile {budget_profile}")
    domain_path = find_config("domain", domain)

    merged: dict[str, Any] = read_yaml(configs_dir() / "profiles" / f"{profile}.yaml")
    domain_doc = read_yaml(domain_path)
    per_profile = domain_doc.pop("profiles", {}) or {}
    if not isinstance(per_profile, dict) or not set(per_profile) <= set(PROFILES):
        raise ConfigError(f"{domain_path}: 'profiles' must map profile names ({', '.join(PROFILES)}) "
                          f"to overrides, got {per_profile!r}")
    for layer in (domain_doc, per_profile.get(profile) or {}, budget_overrides, overrides or {}):
        merged = deep_merge(merged, layer)
    merged["profile"] = profile
    if budget is not None:
        merged["budget"] = Path(budget).stem
    merged.setdefault("name", domain_path.stem)
    return from_dict(DomainConfig, merged, source=str(domain_path))


def load_yaml_text(text: str, source: str = "YAML") -> Any:
    """Bounded YAML (size, depth, alias expansion): pipeline.yaml_bounded."""
    return yaml_bounded.load_yaml_text(text, source)


def read_yaml(path: Path) -> dict[str, Any]:
    doc = yaml_bounded.read_yaml_file(path)
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
    """Turn ``split.cv_folds=3`` into ``{"split": {"cv_folds": 3}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {short(text)}: expected KEY=VALUE, for example split.cv_folds=3")
    key, raw = text.split("=", 1)
    value = load_yaml_text(raw, f"override {short(key)}")
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {short(text)}: expected a dotted key such as split.cv_folds")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


