"""Accuracy of a flow model on held-out synthetic pairs: raw network flow and the stage's field.

    python -m benchmarks.flow_heldout MODEL.pt [--pairs 8] [--points 8192] [--sigma 20]

Pairs: ``make_training_pair(kind, pair_seed(0, HELD_OUT_STREAM, 1000 + i), points)`` for the
model's preset kind: the held-out seed stream (never used for training) from index 1000 on,
past the pairs the training run validates on. Each pair is given to stage 2 as the pipeline
would (no affine stage: the pairs' residual affine motion is part of what is measured).
Reported (data units, lower is better): the mean end-point error over the valid source points
of the zero flow, of the raw network flow (on the points the network saw) and of the stage's
smooth field (at every source point), per pair and on average; and the stage's seconds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from register.config import load_config
from register.models.registry import load_model
from register.stages.flow import flow_predict
from register.synth.pairs import HELD_OUT_STREAM, make_training_pair, pair_seed

FIRST_INDEX = 1000  # held-out indices below this are the training runs' validation pairs


def stage_errors(pair, model, flow_cfg) -> tuple[float, float, float, float]:
    """Stage 2 on one synthetic ``pair``: mean end-point errors (data units) over the valid
    source points of the zero flow, of the raw network flow (on the points the network saw)
    and of the stage's smooth field (at every source point), and the stage's seconds."""
    t0 = time.perf_counter()
    res = flow_predict(
        pair.source,
        pair.target,
        np.ones(len(pair.source)),
        flow_cfg,
        model,
        rng=np.random.default_rng(0),
        source_feature=pair.source_feature,
        target_feature=pair.target_feature,
    )
    seconds = time.perf_counter() - t0
    v = pair.valid
    zero = np.linalg.norm(pair.flow[v], axis=1).mean()
    fed = v[res.indices]
    raw = np.linalg.norm(res.flow[fed] - pair.flow[res.indices][fed], axis=1).mean()
    field = np.linalg.norm(res.field.displacement(pair.source)[v] - pair.flow[v], axis=1).mean()
    return float(zero), float(raw), float(field), seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint path or shipped model name")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--points", type=int, default=8192, help="points per cloud of each pair")
    parser.add_argument(
        "--sigma", type=float, default=None, help="flow.sigma in data units (default: preset)"
    )
    args = parser.parse_args(argv)
    model = load_model(args.model)
    preset = model.metadata.get("preset", "lung")
    cfg = load_config(preset)
    flow_cfg = replace(cfg.flow, sigma=args.sigma) if args.sigma else cfg.flow
    flow_cfg = replace(flow_cfg, axes=["x,y,z"])  # synthetic pairs are in the models' training frame
    if cfg.pipeline.length_unit == "relative":
        raise SystemExit(f"preset {preset}: relative lengths; pass --sigma in data units")
    print(
        f"model {args.model} (preset {preset}, {model.metadata.get('steps')} steps), flow.sigma {flow_cfg.sigma}\n"
    )
    print("| pair seed | zero flow | network (raw) | stage field | stage s |\n|---|---|---|---|---|")
    rows = []
    for i in range(args.pairs):
        seed = pair_seed(0, HELD_OUT_STREAM, FIRST_INDEX + i)
        zero, raw, field, seconds = stage_errors(
            make_training_pair(preset, seed, args.points), model, flow_cfg
        )
        rows.append((zero, raw, field, seconds))
        print(f"| {seed} | {zero:.3f} | {raw:.3f} | {field:.3f} | {seconds:.1f} |", flush=True)
    mean = np.mean(rows, axis=0)
    print(f"| mean | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.1f} |")


if __name__ == "__main__":
    main()
