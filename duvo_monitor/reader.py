"""Reading decoded YAML or JSON field by field, every problem named by its path.

The config file (:mod:`duvo_monitor.config`), its sink sections (:mod:`duvo_monitor.sinks.config`)
and the Duvo API's answers (:mod:`duvo_monitor.models`) are nested mappings of untrusted shape,
read the same way: a :class:`Reader` stands at one path (``api``, ``sinks[1]``,
``messages[3].tool_call``), reads fields, and hands each problem as ``(path, message)`` to the
:data:`Report` its caller chose. The choice is the only difference between the callers:

* the config collects the problems, so that ``check-config`` and a refused reload show all of
  them at once, and carries on with each field's default;
* the models raise on the first one (:func:`refuse`: a
  :class:`~duvo_monitor.errors.MalformedResponse` naming the field and the endpoint): an answer
  that cannot be decoded is refused whole, and the fallbacks below are never reached.

Two vocabularies, because the two sources differ. Config fields treat ``null`` as absent and go
through converters that raise ``ValueError`` (or ``TypeError``) with the message to show; the
messages name Python's kinds (``got list``). API fields (:class:`JsonReader`) tell ``null`` from
absent (``source: null`` is a value, a missing ``id`` is a fault) and name JSON's kinds
(``is an array, expected a string``).

Paths: ``key`` at the root, ``parent.key`` below it, ``parent[index]`` for a list's items. The
simulator's scenario files keep their own reader, which raises ``ScenarioError``. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Self, TypeVar

from duvo_monitor.errors import MalformedResponse

T = TypeVar("T")

Report = Callable[[str, str], None]
"""Takes ``(path, message)``: collects the problem and returns, or raises."""

_MISSING: Any = object()

_JSON_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def join(path: str, key: str | int) -> str:
    """The path of ``key`` (a mapping's key, or a list's index) below ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    """A value's kind as config messages name it: ``null``, ``str``, ``list``, ``dict``."""
    return "null" if value is None else type(value).__name__


def json_kind(value: object) -> str:
    """A value's kind as API messages name it: ``null``, ``a string``, ``an array``."""
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _refusal(exc: TypeError | ValueError, what: str | None) -> str:
    """A converter's message, or ``what`` when it has none to give (or only a TypeError's)."""
    message = str(exc)
    if what is not None and (not message or not isinstance(exc, ValueError)):
        return what
    return message


def refuse(endpoint: str) -> Report:
    """The report of an answer from ``endpoint``: refused whole at its first problem."""

    def report(path: str, message: str) -> None:
        raise MalformedResponse(message, endpoint=endpoint, field=path or None)

    return report


class Reader:
    """One mapping at ``path``: fields through converters, ``null`` as absent, unknown keys."""

    __slots__ = ("path", "raw", "report", "seen")

    def __init__(self, raw: Mapping[str, Any], path: str, report: Report) -> None:
        self.raw = raw
        self.path = path
        self.report = report
        self.seen: set[str] = set()

    @classmethod
    def of(cls, raw: object, path: str, report: Report) -> Self:
        """A reader of ``raw``; ``None`` reads as empty, any other non-mapping is a problem."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            report(path, f"expected a mapping, got {type_name(raw)}")
            raw = {}
        return cls(raw, path, report)

    def at(self, key: str | int) -> str:
        return join(self.path, key)

    def problem(self, key: str | int, message: str) -> None:
        """Report ``message`` at ``key`` (``""``: at this mapping itself)."""
        self.report(self.path if key == "" else self.at(key), message)

    def value(self, key: str) -> Any:
        """The raw value of ``key`` (``None`` when absent), counted as read."""
        self.seen.add(key)
        return self.raw.get(key)

    def get(self, key: str, default: T, convert: Callable[[Any], T], what: str | None = None) -> T:
        """``key`` converted; ``default`` when absent or null, or when ``convert`` refuses it.

        A refusal is reported with the converter's ``ValueError`` text; ``what``, when given,
        stands in for a refusal without text of its own (a bare ``TypeError``).
        """
        value = self.value(key)
        if value is None:
            return default
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            self.problem(key, _refusal(exc, what))
            return default

    def section(self, key: str) -> Self | None:
        """The mapping at ``key``, or ``None`` when it is absent or null."""
        value = self.value(key)
        if value is None:
            return None
        return self.of(value, self.at(key), self.report)

    def items(
        self,
        key: str,
        convert: Callable[[Any], T],
        *,
        what: str | None = None,
        not_list: str | None = None,
    ) -> tuple[T, ...]:
        """The list at ``key``, each item converted; a refused item is reported at its index."""
        value = self.value(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(key, not_list or f"expected a list, got {type_name(value)}")
            return ()
        out: list[T] = []
        for index, item in enumerate(value):
            try:
                out.append(convert(item))
            except (TypeError, ValueError) as exc:
                self.report(join(self.at(key), index), _refusal(exc, what))
        return tuple(out)

    def finish(self, known: Collection[str] | None = None) -> None:
        """Report each key not read so far (or, given ``known``, not in it) as unknown."""
        allowed = self.seen if known is None else known
        for key in self.raw:
            if key not in allowed:
                self.problem(str(key), "unknown key")


class JsonReader(Reader):
    """One object of an API answer: ``null`` and absent differ; problems read ``field <path> …``.

    Each method returns the field or, once the report has returned (a collecting report), an
    empty fallback (``""``, ``None``, ``False``, ``0``, ``[]``).
    """

    __slots__ = ()

    @classmethod
    def of(cls, raw: object, path: str, report: Report) -> Self:
        if not isinstance(raw, dict):
            report(path, f"{path or 'body'} is {json_kind(raw)}, expected an object")
            raw = {}
        return cls(raw, path, report)

    def fail(self, name: str, value: object, expected: str = "") -> None:
        """Report field ``name``: missing (``value`` is the module's marker) or not ``expected``."""
        what = "is missing" if value is _MISSING else f"is {json_kind(value)}, expected {expected}"
        self.complain(name, what)

    def complain(self, name: str, what: str) -> None:
        path = self.at(name)
        self.report(path, f"field {path} {what}")

    def field(self, name: str, *, required: bool = True) -> Any:
        """The raw value of ``name``; ``None`` when absent (a problem when ``required``)."""
        value = self.raw.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(name, value)
            return None
        return value

    def text(self, name: str) -> str:
        value = self.raw.get(name, _MISSING)
        if isinstance(value, str):
            return value
        self.fail(name, value, "a string")
        return ""

    def nullable_text(self, name: str, *, required: bool = True) -> str | None:
        value = self.field(name, required=required)
        if value is None or isinstance(value, str):
            return value
        self.fail(name, value, "a string or null")
        return None

    def opt_text(self, name: str) -> str | None:
        return self.nullable_text(name, required=False)

    def flag(self, name: str) -> bool:
        value = self.raw.get(name, _MISSING)
        if isinstance(value, bool):
            return value
        self.fail(name, value, "a boolean")
        return False

    def opt_flag(self, name: str) -> bool | None:
        value = self.raw.get(name)
        if value is None or isinstance(value, bool):
            return value
        self.fail(name, value, "a boolean")
        return None

    def number(self, name: str) -> float:
        value = self.raw.get(name, _MISSING)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        self.fail(name, value, "a number")
        return 0

    def whole(self, name: str) -> int:
        value = self.number(name)
        if value != int(value):
            self.complain(name, f"is {value}, expected a whole number")
        return int(value)

    def obj(self, name: str, *, required: bool = True, nullable: bool = False) -> Self | None:
        """The object at ``name``; ``None`` when absent (and not ``required``) or null and
        ``nullable``."""
        value = self.field(name, required=required)
        if value is None:
            if name in self.raw and not nullable:
                self.fail(name, None, "an object")
            return None
        return self.of(value, self.at(name), self.report)

    def array(self, name: str, *, required: bool = True) -> list[Any]:
        value = self.raw.get(name, _MISSING)
        if isinstance(value, list):
            return value
        if not required and (value is None or value is _MISSING):
            return []
        self.fail(name, value, "an array")
        return []

    def extra(self, known: Collection[str]) -> Mapping[str, Any]:
        """The fields not in ``known``, kept as they are."""
        return {k: v for k, v in self.raw.items() if k not in known}
