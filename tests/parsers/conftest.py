import pytest

from sglang_glm5.parsers import register_parsers


@pytest.fixture(scope="session", autouse=True)
def glm5_parsers_registered():
    register_parsers()
