"""`sglang-glm5 demo`'s trained checkpoint: built and trained once, reused while the chats and settings match.
(Its streaming printer runs against a server in tests/parsers/served/test_demo_stream.py.)"""

from sglang_glm5.checkpoint.chat_corpus import Chat
from sglang_glm5.serving.demo import STAMP_FILE, trained_checkpoint

CHATS = [Chat("Hi?", "Greet back.", "Hello!")]
STEPS = 1


def test_checkpoint_is_cached_per_recipe(tmp_path):
    checkpoint = trained_checkpoint(tmp_path, "bf16", STEPS, CHATS)
    shards = sorted(checkpoint.glob("model-*.safetensors"))
    written = [p.stat().st_mtime_ns for p in shards]
    assert (checkpoint / STAMP_FILE).is_file()
    assert trained_checkpoint(tmp_path, "bf16", STEPS, CHATS) == checkpoint
    assert [p.stat().st_mtime_ns for p in shards] == written  # reused, not rebuilt
    trained_checkpoint(tmp_path, "bf16", STEPS, [Chat("Hi?", "Greet back.", "Hey!")])
    assert [p.stat().st_mtime_ns for p in shards] != written  # another chat: trained again
