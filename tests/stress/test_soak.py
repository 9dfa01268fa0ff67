"""The 60-second soak (benchmarks/soak.py) in CI: bounded growth of RSS, descriptors and tasks.

The bounds (benchmarks.soak.Bounds): from the first third to the last third of the run, after a
10 s warm-up, RSS may grow at most 25 MB, open file descriptors at most 25, asyncio tasks at most
60 — while 60 subscribers (over every served transport) receive 50 publications/s and 10% of them
leave and resume every 5 s. Every subscriber must also get every publication, in order.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_60_second_soak_shows_no_growth_beyond_the_bounds_and_no_loss(tmp_path: Path):
    soak = load_soak()
    report = await soak.run(60, workdir=tmp_path)
    (tmp_path / "soak.md").write_text(soak.markdown(report))
    assert report.samples and report.published > 2500, soak.markdown(report)
    assert report.ok, soak.markdown(report)
