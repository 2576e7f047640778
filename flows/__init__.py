"""Prefect flows, deployments and the packaged per-domain configs (flows/configs)."""
