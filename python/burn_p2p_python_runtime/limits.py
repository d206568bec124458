"""The worker's bounds on JSON nesting and on the text of its error answers, in one place.

``MAX_JSON_DEPTH`` is part of the contract: the TypeScript client refuses to
send deeper input, with the same number. Depth counts nested arrays and
objects: a scalar is 0 deep, ``[]`` and ``{}`` are 1, ``[[1]]`` is 2. A
request's ``params`` and an answer's ``result`` may each be up to
``MAX_JSON_DEPTH`` deep (the envelope object around them adds one level, so a
frame is at most ``MAX_JSON_DEPTH + 1`` deep). Deeper requests get an ``ok:
false`` answer of type ``RequestTooDeepError``, deeper results one of type
``ResultTooDeepError``; the worker keeps serving either way.

Error answers quote values (a model id, a method name, a param) through
``quote``: at most ``QUOTE_CHARS`` characters of the value, then
``...(N chars)``. The answer's exception message is at most
``MAX_MESSAGE_CHARS`` characters (its head), its ``traceback`` at most
``MAX_TRACEBACK_CHARS`` (head and tail: the tail names the exception), its
``error`` (``"Type: message\\n" + traceback``) at most ``MAX_ERROR_CHARS``;
and the whole answer is shrunk further when the frame limit demands it.
"""

from itertools import chain

MAX_JSON_DEPTH = 256
"""Deepest ``params`` or ``result`` the worker accepts or sends (see above)."""

QUOTE_CHARS = 200
"""Characters of a value quoted in an error message; ``...(N chars)`` follows a longer one."""

MAX_MESSAGE_CHARS = 4096
"""Longest exception message in an error answer, and longest single piece of its traceback."""

MAX_TRACEBACK_CHARS = 16384
"""Longest ``traceback`` field of an error answer (head and tail kept)."""

MAX_ERROR_CHARS = 24576
"""Longest ``error`` field of an error answer (head and tail kept)."""

ID_SCAN_BYTES = 128
"""How much of an undecodable request frame is scanned for its ``{"id":N`` prefix."""

_CONTAINERS = (list, dict, tuple)
_EXACT_CONTAINERS = frozenset((list, dict))


def clip_head(text, limit):
    """``text`` if it fits in ``limit`` characters, else its head and ``...(N chars)``, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    marker = f"...({len(text)} chars)"
    if len(marker) >= limit:
        return text[: max(limit, 0)]
    return text[: limit - len(marker)] + marker


def clip_middle(text, limit):
    """``text`` if it fits in ``limit`` characters, else its head and tail around a marker, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    marker = f"\n...({len(text) - limit} of {len(text)} chars left out)...\n"
    if len(marker) >= limit:
        return text[: max(limit, 0)]
    room = limit - len(marker)
    head = room // 2
    tail = room - head
    return text[:head] + marker + (text[-tail:] if tail else "")


_bounded_repr = None


def _make_bounded_repr():
    """A ``repr`` that never builds the whole text of a huge string, bytes or container (made on first use)."""
    import reprlib

    class BoundedRepr(reprlib.Repr):
        def __init__(self):
            super().__init__()
            self.maxlevel = 4
            self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 8
            self.maxother = QUOTE_CHARS

        def repr_str(self, value, level):
            return _quote_sliceable(value)

        def repr_bytes(self, value, level):
            return _quote_sliceable(value)

        def repr_bytearray(self, value, level):
            return _quote_sliceable(value)

        def repr_instance(self, value, level):
            try:
                return clip_head(repr(value), self.maxother)
            except Exception:
                return f"<{type(value).__name__} object (repr failed)>"

    return BoundedRepr()


def _quote_sliceable(value):
    if len(value) <= QUOTE_CHARS:
        return repr(value)
    return f"{repr(value[:QUOTE_CHARS])}...({len(value)} chars)"


def quote(value):
    """A repr of ``value`` for an error message, bounded: at most ``QUOTE_CHARS`` characters of a string, then ``...(N chars)``."""
    if isinstance(value, (str, bytes, bytearray)):
        return _quote_sliceable(value)
    global _bounded_repr
    try:
        if _bounded_repr is None:
            _bounded_repr = _make_bounded_repr()
        text = _bounded_repr.repr(value)
    except Exception:
        text = f"<{type(value).__name__} object (repr failed)>"
    return clip_head(text, 4 * QUOTE_CHARS)


def nests_deeper_than(value, limit, exact=True):
    """True when ``value`` has more than ``limit`` levels of nested containers.

    Iterative (it never recurses, whatever the depth) and one pass per level.
    ``exact`` counts only plain ``list`` and ``dict``, as ``json.loads``
    builds them (the fast path for requests); otherwise any list, tuple or
    dict subclass counts, as the encoder takes them.
    """
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = _next_level(level) if exact else _next_level_any(level)
    return False


def _next_level(level):
    containers = _EXACT_CONTAINERS
    if len(level) <= 16:
        # Few (possibly huge) containers: skip those that hold no container at C speed.
        found = []
        for container in level:
            items = container.values() if type(container) is dict else container
            if not containers.isdisjoint(map(type, items)):
                found += [item for item in items if type(item) in containers]
        return found
    # Many (typically small) containers: one pass over all their items.
    children = chain.from_iterable([container.values() if type(container) is dict else container for container in level])
    return [item for item in children if type(item) in containers]


def _next_level_any(level):
    children = chain.from_iterable([container.values() if isinstance(container, dict) else container for container in level])
    return [item for item in children if isinstance(item, _CONTAINERS)]
