"""Numbers as people write them: ``3e-3``, ``1e4``, ``inf`` and ``nan`` in YAML and on the command line.

PyYAML follows YAML 1.1, where a float needs a dot (``3.0e-3``) and infinity is spelled ``.inf``:
``lr: 3e-3`` would arrive as the *string* ``'3e-3'``. YAML 1.2 and every other reader of numbers
(Python, JSON, the shell) call these numbers, so recipe files and ``--set KEY=VALUE`` do too. A
whole number in exponent form (``1e4``) is an int, so it also fits where a count is expected.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

__all__ = ["load_yaml", "parse_number"]

_WHOLE_EXPONENT = re.compile(r"[-+]?[0-9][0-9_]*[eE]\+?[0-9]+")
_NUMBER = re.compile(
    r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+"  # exponent without a dot
    r"|[-+]?(?:inf|Inf|INF|infinity|Infinity|INFINITY)"
    r"|(?:nan|NaN|NAN)"
)
_TAG = "tag:rnnguard,2025:number"
_MAX_EXACT_EXPONENT = 30  # 1e30 as an exact int; larger whole numbers stay floats

_loader: Any = None


def parse_number(text: str) -> int | float:
    """``text`` as a number: ints as ints, ``1e4`` as the int 10000, ``3e-3``/``inf``/``nan`` floats.

    Raises ``ValueError`` when ``text`` is not a number.
    """
    s = text.strip().replace("_", "")
    if s.lstrip("+-").lower() in (".inf", ".nan"):  # YAML's own spelling
        s = s.replace(".", "", 1)
    if re.fullmatch(r"[-+]?[0-9]+", s):
        return int(s)
    if _WHOLE_EXPONENT.fullmatch(s) and int(re.split("[eE]", s)[1]) <= _MAX_EXACT_EXPONENT:
        return int(Decimal(s))
    return float(s)


def _make_loader() -> Any:
    import yaml

    class NumberLoader(yaml.SafeLoader):
        """SafeLoader that also reads exponents without a dot, ``inf`` and ``nan`` as numbers."""

    def construct_number(loader: Any, node: Any) -> int | float:
        return parse_number(loader.construct_scalar(node))

    NumberLoader.add_implicit_resolver(_TAG, re.compile(f"^(?:{_NUMBER.pattern})$"),
                                       list("-+0123456789.iInN"))  # fmt: skip
    NumberLoader.add_constructor(_TAG, construct_number)
    return NumberLoader


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, with ``3e-3``, ``1e4``, ``inf``, ``-inf`` and ``nan`` as numbers."""
    global _loader
    import yaml

    if _loader is None:
        _loader = _make_loader()
    return yaml.load(text, Loader=_loader)
