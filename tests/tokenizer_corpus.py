"""A deterministic corpus of texts that stress tokenizers: >1000 strings built at test time.

Hand-picked hard cases (scripts, emoji sequences, whitespace runs, numbers, code, special tokens
inside text, unusual code points) plus seeded random mixtures of them.
"""

from __future__ import annotations

import random

PROSE = [
    "The capital of France is Paris.",
    "Hello, world! How are you today?",
    "I'm sure they'll say it's fine, but we've seen what you'd do.",
    "DON'T SHOUT; IT'S RUDE. We'LL see. They'RE here.",
    "A quick brown fox jumps over the lazy dog.",
    "e.g. i.e. etc. Mr. Smith's dog's bone.",
    "Well--that's odd... (isn't it?) [yes] {no} <maybe>",
    "\"Quoted\" and 'single' and `backticks` and «guillemets» and „Anführung“.",
    "path/to/file.txt, C:\\Windows\\System32, https://example.com/a?b=c&d=e#f",
    "email@example.com #hashtag @mention $100 50% 3*4=12 a^b ~x |pipe|",
]

SCRIPTS = [
    "東京は日本の首都です。", "我爱自然语言处理。", "ひらがなとカタカナ、漢字。", "한국어 문장입니다.",
    "Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم، كيف حالك؟", "שלום עולם", "नमस्ते दुनिया, आप कैसे हैं?",
    "Καλημέρα κόσμε, τι κάνεις;", "สวัสดีชาวโลก", "Բարեւ աշխարհ", "გამარჯობა მსოფლიო",
    "Xin chào thế giới", "Ελληνικά: ΑΒΓΔ αβγδ",
    "ጤና ይስጥልኝ", "வணக்கம் உலகம்", "ສະບາຍດີ", "Türkçe: İstanbul ışık ĞÜŞÖÇ", "Ærøskøbing, Ålborg, Øre",
]

EMOJI = [
    "🙂", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "1️⃣2️⃣", "❤️", "🧑🏿‍💻", "👩‍❤️‍💋‍👨",
    "🤷‍♀️", "😀😃😄😁", "🫠", "☺︎", "⚽️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
]

WHITESPACE = [
    " ", "  ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\n \n", "   \n\n\t  ",
    "\u00a0", "\u3000", "\u2028", "\u2029", "\u2003\u2009", "\u200b", "\u0085", "\x0b\x0c",
    " \t \t", "\n\n\n\n\n",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "1234567890", "31415926535897932384626",
    "3.14159", "1,000,000", "-42", "+7", "1e-10", "0x1F", "0b1011", "2024-05-17", "12:34:56",
    "٣٤٥", "१२३", "１２３", "²³", "½¼", "Ⅻ", "①②", "9999999999999999999999999999999",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "class A(B):\n\tdef __init__(self, *args, **kw):\n\t\tsuper().__init__(*args)\n",
    "for (int i = 0; i < n; ++i) {\n    sum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    '{"name": "tok", "ids": [1, 2, 3], "nested": {"ok": true, "x": null}}',
    "<div class=\"a\"><p>Hi &amp; bye</p></div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "$ ls -la | grep '^d' && echo \"done\" > /dev/null 2>&1",
    r"re.compile(r'(?i)\b\w+@\w+\.com\b')",
    "    if (x == NULL) {\n        return -1;\n    }\n\n\n",
    "x = [i ** 2 for i in range(10) if i % 2 == 0]",
    "fn main() { let v: Vec<u8> = vec![0xFF; 16]; }",
]

#: Special tokens of every family, used as plain text in the others.
SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>",
    "<|endoftext|>", "<repo_name>", "<mask>", "[SEP]",
]

SPECIAL_TEXT = [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<s>[INST] Hello [/INST] Hi there </s><s>[INST] again [/INST]",
    "<s><s></s></s>", " <s> ", "text<s>text", "<|eot_id", "<s", "< s>", "<|<|eot_id|>|>",
    "a <mask> b", "a<mask>b", "x [SEP] y", "x[SEP]y", "[SEP]", "mask <mask>  <mask>",
    "the foo bar", "foobar foo_bar foo.", "<unk> unknown <unk>", "<|endoftext|><|endoftext|>",
]

ODD = [
    "e\u0301", "n\u0303o\u0308", "Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o", "\ufffd",
    "\ue000\uf8ff", "\U000f0000", "\x00", "a\x00b", "\x1c\x1d\x1e\x1f", "\x7f", "\ufeffBOM",
    "\u200f\u200e", "soft\u00adhyphen", "ſ 'ſ", "\u212a\u212b", "İı", "ﬁﬂ ﬀ", "\u1100\u1161\u11a8",
    "\u2126", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "‍", "\u2060", "\U0001d400",
]

#: Fragments the random mixtures draw from.
POOLS = [PROSE, SCRIPTS, EMOJI, WHITESPACE, NUMBERS, CODE, SPECIALS, ODD]


def corpus(seed: int = 1234, mixtures: int = 900) -> list[str]:
    """Every hand-picked case, alone and with leading/trailing whitespace, then ``mixtures``
    random concatenations, then a few long texts."""
    cases = [s for pool in POOLS for s in pool] + SPECIAL_TEXT
    out = list(cases)
    out += [" " + s for s in cases[::3]] + [s + " " for s in cases[1::3]]
    out += ["\n" + s + "\n\n" for s in cases[2::5]]
    rng = random.Random(seed)
    for _ in range(mixtures):
        parts = [rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(2, 6))]
        joins = [rng.choice(["", " ", "", "\n", "  ", "\t"]) for _ in parts]
        out.append("".join(j + p for j, p in zip(joins, parts)))
    for k in range(4):
        r = random.Random(seed + k)
        out.append("".join(r.choice(r.choice(POOLS)) + r.choice([" ", "", "\n"])
                           for _ in range(300)))
    out.append("")
    return out
