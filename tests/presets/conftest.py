"""The installed SGLang's own launch_server argument parser, built once (importing SGLang takes ~10 s)."""

import pytest

from sglang_glm5.presets.flags import sglang_parser


@pytest.fixture(scope="session")
def server_arg_parser():
    return sglang_parser()
