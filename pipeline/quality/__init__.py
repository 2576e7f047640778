"""Quality of the synthetic data, judged against the real training sample only (never the held-out set).

Also near-duplicate grouping of the real data at ingest (``near_duplicates``). Kept import-light:
``pipeline.validate`` imports ``near_duplicates``; the stage and its metrics (torch, monai, torchmetrics)
load only when the stage runs.
"""
