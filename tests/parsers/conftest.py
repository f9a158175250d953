import pytest

from sglang_glm5.hooks import registry
from sglang_glm5.hooks.table import PATCHES


@pytest.fixture(scope="session", autouse=True)
def glm5_parsers_registered():
    registry.apply([patch for patch in PATCHES if patch.kind is registry.Kind.ENTRY])
