"""What a user sees of the package itself: its version, licence and changelog."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import metadata, version
from pathlib import Path

from bridge import USER_AGENT, __version__

ROOT = Path(__file__).resolve().parent.parent


def test_version_option_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lead-bridge {__version__}"
    assert version("lead-bridge") == __version__  # pyproject reads it from bridge/__init__.py
    assert f"lead-bridge/{__version__}" == USER_AGENT


def test_license_file_is_the_apache_2_text_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub
    assert metadata("lead-bridge")["License-Expression"] == "Apache-2.0"


def test_changelog_has_an_entry_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog
    assert f"## {__version__} - " in changelog
