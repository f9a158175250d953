"""Every preset x every combination of the features it allows, as pytest params with readable ids."""

import itertools

import pytest


def preset_feature_combinations(catalog) -> list:
    params = []
    for name, preset in catalog.presets.items():
        allowed = catalog.allowed_features(preset)
        for k in range(len(allowed) + 1):
            for features in itertools.combinations(allowed, k):
                params.append(pytest.param(name, features, id="+".join((name, *features))))
    return params
