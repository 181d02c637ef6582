import io

import numpy as np
from openpyxl import load_workbook
from smarttags.core import guidelines, report


def _report():
    rows = [
        report.TagRow("cars:sedan", "Sedan", report.status_for(40, 0.8, 30), 40, 0, 0.9, 0.8, 0.85, 0.8, 0.5, ["ok"]),
        report.TagRow(
            "cars:suv",
            "SUV",
            report.status_for(12, 0.9, 30),
            12,
            2,
            0.7,
            0.6,
            0.65,
            0.9,
            0.4,
            ["add 18 more visually similar images"],
        ),
        report.TagRow("cars:bus", "Bus", report.status_for(3, None, 30), 3, advice=["add 2 or more images"]),
    ]
    return report.TrainingReport("train-1", "20261130T000000Z", ["s3://b/cars/"], "2026-11-30", 55, 55, rows)


def test_status_rule_matches_the_documented_colours():
    assert report.status_for(30, 0.5, 30) == report.TRAINED
    assert report.status_for(29, 0.99, 30) == report.PARTIAL
    assert report.status_for(100, 0.3, 30) == report.PARTIAL
    assert report.status_for(4, 0.9, 30) == report.NOT_TRAINED


def test_table_json_and_xlsx():
    rep = _report()
    table = report.as_table(rep)
    assert "1 trained, 1 partially trained, 1 not trained" in table
    assert report.TrainingReport.from_json(rep.to_json()) == rep
    book = load_workbook(io.BytesIO(report.as_xlsx(rep)))
    sheet = book["Training report"]
    assert [c.value for c in sheet[2]][:4] == ["cars:sedan", "Sedan", "trained", 40]
    colours = [sheet.cell(row=r, column=3).fill.start_color.rgb[-6:] for r in (2, 3, 4)]
    assert colours == [
        report.COLOURS[report.TRAINED],
        report.COLOURS[report.PARTIAL],
        report.COLOURS[report.NOT_TRAINED],
    ]


def test_guideline_checks():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 16))
    tight = base + 0.05 * rng.normal(size=(20, 16))
    far = -base
    x = np.vstack([tight, far, tight[:1]])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.zeros((22, 3))
    labels[:21, 0] = 1
    labels[:3, 1] = 1
    labels[:3, 2] = 1
    findings = guidelines.check(x, labels, ["a:x", "a:y", "a:z"])
    assert findings.outliers == {"a:x": [20]}
    assert (0, 21) in findings.duplicates
    assert findings.always_together == [("a:y", "a:z")]
    assert (
        guidelines.imbalanced(np.r_[np.ones((100, 1)), np.zeros((1, 1))].repeat(2, axis=1) * [1, 0.0], ["a", "b"]) == []
    )


def test_xlsx_writes_hostile_titles_as_text_not_formulas():
    rep = _report()
    hostile = '=HYPERLINK("http://evil.example/","Click me")'
    rep.rows[0].title = hostile
    rep.notes.append("=1+1")
    book = load_workbook(io.BytesIO(report.as_xlsx(rep)))
    cell = book["Training report"].cell(row=2, column=2)
    assert (cell.value, cell.data_type) == (hostile, "s")
    notes = [r for r in book["Run"].iter_rows() if r[0].value == "Note"]
    assert all(r[1].data_type == "s" for r in notes)
