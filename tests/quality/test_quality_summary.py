"""benchmarks/quality_summary.py: the overall row where one exists, else the mean over classes (MS-SSIM)."""

from __future__ import annotations

from benchmarks.quality_summary import summarise


def _metric(metric: str, cls: str, synthetic: float, reference: float) -> dict[str, object]:
    return {"metric": metric, "label": metric.upper(), "class": cls, "synthetic": synthetic, "reference": reference}


def test_overall_row_wins_and_per_class_only_metrics_are_averaged() -> None:
    quality = {
        "key": "k", "sizes": {"synthetic": 4},
        "metrics": [_metric("fd", "a", 10.0, 1.0), _metric("fd", "b", 30.0, 3.0), _metric("fd", "all", 25.0, 2.5),
                    _metric("ms_ssim", "a", 0.2, 0.4), _metric("ms_ssim", "b", 0.4, 0.2)],
        "memorisation": {"flagged_fraction": 0.25, "spaces": {"pixel": {"threshold": 0.04}}},
        "label_consistency": {"overall_agreement": 0.5, "per_class_agreement": {"a": 1.0, "b": 0.0},
                              "reference_cv_accuracy": 0.9},
    }
    row = summarise(quality)
    by_metric = {m["metric"]: m for m in row["metrics"]}
    assert (by_metric["fd"]["synthetic"], by_metric["fd"]["reference"], by_metric["fd"]["scope"]) == (25.0, 2.5, "overall")
    assert by_metric["ms_ssim"]["scope"] == "mean of classes"
    assert abs(by_metric["ms_ssim"]["synthetic"] - 0.3) < 1e-12 and abs(by_metric["ms_ssim"]["reference"] - 0.3) < 1e-12
    assert row["flagged_fraction"] == 0.25 and row["thresholds"] == {"pixel": 0.04}
