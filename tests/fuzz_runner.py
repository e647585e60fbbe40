"""Runs schemathesis against a served app and prints what it found as JSON. Started by tests/test_fuzz.py in a
process of its own: hypothesis's caches then never share a process (and its garbage collector) with the rest of
the suite, where they once stalled a later test for minutes.

    python -m tests.fuzz_runner <base url> <bearer token> <caller id> <superuser: 0|1>"""

from __future__ import annotations

import json
import sys
from typing import Any

import schemathesis
from schemathesis.engine import Status, events

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance"]


def fuzz_config(token: str, boundaries: bool) -> schemathesis.Config:
    """Derandomized and bounded: up to `max-examples` drawn cases per operation (half of them invalid), and with
    `boundaries` the schema's edge values of every parameter and field (the coverage phase, ~5 per operation)."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20261126,
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 1,
            "generation": {"max-examples": 4, "deterministic": True, "database": "none"},
            "phases": {
                # Chains of calls wander off into state (and are not deterministic): the unit here is one request.
                "stateful": {"enabled": False},
                # Valid edge values only: invalid ones are the fuzzing phase's, every other method on every path
                # is the router's (405).
                "coverage": {"enabled": boundaries, "unexpected-methods": [], "generation": {"mode": "positive"}},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


def fuzz(url: str, token: str, caller_id: str, superuser: bool) -> tuple[int, list[str]]:
    """Run schemathesis against the target as `caller`: the number of requests, and a line per problem found."""
    document = f"{url}/api/v1/openapi.json"
    # The edge values (the costly phase) as the superuser only, who gets past every guard to the handlers.
    config = fuzz_config(token, boundaries=superuser)
    schema: Any = schemathesis.openapi.from_url(document, config=config)
    if not superuser:
        # A normal user deleting themselves would leave the rest of the run nothing but `User not found`.
        schema = schema.exclude(method="DELETE", path="/api/v1/users/me")

    @schema.hook
    def filter_case(context: Any, case: schemathesis.Case) -> bool:
        """Nor may a superuser rewrite their own account (an id the fuzzer picks up from earlier responses): a
        deactivation or new password would lock the rest of the run out."""
        return not (case.method == "PATCH" and str((case.path_parameters or {}).get("user_id")) == caller_id)

    requests, problems = 0, []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests += len(event.recorder.interactions)
            for nodes in event.recorder.checks.values():
                problems.extend(
                    f"{event.recorder.label}: {node.failure_info.failure.title}: {node.failure_info.failure.message}"
                    f"\n    {node.failure_info.code_sample}"
                    for node in nodes
                    if node.status == Status.FAILURE and node.failure_info is not None
                )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"{getattr(event, 'label', 'engine')}: {event.info.format()}")
    return requests, sorted(set(problems))


if __name__ == "__main__":
    url, token, caller_id, superuser = sys.argv[1:5]
    requests, problems = fuzz(url, token, caller_id, superuser == "1")
    print(json.dumps({"requests": requests, "problems": problems}))
