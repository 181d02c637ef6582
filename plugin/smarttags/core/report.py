"""The training report: per tag, whether the service is trained, with the numbers and advice.

Status rule (the seed's green / yellow):
    trained             (green)   at least ``min_images`` usable images and cross-validated
                                  average precision of at least 0.5
    partially trained   (yellow)  at least 5 usable images, but fewer than ``min_images`` or a lower
                                  average precision: add more visually similar images and train again
    not trained         (grey)    fewer than 5 usable images, or not in the taxonomy: no model for it

Every taxonomy tag has a row. A tag the run did not retrain but the active model had keeps that model's
head ("carried over", with the model it was trained in); ``retrained`` and ``carried_over`` list both.
Per tag, ``negatives`` counts the pictures it learned "not this tag" from, by kind (NEGATIVE_KINDS).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

TRAINED = "trained"
PARTIAL = "partially trained"
NOT_TRAINED = "not trained"
MIN_TO_LEARN = 5
MIN_AVERAGE_PRECISION = 0.5
COLOURS = {TRAINED: "C6EFCE", PARTIAL: "FFEB9C", NOT_TRAINED: "D9D9D9"}
# Kinds of negatives: pictures with no tag at all, a moderator's removal of the tag, pictures of a
# sibling tag (same parent), and pictures with other tags.
NEGATIVE_KINDS = ("untagged", "removed", "siblings", "other")


def status_for(images: int, average_precision: float | None, min_images: int) -> str:
    if images < MIN_TO_LEARN or average_precision is None:
        return NOT_TRAINED
    if images >= min_images and average_precision >= MIN_AVERAGE_PRECISION:
        return TRAINED
    return PARTIAL


@dataclass
class TagRow:
    tag: str
    title: str
    status: str
    images: int
    excluded_low_resolution: int = 0  # pictures under training.min_resolution left out (strict_resolution)
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    average_precision: float | None = None
    threshold: float | None = None
    advice: list[str] = field(default_factory=list)
    below_resolution: int = 0  # pictures under training.min_resolution (used unless strict_resolution)
    negatives: dict[str, int] = field(default_factory=dict)  # kind -> count
    carried_from: str | None = None  # the model whose head this tag keeps, when not retrained
    from_review: int = 0  # examples whose label for this tag came from the review queue

    @property
    def negative_total(self) -> int:
        return sum(self.negatives.values())


@dataclass
class TrainingReport:
    run_id: str
    model_version: str | None
    folders: list[str]
    created_at: str
    images_used: int
    images_embedded: int
    rows: list[TagRow]
    excluded_low_resolution: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retrained: list[str] = field(default_factory=list)
    carried_over: list[str] = field(default_factory=list)
    untagged_negatives: int = 0  # untagged pictures of the training folders, used as negatives

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingReport:
        rows = [TagRow(**row) for row in data.get("rows", [])]
        return cls(**{**data, "rows": rows})

    @property
    def from_review(self) -> int:
        """Examples (summed over tags) whose label came from the review queue."""
        return sum(row.from_review for row in self.rows)

    def counts(self) -> dict[str, int]:
        out = {TRAINED: 0, PARTIAL: 0, NOT_TRAINED: 0}
        for row in self.rows:
            out[row.status] += 1
        return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def as_table(report: TrainingReport) -> str:
    header = f"{'tag':32} {'status':18} {'images':>6} {'neg':>6} {'prec':>5} {'rec':>5} {'AP':>5} {'thr':>5}  advice"
    lines = [header, "-" * len(header)]
    for row in report.rows:
        lines.append(
            f"{row.tag[:32]:32} {row.status:18} {row.images:>6} {row.negative_total:>6} {_fmt(row.precision):>5} "
            f"{_fmt(row.recall):>5} {_fmt(row.average_precision):>5} {_fmt(row.threshold):>5}  "
            f"{'; '.join(row.advice)}"
        )
    counts = report.counts()
    lines.append(
        f"{counts[TRAINED]} trained, {counts[PARTIAL]} partially trained, {counts[NOT_TRAINED]} not trained; "
        f"{report.images_used} images used, {report.images_embedded} embedded in this run, "
        f"{report.from_review} label(s) from the review queue; "
        f"model {report.model_version or '(none)'}"
    )
    if report.model_version:
        lines.append(
            f"retrained {len(report.retrained)} tag(s); carried over {len(report.carried_over)} from the active model"
            + (f": {', '.join(report.carried_over[:10])}" if report.carried_over else "")
        )
    lines.extend(report.notes)
    return "\n".join(lines)


def as_json(report: TrainingReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)


def _as_text(sheet: Any) -> None:
    """Store every string cell as text: a tag titled ``=HYPERLINK(...)`` must stay words, not a formula
    (openpyxl turns any string starting with ``=`` into one)."""
    for row in sheet.iter_rows():
        for cell in row:
            if isinstance(cell.value, str):
                cell.data_type = "s"


def as_xlsx(report: TrainingReport) -> bytes:
    """The report as an Excel workbook: one row per tag, the status cell coloured green/yellow/grey."""
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Training report"
    columns = [
        "Tag",
        "Title",
        "Training status",
        "Images",
        "Excluded (low resolution)",
        "Precision",
        "Recall",
        "F1",
        "Average precision",
        "Threshold",
        "Advice",
        "Below resolution guideline",
        *(f"Negatives ({kind})" for kind in NEGATIVE_KINDS),
        "Carried over from",
        "From review",
    ]
    sheet.append(columns)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in report.rows:
        sheet.append(
            [
                row.tag,
                row.title,
                row.status,
                row.images,
                row.excluded_low_resolution,
                row.precision,
                row.recall,
                row.f1,
                row.average_precision,
                row.threshold,
                "; ".join(row.advice),
                row.below_resolution,
                *(row.negatives.get(kind, 0) for kind in NEGATIVE_KINDS),
                row.carried_from,
                row.from_review,
            ]
        )
        status_cell = sheet.cell(row=sheet.max_row, column=3)
        status_cell.fill = PatternFill("solid", start_color=COLOURS[row.status], end_color=COLOURS[row.status])
    widths = (32, 24, 18, 8, 12, 10, 10, 10, 12, 10, 60, 12, 12, 12, 12, 12, 24, 12)
    for letter, width in zip("ABCDEFGHIJKLMNOPQR", widths, strict=True):
        sheet.column_dimensions[letter].width = width
    info = book.create_sheet("Run")
    for name, value in [
        ("Run", report.run_id),
        ("Model version", report.model_version),
        ("Folders", ", ".join(report.folders)),
        ("Created", report.created_at),
        ("Images used", report.images_used),
        ("Images embedded", report.images_embedded),
        ("Untagged pictures used as negatives", report.untagged_negatives),
        ("Retrained tags", ", ".join(report.retrained)),
        ("Carried over tags", ", ".join(report.carried_over)),
    ]:
        info.append([name, value])
    for note in report.notes:
        info.append(["Note", note])
    for key in report.excluded_low_resolution:
        info.append(["Excluded (under minimum resolution)", key])
    _as_text(sheet)
    _as_text(info)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
