"""The DS2 pipeline in one call: rate -> embed -> curate -> select -> report [-> push].

Every stage writes its result into one output folder (`RunLayout`), so `ds2 report` and `ds2 push`
can work from a finished run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Where each stage of a run writes inside the output folder.

    >>> RunLayout(Path("out")).curated
    PosixPath('out/curated')
    """

    root: Path

    @property
    def rated(self) -> Path:
        return self.root / "rated"

    @property
    def embedded(self) -> Path:
        return self.root / "embedded"

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    @property
    def curation_report(self) -> Path:
        return self.root / "curation_report.json"

    @property
    def selected(self) -> Path:
        return self.root / "selected"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"
