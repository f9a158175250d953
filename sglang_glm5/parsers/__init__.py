"""GLM-5 reasoning and tool-call parsers, registered with SGLang as `--reasoning-parser glm5 --tool-call-parser glm5`."""

PARSER_NAME = "glm5"


def register_parsers() -> None:
    """Add our detectors to SGLang's live parser registries, which `launch_server` also reads for its flag choices."""
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    from sglang_glm5.parsers.reasoning import Glm5ReasoningDetector
    from sglang_glm5.parsers.tool_call import Glm5ToolDetector

    ReasoningParser.DetectorMap[PARSER_NAME] = Glm5ReasoningDetector
    FunctionCallParser.ToolCallParserEnum[PARSER_NAME] = Glm5ToolDetector
