"""The house rules: the import contracts in .importlinter hold, and no module
grows past what one reader can hold in mind (docs/architecture.md)."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("deployments", "apps_registry", "norn_project")
MAX_MODULE_LINES = 450
# Models stay one file until it truly hurts (STYLE.md); migrations are generated.
SIZE_EXEMPT = ("models.py",)


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache", str(REPO_ROOT / ".importlinter")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_no_source_module_is_over_the_size_limit():
    too_long = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path.name in SIZE_EXEMPT or "migrations" in path.parts:
                continue
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES:
                too_long[str(path.relative_to(REPO_ROOT))] = lines
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
