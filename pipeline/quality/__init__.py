"""Quality of the synthetic data, judged against the real training sample only (never the held-out set)."""
