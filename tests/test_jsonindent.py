"""jsonindent: the same text as json.dumps(indent=2, ensure_ascii=False), always."""

from __future__ import annotations

import enum
import json
import random
from collections import OrderedDict
from typing import Any

import pytest

from claudeclaw.jsonindent import dumps_indent2


def _reference(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


class _Level(enum.IntEnum):
    HIGH = 3


class _Name(str):
    pass


CASES: list[Any] = [
    {},
    [],
    {"a": {}},
    {"a": []},
    [[]],
    [{}],
    [[[[1]]]],
    {"a": {"b": {"c": {}}}},
    {"a": 1, "b": [1, 2.5, None, True, False, 'x\n\u00e9"\\\t\x00', {"c": []}]},
    1,
    -0.0,
    1e300,
    [1e-7, 0.1, 1 / 3],
    "s",
    None,
    True,
    float("nan"),
    [float("inf"), -float("inf"), float("nan")],
    1234567890123456789012,
    {"é": "ü\u2028\U0001f600", "": ""},
    # Outside the fast path: the standard library encodes them.
    (1, [2, (3,)]),
    {"t": (1, 2)},
    OrderedDict(a=1),
    {7: "int key", True: "bool key", None: "none key", 2.5: "float key"},
    {"level": _Level.HIGH, "name": _Name("n")},
    [_Level.HIGH, _Name("x")],
]


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
def test_same_text_as_the_standard_library(data: Any) -> None:
    assert dumps_indent2(data) == _reference(data)


def _random_document(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 5 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randrange(-(10**20), 10**20)
    if kind == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 1e-300, 0.0, 1e22])
    if kind in (3, 4, 5):
        alphabet = 'ab "\\\n\t\x01é€\U0001f600\u2028/'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
    if kind in (6, 7):
        return {
            str(_random_document(rng, 9)): _random_document(rng, depth + 1)
            for _ in range(rng.randrange(5))
        }
    return [_random_document(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_same_text_on_random_documents() -> None:
    rng = random.Random(20261201)
    for _ in range(2000):
        data = _random_document(rng, 0)
        assert dumps_indent2(data) == _reference(data)


def test_errors_are_the_standard_librarys() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_indent2({"a": [1, {"b": object()}]})
    cycle: dict[str, Any] = {}
    cycle["self"] = [cycle]
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_indent2(cycle)
