"""Whole archives: a BIDS dataset, a DICOM tree or a folder of volumes, on one machine or a Dask cluster.

Public surface:

* ``run_batch(input, output, *, parameters, dicom_options, key_file, labels_dir, qa, scrub_only,
  layout, workers, scheduler, client, audit_dir, max_items, overwrite, progress) -> summary``
* ``discover_plan`` / ``discover.Item``: how files become items (one per volume, DICOM series or file).
* ``Manifest``: the per-item SQLite record in OUTPUT/.defacer/manifest.sqlite that makes reruns resume.
* ``BatchConfig``, ``process_item``, ``BatchWorkerPlugin``: the worker side (one Dask task per item).
* ``BatchInterrupted`` (exit 130), ``BatchProgress`` (callbacks the CLI draws a progress bar from).

Needs the ``[batch]`` extra (dask[distributed]).
"""
from __future__ import annotations

from DeFacerLib.batch.manifest import Manifest
from DeFacerLib.batch.runner import BatchInterrupted, BatchProgress, discover_plan, run_batch
from DeFacerLib.batch.tasks import BatchConfig, BatchWorkerPlugin, process_item

__all__ = ["run_batch", "discover_plan", "Manifest", "BatchConfig", "BatchWorkerPlugin", "process_item",
           "BatchInterrupted", "BatchProgress"]
