"""``prepare --check`` of a BIDS subject: :class:`BidsCheck`, run by run (:func:`.survey.survey_subject`)."""

from __future__ import annotations

from dataclasses import dataclass

from .survey import Finding, Survey

__all__ = ["BidsCheck"]


@dataclass(frozen=True)
class BidsCheck:
    """What the survey of one subject found (a :class:`~brain2image.sources.base.SourceCheck`).

    Attributes
    ----------
    subject : str
    rows : list of (what, status, detail)
        Every run, ROI and file checked, in order.
    findings : list of Finding
    """

    subject: str
    rows: list[tuple[str, str, str]]
    findings: list[Finding]

    @classmethod
    def from_survey(cls, survey: Survey) -> BidsCheck:
        """The check of a survey."""
        return cls(survey.subject, list(survey.rows), list(survey.findings))

    @property
    def ok(self) -> bool:
        """True when nothing is missing or inconsistent."""
        return not self.findings

    def problem_lines(self) -> list[str]:
        """One line per problem: ``<file>: <what is wrong; what to do>``."""
        return [finding.line() for finding in self.findings]

    def format_table(self) -> str:
        """A plain-text table (status, run, detail) and a summary line."""
        width = max([len(row[0]) for row in self.rows] + [3])
        lines = [f"sub-{self.subject}", f"{'status':<8} {'run':<{width}} detail"]
        lines += [f"{status:<8} {what:<{width}} {detail}" for what, status, detail in self.rows]
        n_runs = len({what for what, _, _ in self.rows if what.startswith("sub-")})
        lines.append(f"{n_runs} runs checked, " + ("all ok" if self.ok else f"{len(self.findings)} problem(s)"))
        return "\n".join(lines)
