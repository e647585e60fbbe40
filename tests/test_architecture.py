"""The layering the README describes, checked on the source: db/ and migrations/ stand alone, app/ has no cycles."""

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module a file imports, wherever the import statement is (a function body or an `if` block too):
    `from app import emails` names `app.emails` when that is a module, `app` otherwise."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            yield base
            for alias in node.names:
                candidate = ROOT.joinpath(*f"{base}.{alias.name}".split("."))
                if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                    yield f"{base}.{alias.name}"


def is_app(module: str) -> bool:
    return module == "app" or module.startswith("app.")


def test_db_and_migrations_never_import_app() -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for folder in ("db", "migrations")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in imported_modules(path)
        if is_app(module)
    }
    assert not offenders


def test_app_modules_import_each_other_without_cycles() -> None:
    graph = {
        module_name(path): {module for module in imported_modules(path) if is_app(module)}
        for path in sorted((ROOT / "app").rglob("*.py"))
    }
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None
