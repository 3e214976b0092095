"""The run directory: ``config.json``, ``archive.jsonl``, ``front.csv`` (and ``front_test.csv``).

``archive.jsonl`` has one JSON object per finished, skipped or failed evaluation, in the
order the search integrated them, appended and flushed as each completes so that a killed
run loses only the evaluations in flight. Its keys:

``index`` (0-based position in the run), ``slot`` (population slot), ``genotype`` (digit
string), ``objectives`` (the problem's dict, or null when the evaluation failed),
``active`` (sorted active positions), ``skipped`` (true when no evaluation ran),
``skip_reason`` (``"inactive"``: only positions inactive in a parent changed;
``"memoized"``: the same active positions and values were evaluated before; or null),
``error`` (the failure message or null), ``submitted_at``, ``started_at``,
``finished_at`` (``time.time()`` seconds), ``duration_s`` and ``worker``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from stitchc.errors import SearchError

__all__ = [
    "CONFIG_FILE",
    "ARCHIVE_FILE",
    "FRONT_FILE",
    "TEST_FRONT_FILE",
    "PLOT_FILE",
    "ArchiveWriter",
    "read_config",
    "write_config",
    "read_archive",
    "front_records",
    "write_front",
    "read_front",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ARCHIVE_FILE = "archive.jsonl"
FRONT_FILE = "front.csv"
TEST_FRONT_FILE = "front_test.csv"
PLOT_FILE = "front.png"


def write_config(run_dir: Path, config: dict) -> None:
    """Write ``config.json`` atomically (a temporary file renamed over it)."""
    path = run_dir / CONFIG_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def read_config(run_dir: Path) -> dict:
    """Read ``config.json``.

    Raises:
        SearchError: the file is missing or is not valid JSON.
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise SearchError(f"{path} not found; pass the directory that a search wrote with -o.") from error
    except json.JSONDecodeError as error:
        raise SearchError(f"{path} is not valid JSON ({error}); restore it or start a new run.") from error


class ArchiveWriter:
    """Appends records to ``archive.jsonl``, one line each, flushed before :meth:`append` returns."""

    def __init__(self, run_dir: Path) -> None:
        self._file = open(Path(run_dir) / ARCHIVE_FILE, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_archive(run_dir: Path, repair: bool = False) -> list[dict]:
    """Read every record of ``archive.jsonl`` (an empty list if the file does not exist).

    A run killed while writing can leave a partial last line. It is ignored, and with
    ``repair=True`` cut from the file so that appending continues on a fresh line.

    Raises:
        SearchError: a line other than the last is not valid JSON.
    """
    path = Path(run_dir) / ARCHIVE_FILE
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, _, partial = data.rpartition(b"\n")
    if partial:
        logger.warning("ignoring a partial last line of %d bytes in %s", len(partial), path)
        if repair:
            with open(path, "r+b") as file:
                file.truncate(len(complete) + 1 if complete else 0)
    records = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise SearchError(f"{path} line {number} is not valid JSON ({error}); the archive is corrupt.") from error
    return records


def front_records(records: Iterable[dict]) -> list[dict]:
    """Return the non-dominated successful records (accuracy up, MACs down), sorted by MACs.

    Of records with equal objectives (a skipped evaluation repeats its parent's), the first
    is kept.
    """
    candidates = [record for record in records if record.get("objectives") is not None]
    front: list[dict] = []
    for record in sorted(candidates, key=lambda r: (r["objectives"]["macs"], -r["objectives"]["accuracy"], r["index"])):
        accuracy = record["objectives"]["accuracy"]
        if not front or accuracy > front[-1]["objectives"]["accuracy"]:
            front.append(record)
    return front


def write_front(path: Path, records: Iterable[dict]) -> None:
    """Write front records to CSV: index, genotype, accuracy, macs, then any extra objectives."""
    records = list(records)
    extras = sorted({key for record in records for key in record["objectives"]} - {"accuracy", "macs"})
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "genotype", "accuracy", "macs", *extras])
        for record in records:
            objectives = record["objectives"]
            row = [record["index"], record["genotype"], objectives["accuracy"], objectives["macs"]]
            writer.writerow(row + [objectives.get(key, "") for key in extras])


def read_front(path: Path) -> list[dict]:
    """Read a front CSV written by :func:`write_front` into ``{"index", "genotype", "objectives"}`` dicts."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    front = []
    for row in rows:
        objectives = {key: float(value) for key, value in row.items() if key not in ("index", "genotype") and value != ""}
        front.append({"index": int(row["index"]), "genotype": row["genotype"], "objectives": objectives})
    return front
