"""The models decode what the Duvo API returns: strict about what the schema requires, naming the
field path and the endpoint, tolerant of what may grow. Pure code, so no event loop here."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import pytest

from duvo_monitor.errors import MalformedResponse
from duvo_monitor.models import (
    HumanRequest,
    HumanRequestRecord,
    HumanResponse,
    Message,
    MessagePage,
    RateLimit,
    Run,
    RunList,
    RunSnapshot,
    StopResult,
    Team,
    format_time,
    parse_time,
)

EP = "GET /v2/runs/{run_id}"
RUN_ID = "3f1c2a9e-0b7d-4c41-9a55-6d2f1e8b7c01"


def run_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": RUN_ID,
        "agent_id": "a0000000-0000-4000-8000-000000000001",
        "build_id": "b0000000-0000-4000-8000-000000000001",
        "status": "running",
        "source": "api",
        "sandbox_id": None,
        "started_at": "2025-11-01T10:00:01.000Z",
        "completed_at": None,
        "created_at": "2025-11-01T10:00:00.000Z",
        "updated_at": "2025-11-01T10:00:02.000Z",
        "human_in_the_loop_enabled": True,
    }
    payload.update(overrides)
    return payload


def message_payload(i: int = 0, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": f"msg-{i}",
        "type": "text",
        "role": "assistant",
        "timestamp": "2025-11-01T10:00:03.000Z",
        "text_content": f"hello {i}",
    }
    payload.update(overrides)
    return payload


def summary_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": RUN_ID,
        "created_at": "2025-11-01T10:00:00.000Z",
        "updated_at": "2025-11-01T10:00:02.000Z",
        "started_at": None,
        "completed_at": None,
        "status": "pending",
        "source": None,
        "title": "Reconcile invoices",
        "run_number": 7,
        "agent_id": "a0000000-0000-4000-8000-000000000001",
        "agent_name": "Invoice reconciler",
        "build_id": "b0000000-0000-4000-8000-000000000001",
        "user_id": None,
        "case_queue_item_id": None,
        "case_queue_id": None,
        "case_queue_name": None,
        "case_title": None,
        "postponed_to": None,
        "submitted_prompt_count": 1,
    }
    payload.update(overrides)
    return payload


def malformed(call: Any) -> MalformedResponse:
    with pytest.raises(MalformedResponse) as info:
        call()
    return info.value


# -- Run ---------------------------------------------------------------------------------------


def test_run_decodes_every_documented_field() -> None:
    """A complete run payload becomes a Run with every field, and no extras."""
    run = Run.from_api(run_payload(), endpoint=EP)
    assert run.id == RUN_ID
    assert run.status == "running"
    assert run.source == "api"
    assert run.sandbox_id is None
    assert run.completed_at is None
    assert run.human_in_the_loop_enabled is True
    assert run.extra == {}
    assert run.to_dict() == run_payload()


@pytest.mark.parametrize(
    "name",
    [
        "id",
        "agent_id",
        "build_id",
        "status",
        "source",
        "sandbox_id",
        "started_at",
        "completed_at",
        "created_at",
        "updated_at",
        "human_in_the_loop_enabled",
    ],
)
def test_run_missing_required_field_names_path_and_endpoint(name: str) -> None:
    """A missing required run field (nullable or not) names run.<field> and the endpoint."""
    payload = run_payload()
    del payload[name]
    exc = malformed(lambda: Run.from_api(payload, endpoint=EP))
    assert exc.field == f"run.{name}"
    assert exc.endpoint == EP
    assert str(exc) == f"{EP}: field run.{name} is missing"


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("status", 5, "is a number, expected a string"),
        ("id", None, "is null, expected a string"),
        ("created_at", ["x"], "is an array, expected a string"),
        ("source", 3, "is a number, expected a string or null"),
        ("started_at", {}, "is an object, expected a string or null"),
        ("human_in_the_loop_enabled", "yes", "is a string, expected a boolean"),
        ("human_in_the_loop_enabled", None, "is null, expected a boolean"),
    ],
)
def test_run_wrong_type_names_field_and_kind(name: str, value: Any, complaint: str) -> None:
    """A field of the wrong type is a MalformedResponse saying what was found and expected."""
    exc = malformed(lambda: Run.from_api(run_payload(**{name: value}), endpoint=EP))
    assert exc.field == f"run.{name}"
    assert f"field run.{name} {complaint}" in str(exc)


@pytest.mark.parametrize("body", [None, [], "run", 3, True])
def test_run_that_is_not_an_object_is_malformed(body: Any) -> None:
    """A run that is not a JSON object is rejected, naming 'run'."""
    exc = malformed(lambda: Run.from_api(body, endpoint=EP))
    assert exc.field == "run"
    assert "expected an object" in str(exc)


def test_run_nullables_accept_null_and_strings() -> None:
    """The nullable fields take null or a string."""
    nulls = Run.from_api(
        run_payload(source=None, sandbox_id=None, started_at=None, completed_at=None), endpoint=EP
    )
    assert (nulls.source, nulls.sandbox_id, nulls.started_at, nulls.completed_at) == (None,) * 4
    values = Run.from_api(
        run_payload(sandbox_id="sbx", completed_at="2025-11-01T10:01:00Z", status="completed"),
        endpoint=EP,
    )
    assert values.sandbox_id == "sbx"
    assert values.completed_at == "2025-11-01T10:01:00Z"
    assert values.terminal


def test_run_keeps_unknown_fields_in_extra() -> None:
    """Fields the schema does not know yet are kept in Run.extra, not rejected."""
    run = Run.from_api(run_payload(title="New!", cost={"usd": 0.2}), endpoint=EP)
    assert run.extra == {"title": "New!", "cost": {"usd": 0.2}}
    assert "title" not in run.to_dict()


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("pending", False),
        ("waiting", False),
        ("completed", True),
        ("interrupted", True),
        ("stopped", True),
        ("failed", True),
        ("paused_for_maintenance", False),
        ("needs_attention", False),
    ],
)
def test_run_status_is_a_free_string(status: str, terminal: bool) -> None:
    """Unknown statuses pass through unchanged and are not terminal."""
    run = Run.from_api(run_payload(status=status), endpoint=EP)
    assert run.status == status
    assert run.terminal is terminal


def test_run_where_prefix_is_used_in_paths() -> None:
    """A run nested elsewhere reports its own path."""
    exc = malformed(lambda: Run.from_api(run_payload(id=1), endpoint=EP, where="data[2]"))
    assert exc.field == "data[2].id"


# -- GET run: RunSnapshot and the pending human request ------------------------------------------


def test_snapshot_run_null_means_the_run_is_gone() -> None:
    """GET run's documented `run: null` decodes to a snapshot with run None, not an error."""
    snap = RunSnapshot.from_api({"run": None, "pending_human_request": None}, endpoint=EP)
    assert snap.run is None
    assert snap.pending_human_request is None


def test_snapshot_without_run_field_is_malformed() -> None:
    """`run` is required: a body without it names the field."""
    exc = malformed(lambda: RunSnapshot.from_api({"pending_human_request": None}, endpoint=EP))
    assert exc.field == "run"
    assert EP in str(exc)


def test_snapshot_pending_request_absent_or_null() -> None:
    """pending_human_request may be absent (v1 schema) or null (v2 schema)."""
    absent = RunSnapshot.from_api({"run": run_payload()}, endpoint=EP)
    null = RunSnapshot.from_api({"run": run_payload(), "pending_human_request": None}, endpoint=EP)
    assert absent.pending_human_request is None
    assert null.pending_human_request is None
    assert absent.run is not None
    assert absent.run.id == RUN_ID


def question_request() -> dict[str, Any]:
    return {
        "id": "c0000000-0000-4000-8000-000000000001",
        "title": "Which ledger?",
        "description": None,
        "created_at": "2025-11-01T10:00:05.000Z",
        "type": "question",
        "questions": [
            {
                "question": "Which ledger should I post to?",
                "header": "Ledger",
                "options": [
                    {"label": "EU", "description": "Euro ledger"},
                    {"label": "US"},
                ],
                "multi_select": False,
            },
            {"question": "Anything else?"},
        ],
    }


def test_human_request_questions_and_options() -> None:
    """A question request decodes its questions, headers, options and multi_select."""
    snap = RunSnapshot.from_api(
        {"run": run_payload(status="waiting"), "pending_human_request": question_request()},
        endpoint=EP,
    )
    req = snap.pending_human_request
    assert req is not None
    assert req.type == "question"
    assert req.description is None
    first, second = req.questions
    assert first.question == "Which ledger should I post to?"
    assert first.header == "Ledger"
    assert [(o.label, o.description) for o in first.options] == [
        ("EU", "Euro ledger"),
        ("US", None),
    ]
    assert first.multi_select is False
    assert (second.header, second.options, second.multi_select) == (None, (), None)
    assert req.to_dict()["questions"][1]["options"] == []


def test_approval_request_has_no_questions() -> None:
    """An approval request without `questions` decodes with an empty tuple."""
    payload = question_request() | {"type": "approval", "description": "Pay 3 invoices?"}
    del payload["questions"]
    req = HumanRequest.from_api(payload, endpoint=EP)
    assert req.type == "approval"
    assert req.questions == ()
    assert req.description == "Pay 3 invoices?"


def test_unknown_human_request_type_passes_through() -> None:
    """A request type we have never seen (the UI's login request) is kept as is."""
    req = HumanRequest.from_api(question_request() | {"type": "login"}, endpoint=EP)
    assert req.type == "login"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r.pop("title"), "pending_human_request.title"),
        (lambda r: r.pop("description"), "pending_human_request.description"),
        (lambda r: r.update(type=1), "pending_human_request.type"),
        (lambda r: r.update(questions="no"), "pending_human_request.questions"),
        (
            lambda r: r["questions"][1].pop("question"),
            "pending_human_request.questions[1].question",
        ),
        (
            lambda r: r["questions"][0]["options"][1].pop("label"),
            "pending_human_request.questions[0].options[1].label",
        ),
        (
            lambda r: r["questions"][0].update(multi_select="no"),
            "pending_human_request.questions[0].multi_select",
        ),
        (lambda r: r["questions"].append(7), "pending_human_request.questions[2]"),
    ],
)
def test_human_request_errors_name_the_nested_path(mutate: Any, path: str) -> None:
    """A bad human request names the exact nested path, down to an option's label."""
    payload = question_request()
    mutate(payload)
    body = {"run": run_payload(), "pending_human_request": payload}
    exc = malformed(lambda: RunSnapshot.from_api(body, endpoint=EP))
    assert exc.field == path
    assert path in str(exc)


# -- messages ------------------------------------------------------------------------------------

MSG_EP = "GET /v1/runs/{run_id}/messages"


def page_payload(items: list[Any], **overrides: Any) -> dict[str, Any]:
    return {"messages": items, "total": len(items), "limit": 50, "offset": 0} | overrides


def test_message_page_decodes_messages_in_order() -> None:
    """A page decodes its messages in order, with total/limit/offset as ints."""
    page = MessagePage.from_api(
        page_payload([message_payload(i) for i in range(3)], total=10.0), endpoint=MSG_EP
    )
    assert [m.id for m in page.messages] == ["msg-0", "msg-1", "msg-2"]
    assert (page.total, page.limit, page.offset) == (10, 50, 0)
    assert isinstance(page.total, int)


def test_message_error_names_index_and_field() -> None:
    """A bad fourth message is reported as messages[3].id with the endpoint."""
    messages = [message_payload(i) for i in range(5)]
    del messages[3]["id"]
    exc = malformed(lambda: MessagePage.from_api(page_payload(messages), endpoint=MSG_EP))
    assert exc.field == "messages[3].id"
    assert str(exc) == f"{MSG_EP}: field messages[3].id is missing"


@pytest.mark.parametrize(
    ("overrides", "path", "complaint"),
    [
        ({"total": "3"}, "total", "is a string, expected a number"),
        ({"total": True}, "total", "is a boolean, expected a number"),
        ({"limit": 2.5}, "limit", "is 2.5, expected a whole number"),
        ({"offset": None}, "offset", "is null, expected a number"),
        ({"messages": None}, "messages", "is null, expected an array"),
        ({"messages": {}}, "messages", "is an object, expected an array"),
    ],
)
def test_message_page_fields_are_checked(
    overrides: dict[str, Any], path: str, complaint: str
) -> None:
    """The page's own required fields are type-checked."""
    exc = malformed(lambda: MessagePage.from_api(page_payload([], **overrides), endpoint=MSG_EP))
    assert exc.field == path
    assert complaint in str(exc)


def test_message_page_missing_total_is_malformed() -> None:
    """total is required."""
    payload = page_payload([])
    del payload["total"]
    assert malformed(lambda: MessagePage.from_api(payload, endpoint=MSG_EP)).field == "total"


def test_message_unknown_type_and_role_pass_through() -> None:
    """Message type and role are free strings; unknown values pass unchanged."""
    msg = Message.from_api(
        message_payload(type="browser_session_created", role="duvo", text_content=None),
        endpoint=MSG_EP,
    )
    assert (msg.type, msg.role, msg.text_content) == ("browser_session_created", "duvo", None)


def test_message_keeps_unknown_fields_in_extra() -> None:
    """Extra message fields are kept in Message.extra and not in to_dict()."""
    msg = Message.from_api(message_payload(attachments=[{"name": "a.csv"}]), endpoint=MSG_EP)
    assert msg.extra == {"attachments": [{"name": "a.csv"}]}
    assert "attachments" not in msg.to_dict()


def test_tool_call_and_tool_result_decode() -> None:
    """tool_call keeps its arguments object; tool_result keeps any JSON result and the error."""
    call = Message.from_api(
        message_payload(
            type="tool_call",
            tool_call={"id": "t1", "name": "read_file", "arguments": {"path": "a.csv", "n": [1]}},
        ),
        endpoint=MSG_EP,
    )
    assert call.tool_call is not None
    assert call.tool_call.to_dict() == {
        "id": "t1",
        "name": "read_file",
        "arguments": {"path": "a.csv", "n": [1]},
    }
    result = Message.from_api(
        message_payload(
            type="tool_result", role="tool", tool_result={"tool_call_id": "t1", "result": [1, 2]}
        ),
        endpoint=MSG_EP,
    )
    assert result.tool_result is not None
    assert (result.tool_result.result, result.tool_result.error) == ([1, 2], None)
    failed = Message.from_api(
        message_payload(tool_result={"tool_call_id": "t1", "error": "boom"}), endpoint=MSG_EP
    )
    assert failed.tool_result is not None
    assert failed.tool_result.error == "boom"


def test_tool_call_without_arguments_is_fine() -> None:
    """tool_call.arguments is optional (absent or null)."""
    for call in ({"id": "t1", "name": "n"}, {"id": "t1", "name": "n", "arguments": None}):
        msg = Message.from_api(message_payload(tool_call=call), endpoint=MSG_EP)
        assert msg.tool_call is not None
        assert msg.tool_call.arguments is None


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"tool_call": {"name": "n"}}, "messages[0].tool_call.id"),
        (
            {"tool_call": {"id": "t", "name": "n", "arguments": [1]}},
            "messages[0].tool_call.arguments",
        ),
        ({"tool_call": None}, "messages[0].tool_call"),
        ({"tool_call": "read_file"}, "messages[0].tool_call"),
        ({"tool_result": {"result": 1}}, "messages[0].tool_result.tool_call_id"),
        ({"tool_result": {"tool_call_id": "t", "error": 5}}, "messages[0].tool_result.error"),
        ({"text_content": 5}, "messages[0].text_content"),
        ({"timestamp": None}, "messages[0].timestamp"),
    ],
)
def test_tool_fields_errors_name_the_nested_path(overrides: dict[str, Any], path: str) -> None:
    """Bad tool_call / tool_result / text fields name the nested path."""
    payload = page_payload([message_payload(**overrides)])
    exc = malformed(lambda: MessagePage.from_api(payload, endpoint=MSG_EP))
    assert exc.field == path


def test_message_that_is_not_an_object_names_its_index() -> None:
    """A message that is a string is reported at messages[i]."""
    payload = page_payload([message_payload(0), "oops"])
    exc = malformed(lambda: MessagePage.from_api(payload, endpoint=MSG_EP))
    assert exc.field == "messages[1]"
    assert "messages[1] is a string, expected an object" in str(exc)


# -- respond, stop, teams, list runs -------------------------------------------------------------


def record_payload() -> dict[str, Any]:
    return {
        "human_request": {
            "id": "c0000000-0000-4000-8000-000000000001",
            "run_id": RUN_ID,
            "title": "Pay?",
            "description": None,
            "response": "approved",
            "responded_at": "2025-11-01T10:01:00.000Z",
            "created_at": "2025-11-01T10:00:00.000Z",
        }
    }


def test_human_request_record_decodes() -> None:
    """The respond answer decodes to a HumanRequestRecord."""
    rec = HumanRequestRecord.from_api(record_payload(), endpoint="POST respond")
    assert (rec.run_id, rec.response, rec.description) == (RUN_ID, "approved", None)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "human_request"),
        ({"human_request": None}, "human_request"),
        ({"human_request": []}, "human_request"),
    ],
)
def test_human_request_record_requires_the_object(body: Any, path: str) -> None:
    """`human_request` must be present and an object."""
    exc = malformed(lambda: HumanRequestRecord.from_api(body, endpoint="POST respond"))
    assert exc.field == path


def test_human_request_record_missing_nullable_field() -> None:
    """Required-but-nullable fields of the record must still be present."""
    body = record_payload()
    del body["human_request"]["responded_at"]
    exc = malformed(lambda: HumanRequestRecord.from_api(body, endpoint="POST respond"))
    assert exc.field == "human_request.responded_at"


def test_human_response_is_an_approval_or_answers() -> None:
    """HumanResponse serialises an approval or answers, and refuses both or neither."""
    assert HumanResponse(approved=True).to_api() == {"approved": True}
    assert HumanResponse(approved=False).to_api() == {"approved": False}
    assert HumanResponse(answers={"Which?": "EU, US"}).to_api() == {"answers": {"Which?": "EU, US"}}
    assert HumanResponse(answers={}).to_api() == {"answers": {}}
    with pytest.raises(ValueError, match="either an approval or answers"):
        HumanResponse()
    with pytest.raises(ValueError, match="either an approval or answers"):
        HumanResponse(approved=True, answers={"q": "a"})


def test_stop_result() -> None:
    """stop: success is required and boolean, message optional."""
    assert StopResult.from_api({"success": True}, endpoint="x") == StopResult(
        success=True, message=None
    )
    assert (
        StopResult.from_api({"success": False, "message": "done"}, endpoint="x").message == "done"
    )
    assert malformed(lambda: StopResult.from_api({}, endpoint="x")).field == "success"
    assert malformed(lambda: StopResult.from_api({"success": None}, endpoint="x")).field == (
        "success"
    )
    assert malformed(lambda: StopResult.from_api({"success": "true"}, endpoint="x")).field == (
        "success"
    )


def test_team_decodes_and_names_its_index() -> None:
    """A team decodes; a bad one names teams[i]."""
    team = Team.from_api(
        {"id": "t", "name": "Ops", "organization_id": None},
        endpoint="GET /v2/teams",
        where="teams[0]",
    )
    assert team == Team(id="t", name="Ops", organization_id=None)
    exc = malformed(
        lambda: Team.from_api({"id": "t", "name": 3}, endpoint="GET /v2/teams", where="teams[1]")
    )
    assert exc.field == "teams[1].name"


def test_run_list_decodes_and_tolerates_new_statuses() -> None:
    """List-runs items decode; an unknown status and a fractional run_number pass."""
    runs = RunList.from_api(
        {
            "data": [summary_payload(), summary_payload(status="archived", run_number=7.5)],
            "total": 2,
        },
        endpoint="GET /v2/teams/{teamId}/runs",
    )
    assert runs.total == 2
    assert [r.status for r in runs.data] == ["pending", "archived"]
    assert runs.data[1].run_number == 7.5
    assert runs.data[0].submitted_prompt_count == 1


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"status": None}, "data[1].status"),
        ({"user_id": 5}, "data[1].user_id"),
        ({"run_number": "7"}, "data[1].run_number"),
        ({"submitted_prompt_count": 1.5}, "data[1].submitted_prompt_count"),
        ({"run_number": None}, "data[1].run_number"),
        ({"submitted_prompt_count": None}, "data[1].submitted_prompt_count"),
    ],
)
def test_run_list_errors_name_the_item(overrides: dict[str, Any], path: str) -> None:
    """A bad list-runs item names data[i].<field>."""
    body = {"data": [summary_payload(), summary_payload(**overrides)], "total": 2}
    exc = malformed(lambda: RunList.from_api(body, endpoint="GET /v2/teams/{teamId}/runs"))
    assert exc.field == path


def test_run_list_missing_required_nullable_field() -> None:
    """Required-but-nullable list-runs fields must be present."""
    item = summary_payload()
    del item["case_queue_name"]
    exc = malformed(lambda: RunList.from_api({"data": [item], "total": 1}, endpoint="e"))
    assert exc.field == "data[0].case_queue_name"


def test_decoding_does_not_mutate_the_payload() -> None:
    """from_api reads the payload without changing it."""
    body = {"run": run_payload(extra_field=1), "pending_human_request": question_request()}
    before = copy.deepcopy(body)
    RunSnapshot.from_api(body, endpoint=EP)
    assert body == before


# -- RateLimit.from_headers ----------------------------------------------------------------------

NOW = 1_764_000_000.0


def test_rate_limit_headers_parsed() -> None:
    """x-ratelimit-* headers give limit, remaining and an absolute reset time."""
    rate = RateLimit.from_headers(
        httpx.Headers(
            {
                "X-RateLimit-Limit": "300",
                "X-RateLimit-Remaining": "17",
                "X-RateLimit-Reset": "1764000042",
            }
        ),
        now=NOW,
    )
    assert rate == RateLimit(limit=300, remaining=17, reset=1_764_000_042.0, retry_after=None)


def test_rate_limit_reset_delta_is_made_absolute() -> None:
    """A small x-ratelimit-reset is read as delta seconds from now."""
    rate = RateLimit.from_headers({"x-ratelimit-reset": "42"}, now=NOW)
    assert rate.reset == NOW + 42


def test_rate_limit_absent_headers_are_none() -> None:
    """No headers: every field None."""
    assert RateLimit.from_headers({}, now=NOW) == RateLimit()


def test_retry_after_seconds() -> None:
    """retry-after in seconds, fractional allowed, negative clamped to zero."""
    assert RateLimit.from_headers({"retry-after": "7"}, now=NOW).retry_after == 7.0
    assert RateLimit.from_headers({"retry-after": " 1.5 "}, now=NOW).retry_after == 1.5
    assert RateLimit.from_headers({"retry-after": "-3"}, now=NOW).retry_after == 0.0


def test_retry_after_http_date() -> None:
    """retry-after as an HTTP date becomes seconds from now; a past date is zero."""
    # 1764000000 is Mon, 24 Nov 2025 16:00:00 GMT.
    future = RateLimit.from_headers({"retry-after": "Mon, 24 Nov 2025 16:00:30 GMT"}, now=NOW)
    assert future.retry_after == pytest.approx(30.0)
    past = RateLimit.from_headers({"retry-after": "Mon, 24 Nov 2025 15:00:00 GMT"}, now=NOW)
    assert past.retry_after == 0.0


def test_retry_after_http_date_without_zone_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A '-0000' HTTP date is UTC whatever the host's time zone."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        rate = RateLimit.from_headers({"retry-after": "Mon, 24 Nov 2025 16:00:30 -0000"}, now=NOW)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert rate.retry_after == pytest.approx(30.0)


@pytest.mark.parametrize("junk", ["", "abc", "inf", "-inf", "nan", "1e400", "soon", "0x10", "5 s"])
def test_rate_limit_junk_values_are_ignored(junk: str) -> None:
    """Unparseable or non-finite header values become None; they never raise."""
    rate = RateLimit.from_headers(
        {
            "x-ratelimit-limit": junk,
            "x-ratelimit-remaining": junk,
            "x-ratelimit-reset": junk,
            "retry-after": junk,
        },
        now=NOW,
    )
    assert rate == RateLimit()


def test_rate_limit_negative_counts_are_ignored() -> None:
    """Negative limit, remaining and reset are ignored."""
    rate = RateLimit.from_headers(
        {"x-ratelimit-limit": "-1", "x-ratelimit-remaining": "-5", "x-ratelimit-reset": "-2"},
        now=NOW,
    )
    assert rate == RateLimit()


def test_rate_limit_fractional_count_truncates() -> None:
    """A fractional remaining count reads as its integer part."""
    assert RateLimit.from_headers({"x-ratelimit-remaining": "4.0"}, now=NOW).remaining == 4


# -- parse_time / format_time --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-24T16:00:00Z", NOW),
        ("2025-11-24T16:00:00.250Z", NOW + 0.25),
        ("2025-11-24T17:00:00+01:00", NOW),
        ("2025-11-24T16:00:00", NOW),
        ("2025-11-24T16:00:00.123456+00:00", NOW + 0.123456),
    ],
)
def test_parse_time_reads_iso_8601(text: str, expected: float) -> None:
    """ISO 8601 with Z, an offset, fractions or no zone (read as UTC) becomes unix seconds."""
    assert parse_time(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [None, "", "yesterday", "2025-13-40T00:00:00Z"])
def test_parse_time_junk_is_none(text: str | None) -> None:
    """None, empty and non-timestamps parse to None rather than raising."""
    assert parse_time(text) is None


def test_format_time_is_rfc3339_utc_milliseconds_and_round_trips() -> None:
    """format_time writes RFC 3339 UTC with milliseconds, and parse_time reads it back."""
    assert format_time(NOW) == "2025-11-24T16:00:00.000Z"
    assert format_time(NOW + 0.25) == "2025-11-24T16:00:00.250Z"
    assert parse_time(format_time(NOW + 1.5)) == NOW + 1.5
