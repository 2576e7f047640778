"""Quality of the synthetic data, judged against the real training sample only (never the held-out set).

Kept import-light: the stage and its metrics (torch, monai, torchmetrics) load only when the stage runs.
Near-duplicate grouping of the real data belongs to the data (``pipeline.near_duplicates``, at ingest).
"""
