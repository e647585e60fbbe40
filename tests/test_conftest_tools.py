"""tests/conftest.py's `needs` marker, in a pytest of its own: a missing tool is named in the header and skips its
tests with the way to get it, except in CI (CI=true), where those tests fail: CI never passes by skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# A conftest that loads ours and names one more tool, one that no machine has.
CONFTEST = """
from tests.conftest import TOOLS, Tool

pytest_plugins = ["tests.conftest"]
TOOLS["no-such-tool-xyz"] = Tool("apt-get install no-such-tool-xyz (a tool no machine has)")
"""
TESTS = """
import pytest

from tests.conftest import require


@pytest.mark.needs("no-such-tool-xyz")
def test_that_needs_the_missing_tool():
    raise AssertionError("ran without its tool")


@pytest.mark.needs("python3")
def test_that_needs_a_present_tool():
    pass


def test_that_needs_nothing():
    pass


def test_that_finds_out_it_needs_the_missing_tool():
    require("no-such-tool-xyz")
    raise AssertionError("ran on without its tool")
"""
REASON = "needs no-such-tool-xyz: apt-get install no-such-tool-xyz (a tool no machine has)"
HEADER = "missing tool: no-such-tool-xyz: the tests that need it"


def pytest_in(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_tools.py").write_text(TESTS)
    environ = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith(("PYTEST", "COV_"))}
    environ["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        environ["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA", "test_tools.py"]
    return subprocess.run(command, cwd=folder, env=environ, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.system
def test_outside_ci_a_missing_tool_skips_its_tests_with_the_way_to_get_it(tmp_path: Path) -> None:
    result = pytest_in(tmp_path, ci=None)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{HEADER} are skipped; to get it: apt-get install no-such-tool-xyz" in output
    assert output.count(HEADER) == 1, output
    assert f"SKIPPED [1] test_tools.py:7: {REASON}" in output, output
    assert f"SKIPPED [1] test_tools.py:22: {REASON}" in output, output
    assert "2 passed, 2 skipped" in output, output


@pytest.mark.parametrize("ci", ["true", "1"])
@pytest.mark.system
def test_in_ci_a_missing_tool_fails_its_tests(tmp_path: Path, ci: str) -> None:
    result = pytest_in(tmp_path, ci=ci)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{HEADER} fail (CI=true)" in output, output
    assert "ran without its tool" not in output, output
    assert "ran on without its tool" not in output, output
    assert f"ERROR test_tools.py::test_that_needs_the_missing_tool - Failed: {REASON} (CI=true:" in output, output
    assert f"FAILED test_tools.py::test_that_finds_out_it_needs_the_missing_tool - Failed: {REASON}" in output, output
    assert "SKIPPED" not in output, output
    assert "1 failed, 2 passed, 1 error" in output, output
