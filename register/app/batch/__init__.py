"""Batch registration of many pairs from a manifest, on local processes or a Dask cluster.

Modules, one purpose each:

* :mod:`~register.app.batch.manifest`: read and check the manifest (CSV or JSON lines);
* :mod:`~register.app.batch.job`: one pair, a pure function ``run_pair(job) -> record`` writing
  ``OUTDIR/<id>/``, and the completion check of a pair folder;
* :mod:`~register.app.batch.local` / :mod:`~register.app.batch.dask_runner`: where pairs run;
* :mod:`~register.app.batch.driver`: skip, run, retry, summarise;
* :mod:`~register.app.batch.summary`: ``summary.csv`` / ``summary.json``.

Importing this package imports neither torch nor Dask.
"""

from register.app.batch.driver import BatchOptions, check_outdir, check_pair_inputs, plan, run_batch
from register.app.batch.job import PairJob, check_complete, run_pair
from register.app.batch.manifest import ManifestError, PairSpec, read_manifest
from register.app.batch.summary import collect

__all__ = [
    "BatchOptions",
    "ManifestError",
    "PairJob",
    "PairSpec",
    "check_complete",
    "check_outdir",
    "check_pair_inputs",
    "collect",
    "plan",
    "read_manifest",
    "run_batch",
    "run_pair",
]
