"""Dependencies point one way: cli -> web | worker (by import string only) -> core -> core.gan.

Two checks. The static one reads every import statement in the tree, those inside functions included (a
lazy `from web import create_app` in a function is still an edge of the graph), and fails on any import a
rule forbids. The dynamic ones import the entry points in a fresh interpreter and look at what got loaded,
which also catches an edge hidden behind a module that is allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_LIBS = ("flask", "celery", "kombu", "sqlalchemy", "alembic", "boto3", "botocore", "redis")
TORCH = ("torch", "torchvision", "torchmetrics", "torch_fidelity")

# (what the rule covers, which modules it applies to, what they may not import)
RULES = [
    ("core never imports the applications", lambda m: m.startswith("core."), ("web", "worker", "cli")),
    ("core.gan imports no platform library", lambda m: m.startswith("core.gan."),
     PLATFORM_LIBS + ("core.db", "core.jobs", "core.storage", "core.queue", "core.reaper", "core.auth")),
    ("core's platform modules never import torch",
     lambda m: m.startswith("core.") and not m.startswith("core.gan."), TORCH),
    ("web never imports torch or the worker", lambda m: m.startswith("web."), TORCH + ("worker", "cli")),
    ("the worker never imports the API or the command line", lambda m: m.startswith("worker."), ("web", "cli")),
    ("the command line starts servers by import string", lambda m: m.startswith("cli."), ("web", "worker")),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an import statement in `path` names, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(filter(None, [*anchor, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden_edges(root: Path = ROOT) -> list[str]:
    edges = []
    for package in ("core", "web", "worker", "cli"):
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root) + "."  # "core." for core/__init__.py, "core.db." for core/db.py
            for rule, applies, banned in RULES:
                if not applies(name):
                    continue
                for imported in sorted(imported_modules(path, root)):
                    if any(imported == b or imported.startswith(b + ".") for b in banned):
                        edges.append(f"{path.relative_to(root)} imports {imported} ({rule})")
    return edges


def test_no_module_imports_against_the_direction_of_the_layers():
    assert forbidden_edges() == []


def test_the_static_check_sees_lazy_and_relative_imports(tmp_path):
    """The rule is live: a planted lazy import of web in core and a relative one are both reported."""
    (tmp_path / "core" / "gan").mkdir(parents=True)
    for package in ("web", "worker", "cli"):
        (tmp_path / package).mkdir()
    (tmp_path / "core" / "bad.py").write_text("def f():\n    from web import create_app\n")
    (tmp_path / "core" / "gan" / "bad.py").write_text("from ..db import Job\nimport torch\n")
    (tmp_path / "web" / "bad.py").write_text("import torch.nn\n")
    edges = forbidden_edges(tmp_path)
    assert any("core/bad.py imports web" in e for e in edges), edges
    assert any("core/gan/bad.py imports core.db" in e for e in edges), edges
    assert any("web/bad.py imports torch.nn" in e for e in edges), edges
    assert not any("core/gan/bad.py imports torch" in e for e in edges)  # the engine may use torch


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT)
    return set(result.stdout.split())


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_engine_imports_no_platform_library():
    loaded = _top_level(_modules_after_import("import core.gan.train, core.gan.sample, core.gan.metrics, "
                                              "cli.main"))
    assert "torch" in loaded  # the check is live: the engine really was imported
    assert not loaded & set(PLATFORM_LIBS), f"core.gan pulled in {sorted(loaded & set(PLATFORM_LIBS))}"


def test_settings_import_without_torch():
    assert "torch" not in _top_level(_modules_after_import("import core.settings"))


def test_web_imports_without_torch():
    loaded = _modules_after_import("import web; web.create_app")
    assert "torch" not in _top_level(loaded) and "worker" not in _top_level(loaded)


def test_schema_and_jobs_modules_import_without_torch_flask_or_celery():
    # The API process imports these; it must start without the training stack.
    loaded = _top_level(_modules_after_import("import core.db, core.jobs"))
    assert not loaded & {"torch", "flask", "celery"}


@pytest.mark.parametrize("entry", ["cli.main", "cli.servers", "cli.client"])
def test_the_command_line_starts_without_the_servers_or_torch(entry):
    """Every `dcgan` command pays for what cli.main imports: no servers, no torch, no request models."""
    loaded = _top_level(_modules_after_import(f"import {entry}"))
    assert not loaded & {"torch", "web", "worker", "flask", "celery", "pydantic", "tenacity"}, sorted(loaded)
