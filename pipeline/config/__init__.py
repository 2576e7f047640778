"""Typed configuration, in rooms of one job each: ``base`` (the vocabulary and the Section base), ``models``,
``generation`` and ``classification`` (one pydantic model per stage; each field's docstring is its description
in the JSON schema), ``layering`` (defaults < profile < domain < budget < overrides, from YAML) and
``messages`` (every validation problem as one line naming the dotted key). Import from here:
``from pipeline.config import DomainConfig, load_domain_config``.
"""

from __future__ import annotations

from pipeline.config.base import (ARMS, DEFAULT_ARMS, SYNTHETIC_ARMS, Architecture, Arm, CLASSIFIER_ARCHITECTURES, ChannelMode,
                                  FieldProblem, MixedPrecision, PROFILES, PaddingMode, Profile, SAMPLERS,
                                  Sampler, Section, resolve_mixed_precision)
from pipeline.config.classification import AugmentConfig, ClassifierConfig
from pipeline.config.generation import (GENERATOR_LEGACY_VALUES, GeneratorConfig, SAMPLER_SETTINGS,
                                        SYNTHESIS_MODES, SynthesisConfig, SynthesisMode, X0Clip, X0_CLIPS)
from pipeline.config.layering import (available_budgets, available_domains, configs_dir, deep_merge,
                                      find_config, load_budget, load_domain_config, load_yaml_text,
                                      parse_override, read_yaml)
from pipeline.config.messages import format_validation_error, from_dict
from pipeline.config.models import (DataConfig, DomainConfig, QualityConfig, QualityGateConfig, ReportConfig,
                                    Segmentation, SplitConfig)
from pipeline.hashing import hash_payload

__all__ = ['ARMS', 'DEFAULT_ARMS', 'SYNTHETIC_ARMS', 'Architecture', 'Arm', 'AugmentConfig', 'CLASSIFIER_ARCHITECTURES', 'ChannelMode',
           'ClassifierConfig', 'DataConfig', 'DomainConfig', 'FieldProblem', 'GENERATOR_LEGACY_VALUES',
           'GeneratorConfig', 'MixedPrecision', 'PROFILES', 'PaddingMode', 'Profile', 'QualityConfig',
           'QualityGateConfig', 'ReportConfig', 'SAMPLERS', 'SAMPLER_SETTINGS', 'SYNTHESIS_MODES', 'Sampler',
           'Section', 'Segmentation', 'SplitConfig', 'SynthesisConfig', 'SynthesisMode', 'X0Clip', 'X0_CLIPS',
           'available_budgets', 'available_domains', 'configs_dir', 'deep_merge', 'find_config',
           'format_validation_error', 'from_dict', 'hash_payload', 'load_budget', 'load_domain_config',
           'load_yaml_text', 'parse_override', 'read_yaml', 'resolve_mixed_precision']
