from pathlib import Path

from tidings.settings_reference import render_reference

ROOT = Path(__file__).resolve().parents[1]


def test_settings_reference_matches_the_code():
    doc = (ROOT / "docs" / "reference" / "settings.md").read_text()
    assert doc == render_reference(), "run: python -m tidings.settings_reference > docs/reference/settings.md"
