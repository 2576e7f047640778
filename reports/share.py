"""A report a data team can send outside the team: no real image, no file name, no path.

The full report embeds real images (the generator's training sample in the grids, held-out images in
LIME overlays, training images in the closest-pair panels) and names files (quarantine list, ingest
notes, closest-pair captions) and folders (data root, run store, command line). The shareable copy keeps
every number, table and synthetic image and withholds the rest; what it withholds it says it withheld.
Images are left out where the figures are drawn (``reports.html`` passes ``share`` to the sections that
draw real pixels); this module redacts the names and paths of the finished context and the page.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

WITHHELD = "(withheld in this shareable copy)"
SHARED_FILE_NAME = "report-share.html"
# provenance facts that name a folder or a command line (which carries --data and --runs-root)
PATH_FACTS = ("run record", "data", "command")


def shareable_context(context: dict[str, Any]) -> dict[str, Any]:
    """The report's context with file names, folders and real-image figures withheld."""
    data = dict(context["data"])
    data["quarantine"] = [{**row, "file": WITHHELD} for row in data["quarantine"]]
    data["quarantine_csv"] = WITHHELD
    notes = data.get("notes", [])
    data["notes"] = [f"{len(notes)} ingest note(s) withheld: they name files."] if notes else []
    quality = {**context["quality"], "figures": []} if context["quality"].get("available") else context["quality"]
    explanations = context["explanations"]
    if explanations.get("available"):
        explanations = {**explanations, "arms": [{**arm, "mean_maps": None} for arm in explanations["arms"]]}
    provenance = dict(context["provenance"])
    provenance["facts"] = [(key, WITHHELD if key in PATH_FACTS else value) for key, value in provenance["facts"]]
    provenance["config"] = redact_config_text(provenance["config"])
    return {**context, "data": data, "quality": quality, "explanations": explanations,
            "provenance": provenance, "run_dir": WITHHELD, "share": True}


def redact_config_text(text: str) -> str:
    """The resolved config with the data location and the run store withheld (everything else as run)."""
    if not text:
        return text
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return WITHHELD
    if not isinstance(config, dict):
        return WITHHELD
    if "runs_root" in config:
        config["runs_root"] = WITHHELD
    if isinstance(config.get("data"), dict) and config["data"].get("path") is not None:
        config["data"]["path"] = WITHHELD
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def scrub_paths(page: str, folders: list[str]) -> str:
    """Replace every spelling of these folders left anywhere in the page (notes, warnings, captions)."""
    spellings = sorted({spelling for folder in folders if folder
                        for spelling in (folder, os.path.abspath(folder), os.path.realpath(folder))
                        if len(spelling) > 1}, key=len, reverse=True)
    for spelling in spellings:
        page = page.replace(spelling, WITHHELD)
    return page
