from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

TARGET_TOKENIZER_SIZE = 1000
MIN_PAIR_FREQUENCY = 2
CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = EOS_TOKEN
# GLM order: <|endoftext|>, <|user|>, <|observation|> sit at offsets 0, 7, 9 (GLM-5: 154820/27/29).
SPECIAL_TOKENS = (
    EOS_TOKEN,
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)
# Atomic but not "special": they must survive skip_special_tokens decoding for the reasoning/tool parsers.
MARKUP_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "<tool_response>",
    "</tool_response>",
)
EOS_TOKENS = (EOS_TOKEN, "<|user|>", "<|observation|>")

CORPUS = (
    "The quick brown fox jumps over the lazy dog while the sleepy cat watches from the window.",
    "A language model predicts the next token from the tokens that came before it.",
    "Sparse attention reads only a few selected tokens, so long contexts stay cheap to decode.",
    "The indexer scores every cached token and keeps the top ones for the attention layer.",
    "Mixture of experts routes each token to a small number of experts and adds a shared expert.",
    "Please write a short story about a robot who learns to paint the sea at sunrise.",
    "What is the capital of France? The capital of France is Paris, a city on the Seine.",
    "How many days are there in a leap year? There are three hundred and sixty six days.",
    "Explain why the sky is blue: sunlight scatters off air molecules, and blue light scatters most.",
    "She opened the old wooden door, stepped into the garden, and listened to the rain on the leaves.",
    "If you have twelve apples and give away five, you have seven apples left over for the pie.",
    "The train leaves the station at nine in the morning and arrives in the city before noon.",
    "Good software is tested, readable, and small enough that one person can hold it in their head.",
    "The weather today is sunny with a light breeze, and tomorrow will bring clouds and some rain.",
    "He counted the stars one by one until the first light of morning erased them from the sky.",
    "Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100, 256, 1024 and 3.14 appear in code and math.",
    "Step 1: read the question. Step 2: think about the answer. Step 3: write the answer clearly.",
    "Thank you for your help! You are welcome; let me know if there is anything else I can do.",
    "The museum opens at ten, closes at six, and is free for children under twelve years of age.",
    "Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.",
    "def add(a, b):\n    return a + b\n",
    "def factorial(n: int) -> int:\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)\n",
    "for i in range(10):\n    print(i, i * i)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n",
    "import json\n\nwith open('data.json') as f:\n    data = json.load(f)\nprint(data['name'])\n",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "if x is None:\n    raise ValueError(f'missing value for {name}')\nelse:\n    return x\n",
    "result = [x * 2 for x in numbers if x % 2 == 0]\ntotal = sum(result)\n",
    "function greet(name) {\n  return `Hello, ${name}!`;\n}\nconsole.log(greet('world'));\n",
    "const items = [1, 2, 3].map((x) => x + 1).filter((x) => x > 2);\n",
    "SELECT name, count(*) FROM users WHERE age > 18 GROUP BY name ORDER BY name;\n",
    '#include <stdio.h>\n\nint main(void) {\n    printf("hello, world\\n");\n    return 0;\n}\n',
    'fn main() {\n    let v: Vec<i32> = (0..10).collect();\n    println!("{:?}", v);\n}\n',
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}',
    "git commit -m 'fix the tokenizer test' && git push origin main\n",
    "pip install numpy torch && python -m pytest tests -q\n",
    "The function returns a list of strings, one for each line of the input file.",
    "Let me think step by step. First, the total is the sum of the parts. Then divide by the count.",
    "The answer is 15 because 3 times 5 is 15, and 15 plus 0 is still 15.",
    "Once upon a time there was a small village at the edge of a great forest by the mountains.",
    "The students read the book, wrote their essays, and handed them in before the end of the week.",
    "A good question deserves a careful answer, and a careful answer starts with a good question.",
    "Call the weather tool with the city name, then summarize the forecast for the user in one line.",
    "The tool returned an error: the file was not found. Check the path and try again.",
    "Search results: three pages mention the release date, and two of them agree on the month.",
    "In the morning we drink coffee, in the afternoon we drink tea, and at night we drink water.",
    "Red, orange, yellow, green, blue, indigo and violet are the colors of the rainbow.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday make up the week.",
    "January, February, March, April, May, June, July, August, September, October, November, December.",
)
CORPUS_REPEATS = 3


@dataclass(frozen=True)
class TinyTokenizer:
    tokenizer: Tokenizer

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise KeyError(f"token {token!r} not in the tiny tokenizer")
        return tid

    @property
    def eos_token_ids(self) -> list[int]:
        return [self.token_id(t) for t in EOS_TOKENS]

    @property
    def pad_token_id(self) -> int:
        return self.token_id(PAD_TOKEN)


def chat_template() -> str:
    return resources.files("sglang_glm5.checkpoint").joinpath(CHAT_TEMPLATE_FILE).read_text()


def build_tokenizer() -> TinyTokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    n_added = len(SPECIAL_TOKENS) + len(MARKUP_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_TOKENIZER_SIZE - n_added,
        min_frequency=MIN_PAIR_FREQUENCY,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS) * CORPUS_REPEATS, trainer=trainer)
    for t in SPECIAL_TOKENS:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)])
    for t in MARKUP_TOKENS:
        tok.add_tokens([AddedToken(t, special=False, normalized=False)])
    return TinyTokenizer(tok)


def write_tokenizer(out_dir: Path, tok: TinyTokenizer, model_max_length: int) -> None:
    out_dir = Path(out_dir)
    tok.tokenizer.save(str(out_dir / TOKENIZER_FILE), pretty=True)
    template = chat_template()
    (out_dir / CHAT_TEMPLATE_FILE).write_text(template)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "model_max_length": model_max_length,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "remove_space": False,
        "chat_template": template,
    }
    (out_dir / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
