"""Start a Dask cluster for ``register batch --scheduler``, print its address, keep it running.

On a SLURM cluster (needs ``pip install 'register-ot[distributed]' dask-jobqueue``) each SLURM job
is one Dask worker process with ``--cores`` threads, so each job runs ``--cores`` pairs side by
side, one torch thread each::

    python examples/dask_cluster.py slurm --jobs 10 --cores 4 --memory 32GB --walltime 04:00:00 \\
        --queue compute --address-file scheduler.txt &
    register batch cohort.csv -o out --scheduler "$(cat scheduler.txt)"

Workers must see the manifest's files and the output folder at the same paths (a shared file
system) and have ``register`` installed in the same environment. ``local`` starts the same
kind of cluster on this machine instead (for a try-out)::

    python examples/dask_cluster.py local --workers 2 --address-file scheduler.txt

Stop it with Ctrl-C (or kill): the SLURM jobs are cancelled.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path


def start(args: argparse.Namespace):
    if args.kind == "local":
        from distributed import LocalCluster

        # One thread per worker process: one pair at a time, one torch thread each.
        return LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        cores=args.cores,
        processes=1,  # one worker process per job; its `cores` threads each run one pair
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        # Sleep, not spin, in idle OpenMP threads; one torch thread per pair.
        job_script_prologue=["export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1", *args.prologue],
        log_directory=args.log_directory,
    )
    cluster.scale(jobs=args.jobs)
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("slurm", "local"))
    parser.add_argument("--address-file", type=Path, required=True, help="write the scheduler address here")
    parser.add_argument("--workers", type=int, default=2, help="local: worker processes")
    parser.add_argument("--jobs", type=int, default=4, help="slurm: jobs (one worker each)")
    parser.add_argument("--cores", type=int, default=4, help="slurm: cores per job = pairs side by side")
    parser.add_argument("--memory", default="16GB", help="slurm: memory per job")
    parser.add_argument("--walltime", default="02:00:00", help="slurm: time limit per job")
    parser.add_argument("--queue", default=None, help="slurm: partition")
    parser.add_argument("--account", default=None, help="slurm: account to charge")
    parser.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="slurm: a shell line run before the worker (e.g. 'source ~/venv/bin/activate')",
    )
    parser.add_argument("--log-directory", default="dask-logs", help="slurm: where the job logs go")
    args = parser.parse_args()

    cluster = start(args)
    tmp = args.address_file.with_name(f".{args.address_file.name}.tmp")
    tmp.write_text(cluster.scheduler_address + "\n")
    os.replace(tmp, args.address_file)
    print(
        f"scheduler {cluster.scheduler_address} (written to {args.address_file}); Ctrl-C stops it", flush=True
    )
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        args.address_file.unlink(missing_ok=True)
        cluster.close()


if __name__ == "__main__":
    main()
