"""Checkpoints of one movie run, so that an interrupted run continues where it stopped.

A run is cut into *batches* of consecutive frames (batch ``b`` is frames
``[b * batch_size, (b + 1) * batch_size)``). Each process appends the localizations of every
batch it completes to its own rows file (float64, exact) and adds the batch's render to its own float64 sums; the
batch is *committed* when the process's JSON state naming it is replaced (atomically). A
crash at any point leaves the last committed state, and a re-run with the same options does
only the batches not committed. The merge reads the batches back in frame order, one at a
time, so nothing holds the whole movie's localizations.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import MOLECULE_COLUMNS, TEXT_COLUMNS, empty_table
from ..screening import add_counts

STATE_FORMAT = 3


class MovieError(ValueError):
    """A problem with the input or the partial results, meant for the user (one line)."""


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of one batch's sampling noise: independent streams, the same in every run."""
    return int(np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name, then rename it to ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def empty_localizations(columns=MOLECULE_COLUMNS) -> pd.DataFrame:
    """A table with no rows and the molecule columns (:func:`smlm_diffusers.columns.empty_table`)."""
    return empty_table(columns)


# the text columns of the tables (:data:`smlm_diffusers.columns.TEXT_COLUMNS`) are stored as the codes
# of their values in the float64 rows


def _text_dtype(name: str) -> str:
    return "text:" + "|".join(TEXT_COLUMNS[name])


def rows_bytes(locs: pd.DataFrame) -> bytes:
    """A table's rows as float64 bytes, row-major (integers up to 2**53 are exact; the text
    columns of :data:`TEXT_COLUMNS` as the index of their value)."""
    out = locs.copy()
    for name, values in TEXT_COLUMNS.items():
        if name in out.columns:
            codes = pd.Categorical(out[name], categories=list(values)).codes
            if (codes < 0).any():
                bad = sorted(set(out[name][codes < 0].astype(str)))
                raise MovieError(f"column {name} has values {bad} outside {list(values)}")
            out[name] = codes.astype(np.float64)
    return np.ascontiguousarray(out.to_numpy(dtype=np.float64)).tobytes()


def rows_table(data: bytes, columns: list[list[str]]) -> pd.DataFrame:
    """The inverse of :func:`rows_bytes` for ``columns`` = [[name, dtype], ...]."""
    values = np.frombuffer(data, dtype=np.float64).reshape(-1, len(columns))

    def column(k: int, dtype: str):
        if dtype.startswith("text:"):
            return np.array(dtype[5:].split("|"), dtype=object)[values[:, k].astype(np.int64)]
        return values[:, k].astype(dtype)

    return pd.DataFrame({name: column(k, dtype) for k, (name, dtype) in enumerate(columns)},
                        columns=[name for name, _ in columns])


def table_columns(locs: pd.DataFrame) -> list[list[str]]:
    """[[name, dtype], ...] of a table (the checkpoint's schema)."""
    return [[str(c), _text_dtype(c) if c in TEXT_COLUMNS else str(locs[c].dtype)] for c in locs.columns]


def mode_change(old: dict, new: dict) -> str:
    """``"mode 'ddpm' -> 'DeepSTORM + arbitration'; "`` where two run signatures differ in mode (first in the
    message: a run begun under the earlier default, DDPM mode, restarts in the new one), else ``""``."""
    a, b = ((sig.get("options") or {}).get("mode") for sig in (old, new))
    return f"mode {a!r} -> {b!r}; " if a != b and a is not None else ""


def describe_changes(old: dict, new: dict, prefix: str = "") -> str:
    """``"key old -> new"`` for every differing leaf of two nested dicts, comma-separated."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = describe_changes(a, b, f"{prefix}{key}.")
            if inner:
                changes.append(inner)
        elif a != b:
            changes.append(f"{prefix}{key} {a!r} -> {b!r}")
    return ", ".join(changes)


class WorkFolder:
    """The checkpoint folder of one run (e.g. ``<table>.partial/``).

    Files: ``progress.json`` (format, signature of model + options + input, frames done once
    merged); per process ``rank<r>.json`` (committed batches and the byte range of each in
    ``rank<r>.rows``, bytes of it that are committed, the table's columns, the current render
    files), ``rank<r>.rows`` (localizations as float64 rows, 0-based frames: exact, and no
    text formatting on the way), ``rank<r>_sum_<n>.npy`` /
    ``rank<r>_var_<n>.npy`` (float64 render sums of the committed batches), and ``tail.*``:
    the last, incomplete batch of a run cut short by ``max_frames`` (re-done by the next run).

    A batch is committed by appending its rows, writing new ``.npy`` files, then
    replacing ``rank<r>.json`` (atomic).
    """

    def __init__(self, folder: str | os.PathLike, rank: int = 0):
        self.folder = Path(folder)
        self.rank = int(rank)
        self.rows = self.folder / f"rank{self.rank}.rows"
        self.json = self.folder / f"rank{self.rank}.json"

    # -- set-up (main process) ---------------------------------------------------------------
    def prepare(self, signature: dict, restart: bool, run_frames: int, batch_size: int,
                log: Callable[[str], None] = lambda message: None) -> None:
        """Keep compatible partial results, or clear the folder (with a message why)."""
        reason = None
        progress = self.folder / "progress.json"
        if self.folder.exists():
            if restart:
                reason = "restart requested"
            elif not progress.is_file():
                reason = "no progress.json"
            else:
                try:
                    old = json.loads(progress.read_text())
                except (OSError, json.JSONDecodeError):
                    old = {}
                if old.get("format") != STATE_FORMAT or old.get("signature") != signature:
                    changes = describe_changes(old.get("signature") or {}, signature) or "format"
                    changes = mode_change(old.get("signature") or {}, signature) + changes
                    reason = "options changed: " + (changes if len(changes) <= 300 else changes[:297] + "...")
                else:
                    total = signature["stack"]["frames"]
                    beyond = [b for b in self.committed_batches() if min((b + 1) * batch_size, total) > run_frames]
                    if beyond:
                        reason = f"the partial results cover frames beyond the {run_frames} asked for"
            if reason:
                log(f"discarding partial results in {self.folder} ({reason}); starting from scratch")
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for tail in self.folder.glob("tail*"):
            tail.unlink()
        if not progress.is_file():
            atomic_write_text(progress, json.dumps({"format": STATE_FORMAT, "signature": signature,
                                                    "frames_done": 0}, indent=2) + "\n")

    def set_frames_done(self, frames: int) -> None:
        """Record in ``progress.json`` how many frames the merged results cover."""
        path = self.folder / "progress.json"
        progress = json.loads(path.read_text())
        progress["frames_done"] = int(frames)
        atomic_write_text(path, json.dumps(progress, indent=2) + "\n")

    # -- state of every process ----------------------------------------------------------------
    def rank_states(self) -> dict[int, dict]:
        """Committed state of every process, by rank."""
        states = {}
        for path in sorted(self.folder.glob("rank*.json")):
            try:
                states[int(path.stem[4:])] = json.loads(path.read_text())
            except (ValueError, OSError, json.JSONDecodeError):
                continue
        return dict(sorted(states.items()))

    def committed_batches(self) -> set[int]:
        """Batches committed by any process."""
        return {b for s in self.rank_states().values() for b in s.get("batches", [])}

    # -- this process ------------------------------------------------------------------------
    def load_own(self) -> dict:
        """This process's committed state; cuts its rows file back to the committed rows."""
        state = self.rank_states().get(self.rank, {"batches": [], "batch_bytes": {}, "frames_done": 0,
                                                    "rows_bytes": 0, "columns": None, "n_localizations": 0,
                                                    "sum_file": None, "var_file": None, "generation": 0})
        if self.rows.exists():
            with open(self.rows, "r+b") as fh:
                fh.truncate(state["rows_bytes"])
        elif state["rows_bytes"]:
            raise MovieError(f"{self.rows} is missing: restart the run")
        state["sum"] = np.load(self.folder / state["sum_file"]) if state.get("sum_file") else None
        state["var"] = np.load(self.folder / state["var_file"]) if state.get("var_file") else None
        return state

    def commit(self, state: dict, batch: int, n_frames: int, locs: pd.DataFrame, kde_sum: np.ndarray,
               kde_var: np.ndarray | None, rejected: dict | None = None) -> None:
        """Append one completed batch (rows, render sums, the rows left out by reason) and commit it."""
        columns = table_columns(locs)
        if state["columns"] is not None and state["columns"] != columns:
            raise MovieError(f"batch {batch} has the columns {columns}, earlier ones {state['columns']}")
        start = state["rows_bytes"]
        with open(self.rows, "ab") as fh:
            fh.write(rows_bytes(locs))
        stop = self.rows.stat().st_size
        state["sum"] = kde_sum if state["sum"] is None else state["sum"] + kde_sum
        if kde_var is not None:
            state["var"] = kde_var if state["var"] is None else state["var"] + kde_var
        gen = state["generation"] + 1
        old = [state.get("sum_file"), state.get("var_file")]
        state["sum_file"] = f"rank{self.rank}_sum_{gen:06d}.npy"
        _atomic_save_npy(self.folder / state["sum_file"], state["sum"])
        if state["var"] is not None:
            state["var_file"] = f"rank{self.rank}_var_{gen:06d}.npy"
            _atomic_save_npy(self.folder / state["var_file"], state["var"])
        state["generation"] = gen
        state["batches"] = state["batches"] + [int(batch)]
        state["batch_bytes"] = state["batch_bytes"] | {str(int(batch)): [start, stop]}
        state["frames_done"] += int(n_frames)
        state["rows_bytes"] = stop
        state["columns"] = columns
        state["n_localizations"] += len(locs)
        state["rejected"] = add_counts(state.get("rejected"), rejected)
        public = {k: v for k, v in state.items() if k not in ("sum", "var")}
        atomic_write_text(self.json, json.dumps(public, indent=2) + "\n")
        for name in old:
            if name and name not in (state["sum_file"], state.get("var_file")):
                (self.folder / name).unlink(missing_ok=True)

    def write_tail(self, batch: int, locs: pd.DataFrame, kde_sum: np.ndarray, kde_var: np.ndarray | None,
                   rejected: dict | None = None) -> None:
        """The incomplete last batch of a run cut short: used by this run's merge only."""
        (self.folder / "tail.rows").write_bytes(rows_bytes(locs))
        arrays = {"sum": kde_sum} | ({} if kde_var is None else {"var": kde_var})
        with open(self.folder / "tail.npz.tmp", "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(self.folder / "tail.npz.tmp", self.folder / "tail.npz")
        atomic_write_text(self.folder / "tail.json",
                          json.dumps({"batch": int(batch), "columns": table_columns(locs),
                                      "rejected": add_counts(None, rejected)}) + "\n")

    def rejected(self) -> dict[str, int]:
        """Rows left out of the table by reason, summed over every process's committed batches and the tail."""
        total = add_counts(None, None)
        for state in self.rank_states().values():
            total = add_counts(total, state.get("rejected"))
        tail = self.folder / "tail.json"
        if tail.is_file():
            total = add_counts(total, json.loads(tail.read_text()).get("rejected"))
        return total

    # -- merge (main process) ------------------------------------------------------------------
    def merge_render(self, shape: tuple[int, int], with_variance: bool):
        """Render sums of every process (+ the tail): (kde_sum, kde_var or None, frames committed)."""
        kde_sum = np.zeros(shape)
        kde_var = np.zeros(shape) if with_variance else None
        frames = 0
        for state in self.rank_states().values():
            if state.get("sum_file"):
                kde_sum += np.load(self.folder / state["sum_file"])
            if with_variance and state.get("var_file"):
                kde_var += np.load(self.folder / state["var_file"])
            frames += state["frames_done"]
        if (self.folder / "tail.json").is_file():
            with np.load(self.folder / "tail.npz") as tail:
                kde_sum += tail["sum"]
                if with_variance:
                    kde_var += tail["var"]
        return kde_sum, kde_var, frames

    def iter_localizations(self) -> Iterator[pd.DataFrame]:
        """Every committed batch (then the tail) in frame order, one DataFrame per batch."""
        index = []
        states = self.rank_states()
        for rank, state in states.items():
            for batch, (start, stop) in state.get("batch_bytes", {}).items():
                index.append((int(batch), rank, start, stop))
        for batch, rank, start, stop in sorted(index):
            with open(self.folder / f"rank{rank}.rows", "rb") as fh:
                fh.seek(start)
                data = fh.read(stop - start)
            yield rows_table(data, states[rank]["columns"])
        tail = self.folder / "tail.json"
        if tail.is_file():
            yield rows_table((self.folder / "tail.rows").read_bytes(), json.loads(tail.read_text())["columns"])
