"""The MQL the Magnews simulator understands: ``select * from contacts`` with equality filters.

The reference shows contact queries only by example (``select * from contacts where iddatabase=7
limit 2``) and links a "Query documentation" it does not include. The simulator takes the part
whose meaning the example fixes, and refuses the rest with the documented error body (400), so a
client that relies on more fails in tests instead of in production::

    select * from contacts [where <field> = <literal> [and <field> = <literal>]...] [limit <n>]

Keywords are case-insensitive. A literal is an integer or a single-quoted string, in which ``''``
stands for one quote (SQL's rule; which rule MQL follows is not documented, and the bridge sends no
quote at all). ``iddatabase``, ``idcontact`` and ``status`` compare with the contact's own
attributes; any other name with the field of that id (a contact without the field does not match).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.simulators.magnews_contacts import Contact

__all__ = ["ContactQuery", "parse_contact_query"]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+)|(?P<string>'(?:[^']|'')*')|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[*=]))"
)
_ATTRIBUTES = ("iddatabase", "idcontact", "status")


@dataclass(frozen=True)
class ContactQuery:
    """Equality conditions, all of which a contact must meet, and the most contacts to answer."""

    conditions: tuple[tuple[str, str], ...]
    limit: int | None

    def matches(self, contact: Contact) -> bool:
        for name, literal in self.conditions:
            if name in _ATTRIBUTES:
                if str(getattr(contact, name)) != literal:
                    return False
            elif contact.fields.get(name) != literal:
                return False
        return True


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs: ``number``, ``string`` (unquoted), ``word`` or ``op``."""
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None or found.end() == position:
            raise ValueError(f"unexpected text at {position}: {text[position : position + 20]!r}")
        kind = found.lastgroup or ""
        value = found.group(kind)
        if kind == "string":
            value = value[1:-1].replace("''", "'")
        tokens.append((kind, value))
        position = found.end()
    return tokens


def _keyword(tokens: list[tuple[str, str]], word: str) -> bool:
    """Whether the next token is the keyword ``word`` (any case); it is taken if so."""
    if tokens and tokens[0][0] == "word" and tokens[0][1].lower() == word:
        tokens.pop(0)
        return True
    return False


def _expect(tokens: list[tuple[str, str]], kind: str, value: str | None = None) -> str:
    if kind == "word" and value is not None:
        if not _keyword(tokens, value):
            raise ValueError(f"expected {value}, got {repr(tokens[0][1]) if tokens else 'the end'}")
        return value
    if not tokens or tokens[0][0] != kind or (value is not None and tokens[0][1] != value):
        got = repr(tokens[0][1]) if tokens else "the end"
        raise ValueError(f"expected {value or kind}, got {got}")
    return tokens.pop(0)[1]


def parse_contact_query(text: str) -> ContactQuery:
    """The query, or ``ValueError`` naming what the simulator does not understand."""
    tokens = _tokens(text)
    for keyword in ("select", "*", "from", "contacts"):
        _expect(tokens, "op" if keyword == "*" else "word", keyword)
    conditions: list[tuple[str, str]] = []
    if _keyword(tokens, "where"):
        while True:
            name = _expect(tokens, "word")
            _expect(tokens, "op", "=")
            if tokens and tokens[0][0] in ("number", "string"):
                conditions.append((name, tokens.pop(0)[1]))
            else:
                raise ValueError(f"expected a number or a quoted string after {name} =")
            if not _keyword(tokens, "and"):
                break
    limit = None
    if _keyword(tokens, "limit"):
        limit = int(_expect(tokens, "number"))
        if limit < 0:
            raise ValueError("limit must not be negative")
    if tokens:
        raise ValueError(
            f"unexpected {tokens[0][1]!r}: this simulator reads select * from contacts [where ...] [limit n]"
        )
    return ContactQuery(tuple(conditions), limit)
