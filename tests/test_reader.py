"""The path-aware reader that config, sink config and the models share. Pure, no event loop."""

from __future__ import annotations

from duvo_monitor.reader import JsonReader, Reader, join


def collector() -> tuple[list[str], JsonReader]:
    found: list[str] = []
    body = {"id": 3, "ok": None, "n": 2.5, "items": "x", "child": "s", "nested": {"a": []}}
    reader = JsonReader.of(body, "run", lambda path, message: found.append(f"{path}|{message}"))
    return found, reader


def test_paths_join_keys_and_indexes() -> None:
    """A key at the root is bare, a key below is dotted, a list's item is indexed."""
    assert (join("", "api"), join("api", "timeout"), join("watch.runs", 2)) == (
        "api",
        "api.timeout",
        "watch.runs[2]",
    )


def test_a_collecting_report_gets_every_api_problem_and_the_fallbacks() -> None:
    """With a report that returns, each typed read reports and hands back an empty value."""
    found, r = collector()
    assert r.text("id") == ""
    assert r.text("missing") == ""
    assert r.flag("ok") is False
    assert r.whole("n") == 2
    assert r.array("items") == []
    assert r.obj("child") is not None
    nested = r.obj("nested")
    assert nested is not None and nested.text("a") == ""
    assert found == [
        "run.id|field run.id is a number, expected a string",
        "run.missing|field run.missing is missing",
        "run.ok|field run.ok is null, expected a boolean",
        "run.n|field run.n is 2.5, expected a whole number",
        "run.items|field run.items is a string, expected an array",
        "run.child|run.child is a string, expected an object",
        "run.nested.a|field run.nested.a is an array, expected a string",
    ]


def test_optional_api_fields_may_be_absent_or_null() -> None:
    """Not required: absent and null read as nothing, without a problem."""
    found, r = collector()
    assert r.opt_flag("absent") is None
    assert r.opt_flag("ok") is None
    assert r.array("absent", required=False) == []
    assert r.obj("absent", required=False) is None
    assert r.opt_text("absent") is None
    assert found == []


def test_config_reads_treat_null_as_absent_and_report_unread_keys() -> None:
    """Config reads: null is the default, a refusal is reported with its path, unread is unknown."""
    found: list[tuple[str, str]] = []
    r = Reader.of({"a": None, "b": "x", "c": [1, "y"], "d": 1}, "top", lambda *p: found.append(p))

    def number(value: object) -> int:
        if not isinstance(value, int):
            raise TypeError
        return value

    assert r.get("a", 7, number) == 7
    assert r.get("b", 7, number, "must be a number") == 7
    assert r.items("c", number, what="must be a number") == (1,)
    r.finish()
    assert found == [
        ("top.b", "must be a number"),
        ("top.c[1]", "must be a number"),
        ("top.d", "unknown key"),
    ]
