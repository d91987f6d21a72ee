"""The import contracts of pyproject.toml ([tool.importlinter]) hold: an import that runs against the flow
connectors → entities → rules → escalations (audit beside all; orchestration, then pages and API on top)
fails the suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from importlinter import cli

ROOT = Path(__file__).resolve().parents[3]


def test_no_import_runs_against_the_flow(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 broken" in out and "3 kept" in out


def test_the_contracts_fail_on_an_import_against_the_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same contracts over a copy where entities import the rules: broken (the check can fail)."""
    package = tmp_path / "apps"
    for name in (
        "rules",
        "entities",
        "escalations",
        "connectors",
        "orchestration",
        "api",
        "dashboard",
        "audit",
        "quality",
        "learning",
    ):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "entities" / "resolution.py").write_text("from apps.rules import triggers\n")
    (package / "rules" / "triggers.py").write_text("")
    for name in ("engine", "evaluation", "authoring"):
        (package / "rules" / name).mkdir()
        (package / "rules" / name / "__init__.py").write_text("")
    (package / "rules" / "models.py").write_text("")
    for name in ("views", "api", "map", "svg", "tables", "pipeline", "tasks"):
        (package / "orchestration" / f"{name}.py").write_text("")
    config = tmp_path / "pyproject.toml"
    # The copy has no tests or admin modules: their ignores match nothing there, which is no error.
    text = (ROOT / "pyproject.toml").read_text()
    config.write_text(text.replace('id = "flow"', 'id = "flow"\nunmatched_ignore_imports_alerting = "none"'))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.syspath_prepend(str(tmp_path))
        for module in [m for m in list(sys.modules) if m == "apps" or m.startswith("apps.")]:
            patch.delitem(sys.modules, module)
        code = cli.lint_imports(config_filename=str(config), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 1, out
    assert "apps.entities is not allowed to import apps.rules" in out
