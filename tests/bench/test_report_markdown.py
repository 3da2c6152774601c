"""report.md from a stored results.json: each paired test is printed once."""

import json
from pathlib import Path

from orchestrator.bench.report import markdown_report

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "mmlu-pro-best-at-3" / "results.json"


def test_a_paired_test_that_is_also_the_best_at_3_test_is_printed_once() -> None:
    report = json.loads(RESULTS.read_text())
    same = report["paired_test"]
    assert report["paired_test_best_at_3_vs_all_vote"] == same  # the case this guards
    assert markdown_report(report).count("Paired test") == 1
    other = {**same, "a": "symbolic-moe", "a_only": same["a_only"] - 1}
    text = markdown_report({**report, "paired_test": other})
    assert text.count("Paired test") == 2 and "Paired test, symbolic-moe vs all-vote" in text
