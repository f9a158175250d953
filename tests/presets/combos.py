"""Every preset x every combination of the features it allows, as pytest params with readable ids."""

import itertools

import pytest


def preset_feature_combinations(catalog) -> list:
    """dp-attention is left out at a preset's tp 1 (refused there: it needs tp > 1; see test_refusals)."""
    params = []
    for name, preset in catalog.presets.items():
        allowed = [f for f in catalog.allowed_features(preset) if not (f == "dp-attention" and preset.tp == 1)]
        for k in range(len(allowed) + 1):
            for features in itertools.combinations(allowed, k):
                params.append(pytest.param(name, features, id="+".join((name, *features))))
    return params
