"""Runs schemathesis against a served app and prints what it found as JSON. Started by tests/test_fuzz.py in a
process of its own: hypothesis's caches then never share a process (and its garbage collector) with the rest of
the suite, where they once stalled a later test for minutes.

    python -m tests.fuzz_runner <base url> <bearer token> <caller id> <superuser: 0|1>

Every check schemathesis has runs, in every phase: the schema's examples, its edge values and every undocumented
method (coverage), drawn valid and invalid cases (fuzzing), and chains of calls along the links schemathesis infers
from the document (stateful: POST /items/ -> GET/PUT/DELETE /items/{id}, GET /users/ -> /users/{user_id}, ...).
(object_level_authorization runs too, but it compares two identities' reads of each other's objects and has only
one here: ownership is tested over HTTP in tests/test_items.py and tests/test_users.py.)
A check's report is a problem unless one of EXCUSES below, each narrow and with its reason, says the API answered
as its contract (the template's behaviour) requires."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema_rs
import schemathesis
from schemathesis.checks import CHECKS
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.transport import Response
from schemathesis.engine import Status, events
from schemathesis.engine.run import PhaseName
from schemathesis.openapi.checks import RejectedPositiveData

# The longest any answer may take: argon2 hashing on a busy 2-core CI runner takes well under a second; this catches
# a hang or a runaway query, not a slow machine.
MAX_RESPONSE_SECONDS = 10.0


def fuzz_config(token: str) -> schemathesis.Config:
    """Derandomized and bounded: up to `max-examples` drawn cases per operation (half of them invalid), the schema's
    edge values of every parameter and field (~5 per operation), and 25 stateful scenarios of up to 6 calls."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20261126,
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 1,
            "generation": {"max-examples": 4, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"max-steps": 6, "generation": {"max-examples": 25}}},
            "checks": {"enabled": True, "max_response_time": MAX_RESPONSE_SECONDS},
        }
    )


# ---------------------------------------------------------------- what a check may report that is no defect

Excuse = Callable[[dict[str, Any], Failure, schemathesis.Case, Response], bool]


def answer(response: Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def validation_messages(response: Response) -> list[str]:
    """The `msg` of each error of a 422 `{"detail": [...]}`, or [] for any other answer."""
    body = answer(response)
    if response.status_code != 422 or not isinstance(body, dict) or not isinstance(body.get("detail"), list):
        return []
    return [str(error.get("msg")) for error in body["detail"] if isinstance(error, dict)]


def documented_refusal(document: dict[str, Any], failure: Failure, case: schemathesis.Case, response: Response) -> bool:
    """positive_data_acceptance: a 400 whose `detail` the document lists for that operation. Valid data can still
    break a rule the schema cannot express, and the contract answers these 400s (not 409, not 422): an address that
    is already registered (signup, create user), a current password that is not the caller's, a reset token that
    is not one we issued (the fuzzer cannot know one)."""
    body = answer(response)
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400 or not isinstance(body, dict):
        return False
    operation = document["paths"][case.operation.path][case.operation.method.lower()]
    documented = operation["responses"].get("400", {}).get("description", "")
    return body.get("detail") in documented.split(" / ")


def undeliverable_address(document: dict[str, Any], failure: Failure, case: schemathesis.Case, r: Response) -> bool:
    """positive_data_acceptance: a 422 for an address email-validator refuses. `format: email` promises a valid
    address, which the API decides as the template's pydantic `EmailStr` does (email-validator); schemathesis only
    approximates it, e.g. a 255-character address within the documented maxLength (255, the template's) that
    exceeds the 254 octets an address may have (RFC 5321)."""
    messages = validation_messages(r)
    return (
        isinstance(failure, RejectedPositiveData)
        and bool(messages)
        and all(message.startswith("value is not a valid email address") for message in messages)
    )


def nul_character(document: dict[str, Any], failure: Failure, case: schemathesis.Case, response: Response) -> bool:
    """positive_data_acceptance: a 422 for a NUL character the request does carry. A NUL is refused before it can
    reach PostgreSQL, whose text cannot hold it (the template answers 500); JSON Schema cannot say "no NUL" short
    of a pattern on every string of the document."""
    messages = validation_messages(response)
    sent = json.dumps([case.body, case.query, case.path_parameters], default=str)
    return (
        isinstance(failure, RejectedPositiveData)
        and "\\u0000" in sent
        and bool(messages)
        and all("NUL character" in message for message in messages)
    )


def refused_null(document: dict[str, Any], failure: Failure, case: schemathesis.Case, response: Response) -> bool:
    """positive_data_acceptance: a 422 whose every error is for a body field the case sent as null. The document says
    `X | null` where the template's does (pydantic's `X | None = None` of UserUpdate's email, is_active, is_superuser,
    password, UserUpdateMe's email, ItemUpdate's title), so that clients generated from either are typed alike; the
    template answers those nulls 500 (a NOT NULL column, a None hashed), the contract 422 [better]. Other errors of
    the same answer may only be those `undeliverable_address` excuses."""
    body = answer(response)
    errors = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(failure, RejectedPositiveData) or not isinstance(case.body, dict) or not isinstance(errors, list):
        return False

    def null_sent(error: Any) -> bool:
        loc = error.get("loc") if isinstance(error, dict) else None
        return isinstance(loc, list) and len(loc) == 2 and loc[0] == "body" and case.body.get(loc[1], 0) is None

    def undeliverable(error: Any) -> bool:
        return isinstance(error, dict) and str(error.get("msg")).startswith("value is not a valid email address")

    return any(null_sent(error) for error in errors) and all(null_sent(e) or undeliverable(e) for e in errors)


# What pydantic's lax mode (the template's) and msgspec's both read as a boolean.
LAX_BOOLEANS: dict[object, bool] = {0: False, 1: True, "0": False, "1": True, "false": False, "true": True}


def as_lax_boolean(value: object) -> object:
    """The boolean a lax spelling stands for; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return value
    return LAX_BOOLEANS.get(value.lower() if isinstance(value, str) else value, value)


def declares_boolean(schema: dict[str, Any]) -> bool:
    members = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
    return any(member.get("type") == "boolean" for member in members)


def lax_boolean(document: dict[str, Any], failure: Failure, case: schemathesis.Case, response: Response) -> bool:
    """negative_data_rejection: a body accepted whose only invalid values are booleans spelt 0/1/"true"/"false".
    The template (pydantic, lax mode) accepts them for `is_active`, `is_superuser`, `is_verified`, so clients may
    send them: the drop-in accepts what the template accepted."""
    if not isinstance(failure, AcceptedNegativeData) or not isinstance(case.body, dict):
        return False
    operation = document["paths"][case.operation.path][case.operation.method.lower()]
    reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    properties = document["components"]["schemas"][reference.rsplit("/", 1)[1]].get("properties", {})
    lax = {
        name
        for name, value in case.body.items()
        if declares_boolean(properties.get(name, {})) and as_lax_boolean(value) is not value
    }
    read = {name: as_lax_boolean(value) if name in lax else value for name, value in case.body.items()}
    body_schema = {"$ref": reference, "components": document["components"]}
    return bool(lax) and jsonschema_rs.validator_for(body_schema).is_valid(read)


def impossible_date(document: dict[str, Any], failure: Failure, case: schemathesis.Case, r: Response) -> bool:
    """positive_data_acceptance: a 422 for a date its pattern admits but the calendar has not (`0000-00-00`,
    `8252-03-56`). The audit filters' pattern says which text is a date and time; which of those days exist, a pattern
    cannot say."""
    body = answer(r)
    errors = body.get("detail") if r.status_code == 422 and isinstance(body, dict) else None
    return (
        isinstance(failure, RejectedPositiveData)
        and isinstance(errors, list)
        and bool(errors)
        and all(
            isinstance(e, dict) and e.get("type") == "datetime_parsing" and e.get("loc", [None])[0] == "query"
            for e in errors
        )
    )


EXCUSES: list[Excuse] = [
    documented_refusal,
    undeliverable_address,
    nul_character,
    refused_null,
    lax_boolean,
    impossible_date,
]


# ---------------------------------------------------------------- the run


def links(document: dict[str, Any]) -> list[str]:
    """The links of schemathesis's copy of the document (those it inferred, as the served one declares none), as
    `POST /api/v1/items/ -> GET /api/v1/items/{id}`."""
    found = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for response in operation.get("responses", {}).values() if isinstance(operation, dict) else []:
                for link in response.get("links", {}).values():
                    target_path, target_method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                    target = target_path.replace("~1", "/").replace("~0", "~")
                    found.add(f"{method.upper()} {path} -> {target_method.upper()} {target}")
    return sorted(found)


def fuzz(url: str, token: str, caller_id: str, superuser: bool) -> dict[str, Any]:
    """Run schemathesis against the target as `caller`: the number of requests (all, and of the stateful phase),
    the links it followed, a line per problem found, and how many reports each excuse dismissed."""
    schema: Any = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", config=fuzz_config(token))
    # The served document as it is: schemathesis rewrites its own copy as it goes (bundled references, links).
    document: dict[str, Any] = httpx.get(f"{url}/api/v1/openapi.json").json()
    if not superuser:
        # A normal user deleting themselves would leave the rest of the run nothing but `User not found`.
        schema = schema.exclude(method="DELETE", path="/api/v1/users/me")
    # Nor may anyone end their own current session (its id is in GET /users/me/sessions, which the stateful phase
    # follows): the run would go on signed out (tests/test_sessions.py covers the route).
    schema = schema.exclude(method="DELETE", path="/api/v1/users/me/sessions/{session_id}")
    excused: Counter[str] = Counter()

    @schema.hook
    def filter_case(context: Any, case: schemathesis.Case) -> bool:
        """Nor may a superuser rewrite their own account (an id the fuzzer picks up from earlier responses), or end
        their own sessions: a deactivation, a new password or the end of the caller's session would lock the rest
        of the run out."""
        if str((case.path_parameters or {}).get("user_id")) != caller_id:
            return True
        return not (case.method == "PATCH" or (case.method == "DELETE" and "/sessions" in case.path))

    @schema.hook
    def filter_failure(context: Any, failure: Failure, case: schemathesis.Case, response: Response) -> bool:
        for excuse in EXCUSES:
            if excuse(document, failure, case, response):
                excused[excuse.__name__] += 1
                return False
        return True

    requests, stateful_requests, problems = 0, 0, []
    checked: Counter[str] = Counter()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests += len(event.recorder.interactions)
            if event.phase == PhaseName.STATEFUL_TESTING:
                stateful_requests += len(event.recorder.interactions)
            for case_id, nodes in event.recorder.checks.items():
                checked.update(node.name for node in nodes)
                interaction = event.recorder.interactions.get(case_id)
                response = interaction.response if interaction is not None else None
                received = f"{response.status_code} {response.content[:300]!r}" if response is not None else "no answer"
                problems.extend(
                    f"{event.recorder.label}: {node.name}: {node.failure_info.failure.title}: "
                    f"{node.failure_info.failure.message}\n    {node.failure_info.code_sample}\n    -> {received}"
                    for node in nodes
                    if node.status == Status.FAILURE and node.failure_info is not None
                )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"{getattr(event, 'label', 'engine')}: {event.info.format()}")
    return {
        "requests": requests,
        "stateful_requests": stateful_requests,
        "links": links(schema.raw_schema),
        "problems": sorted(set(problems)),
        "excused": dict(excused),
        "checked": dict(checked),
        "available_checks": CHECKS.get_all_names(),
    }


if __name__ == "__main__":
    url, token, caller_id, superuser = sys.argv[1:5]
    print(json.dumps(fuzz(url, token, caller_id, superuser == "1")))
