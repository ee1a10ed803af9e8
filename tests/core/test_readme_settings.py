"""The README's configuration table names every setting (SPEC §4: configuration by environment)."""

from __future__ import annotations

import re
from pathlib import Path

from onboarding.core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_names_every_setting() -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in named)
    assert missing == [], f"README's configuration table lacks {missing}"
