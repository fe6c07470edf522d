# Case definitions for qwen2 golden tokenizer fixture. Texts are exact byte strings (UTF-8).
MODULE = '''"""Inventory utilities for the demo warehouse service.

This module is intentionally a little bit of everything: classes,
decorators, f-strings, type hints and comprehensions.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, TypeVar

T = TypeVar("T")
MAX_ITEMS: int = 12345
PI_ISH = 3.14159
    
def memoize(func: Callable[..., T]) -> Callable[..., T]:
    """Cache results keyed by positional arguments."""
    cache: Dict[tuple, T] = {}

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> T:
        if kwargs:
            return func(*args, **kwargs)
        if args not in cache:
            cache[args] = func(*args)
        return cache[args]

    return wrapper


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    price: float = 0.0
    tags: List[str] = field(default_factory=list)

    def label(self) -> str:
        return f"{self.name} ({self.sku}) @ ${self.price:,.2f}"
        

class Inventory:
    """A tiny in-memory inventory.

    >>> inv = Inventory()
    >>> inv.add(Item("A-1", "widget", 2.5))
    """

    def __init__(self, items: Optional[Iterable[Item]] = None) -> None:
        self._items: Dict[str, Item] = {}
        self._counts: Dict[str, int] = {}
        for item in items or []:
            self.add(item)

    def add(self, item: Item, count: int = 1) -> None:
        if len(self._items) >= MAX_ITEMS:
            raise OverflowError(f"inventory full ({MAX_ITEMS} items)")
        self._items[item.sku] = item
        self._counts[item.sku] = self._counts.get(item.sku, 0) + count

    def total_value(self) -> float:
        return sum(self._items[s].price * c for s, c in self._counts.items())

    def by_tag(self) -> Dict[str, List[str]]:
        result: Dict[str, List[str]] = {}
        for sku, item in self._items.items():
            for tag in item.tags:
                if tag:
                    if tag not in result:
                        result[tag] = []
                    result[tag].append(sku)
        return {k: sorted(v) for k, v in result.items()}

    @property
    def skus(self) -> List[str]:
        return [sku for sku in sorted(self._items) if self._counts[sku] > 0]

    @staticmethod
    def circle_area(radius: float) -> float:
        return PI_ISH * radius ** 2 if radius > 0 else 0.0


@memoize
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def report(inv: Inventory) -> str:
    lines = [f"{i:>3}. {inv._items[s].label()}" for i, s in enumerate(inv.skus, 1)]
    header = "SKU report\\n" + "=" * 10
    return "\\n".join([header, *lines, f"total: {inv.total_value():.3f}"])


if __name__ == "__main__":
    inv = Inventory([Item("A-1", "widget", 2.5, ["tools"]), Item("B-2", "gadget", 10.0)])
    print(report(inv))
    print(fib(30), math.isclose(Inventory.circle_area(1.0), PI_ISH))
'''

TABS = "class Node:\n\tdef __init__(self, value):\n\t\tself.value = value\n\t\tself.children = []\n\n\tdef walk(self):\n\t\tyield self.value\n\t\tfor child in self.children:\n\t\t\tyield from child.walk()\n\t\t\tif child.value is None:\n\t\t\t\tbreak\n"

CRLF = "import os\r\n\r\n\r\ndef main() -> int:\r\n    path = os.environ.get(\"HOME\", \"/tmp\")\r\n    if not path:\r\n        return 1\r\n    print(f\"home={path}\")\r\n    return 0\r\n"

NON_ASCII = "# -*- coding: utf-8 -*-\ndef grüße(name: str) -> str:\n    café = \"Café crème\"\n    return f\"{café}, {name}! Übermäßig schön.\"\n\n变量 = \"中文字符串，测试分词\"\nпривет = \"Привет, мир!\"\narabic = \"مرحبا بالعالم العربية\"\nprint(grüße(\"José\"), 变量, привет, arabic)\n"

EMOJI = "SNAKE = \"🐍\"  # python!\nfancy = \"𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕏\"\nfamily = \"👨‍👩‍👧‍👦 🏳️‍🌈 ✅❌\"\nprint(f\"{SNAKE * 3} {fancy} 🚀🔥\")\n"

CONTRACTIONS = "# don't panic: I'll fix it, you're fine, they've gone, we'd go, it's OK\nmsg = \"WE'RE DONE, DON'T STOP, I'LL BE BACK, SHE'S HERE, I'M IN, YOU'VE WON, HE'D\"\nmixed = \"It'S We'Re Don'T\"\n"

WHITESPACE = "x = 1\n\n\n\ny = 2\n    \n        \n\n\n\n\n\n\n\nz = 3          # many spaces\n" + " " * 40 + "w = 4\n\t \t \n \n"

LITERAL_FIM = "s = \"<|fim_prefix|>def f():<|fim_suffix|>    pass<|fim_middle|>\"\nt = '<|endoftext|><|im_start|>user<|im_end|><|file_sep|><|repo_name|>'\n"

DIGITS = "n = 1234567890\nbig = 12345678901234567890\nf = 3.14159265358979\nhexes = [0xFF, 0o777, 0b1010, 1_000_000, 1e-10, 2.5E+3, 42j]\n"

PUNCT = "a != b <= c >= d ** e // f -> g := h ... i == j += k -= l *= m /= n %= o @= p &= q |= r ^= s >>= t <<= u **= v //= w\n({[<>]}) ;;, `~` $#! ? \\\\ '' \"\" ''' \"\"\" ->: ::\n"

SPACES_ONLY = "   "

NUL = "a = \"x\x00y\"\n\x00\x00end"

SINGLE_NL = "\n"

TRAILING_SPACES = "value = compute()   "

ESCAPES = "s = \"line1\\nline2\\ttab\\\\back \\x00 \\u00e9 \\N{BULLET}\"\npattern = r\"^\\s*(\\d+)\\.(\\w+)$\"\npath = 'C:\\\\Users\\\\me'\n"

ASYNC = "async def fetch(session, url: str) -> bytes:\n    async with session.get(url, timeout=30) as resp:\n        data = await resp.read()\n    squares = {x: x ** 2 for x in range(10) if x % 2}\n    key = lambda kv: (-kv[1], kv[0])\n    return data  # https://example.com/api/v1?q=1&r=2\n"

LEADING_SPACE = " hello world  foo   bar    baz"

LONG_IDENT = "this_is_a_really_long_snake_case_identifier_name_for_testing_bpe = ThisIsAReallyLongCamelCaseIdentifierNameForTestingBpe()\n"

DOCSTRING = 'def f(x):\n    """Return x.\n\n    Args:\n        x: anything.\n\n    Returns:\n        The same object, unchanged.\n    """\n    return x\n'

FIM1 = "<|fim_prefix|>def quicksort(arr: list[int]) -> list[int]:\n    if len(arr) <= 1:\n        return arr\n    pivot = arr[len(arr) // 2]\n<|fim_suffix|>\n    return quicksort(left) + middle + quicksort(right)\n<|fim_middle|>"

FIM2 = "<|fim_prefix|>import json\n\n\ndef load_config(path: str) -> dict:\n    with open(path, encoding=\"utf-8\") as fh:\n        <|fim_suffix|>\n    return cfg\n\n\nif __name__ == \"__main__\":\n    print(load_config(\"config.json\"))\n<|fim_middle|>"

FIM3 = "<|fim_prefix|>class Stack:\n\tdef __init__(self):\n\t\tself._data = []\n\n\tdef push(self, x):\n\t\t<|fim_suffix|>\n\n\tdef pop(self):\n\t\treturn self._data.pop()  # don't call on empty\n<|fim_middle|>"

REPO = ("<|repo_name|>demo\n<|file_sep|>pkg/util.py\n"
        "def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:\n"
        "    \"\"\"Clamp x into [lo, hi].\"\"\"\n"
        "    return max(lo, min(hi, x))\n\n\n"
        "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n"
        "<|file_sep|>main.py\n"
        "<|fim_prefix|>from pkg.util import clamp, mean\n\n\ndef normalize(values):\n    m = mean(values)\n    "
        "<|fim_suffix|>\n    return [clamp(v / m) for v in values]\n"
        "<|fim_middle|>")

CHAT = "<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a Python hello world.<|im_end|>\n<|im_start|>assistant\n```python\nprint(\"Hello, world!\")\n```<|im_end|>\n<|endoftext|>"

TOOL_CALL = "reply = \"<tool_call>{\\\"name\\\": \\\"run\\\"}</tool_call>\"  # [PAD151665] <|fim_pad|>\n"

CASES = [
    ("python_module_3k", False, MODULE),
    ("tabs_indentation", False, TABS),
    ("crlf_line_endings", False, CRLF),
    ("non_ascii_identifiers_and_strings", False, NON_ASCII),
    ("emoji_and_astral", False, EMOJI),
    ("contractions", False, CONTRACTIONS),
    ("whitespace_runs", False, WHITESPACE),
    ("literal_special_text_not_parsed", False, LITERAL_FIM),
    ("digit_runs_and_numbers", False, DIGITS),
    ("punctuation_soup", False, PUNCT),
    ("spaces_only", False, SPACES_ONLY),
    ("nul_bytes", False, NUL),
    ("single_newline", False, SINGLE_NL),
    ("trailing_spaces_no_newline", False, TRAILING_SPACES),
    ("backslash_escapes_literal", False, ESCAPES),
    ("async_lambda_comment_url", False, ASYNC),
    ("leading_space_words", False, LEADING_SPACE),
    ("long_identifiers", False, LONG_IDENT),
    ("docstring_blank_lines", False, DOCSTRING),
    ("fim_quicksort", True, FIM1),
    ("fim_open_file", True, FIM2),
    ("fim_tabs_stack", True, FIM3),
    ("repo_level_fim", True, REPO),
    ("chat_template_special", True, CHAT),
    ("literal_fim_text_parse_special_true", True, LITERAL_FIM),
    ("user_defined_tool_call_no_parse_special", False, TOOL_CALL),
]
