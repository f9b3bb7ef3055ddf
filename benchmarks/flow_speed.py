"""Speed of the flow network (stage 2): forward pass, whole stage, training step.

    python -m benchmarks.flow_speed [--sizes 8192,30000] [--threads 1,2] [--repeats 3]

Inputs: a synthetic lung vessel pair (:func:`register.synth.make_lung_pair`, radius as the
network's feature) of each size. The network is the default :class:`FlowNetConfig` with one
input feature, freshly initialised (speed does not depend on the weights). Reported per case:
median wall seconds and median CPU seconds of this process over ``--repeats`` runs (on a
shared machine the CPU time is the steadier figure). Printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from register.app.train_data import PairSource, multiscale_loss
from register.app.train_settings import PRESETS, TrainSettings
from register.config import load_config
from register.models.checkpoint import FlowModel
from register.models.pointpwc import FlowNet, FlowNetConfig, count_parameters, init_parameters
from register.stages.flow import flow_predict
from register.synth import make_lung_pair


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8192,30000", help="points per cloud, comma-separated")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stage-points", default="4096,8192", help="network input sizes of the stage")
    parser.add_argument("--train", default="4x4096", help="training step: BATCHxPOINTS ('' to skip)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]

    net = FlowNet(FlowNetConfig(in_features=1))
    init_parameters(net, 0)
    net.eval()
    print(f"parameters: {count_parameters(net):,}\n")
    print("| what | points | threads | wall s | CPU s |\n|---|---|---|---|---|")
    for n in sizes:
        pair = make_lung_pair(seed=0, n_points=n)
        model = FlowModel(net, PRESETS["lung"].normalisation, "radius", n)
        for t in threads:
            torch.set_num_threads(t)
            wall, cpu = timed(
                lambda pair=pair, model=model: model.predict(
                    pair["source"], pair["target"], pair["source_radius"], pair["target_radius"]
                ),
                args.repeats,
            )
            print(f"| network forward | {n} | {t} | {wall:.2f} | {cpu:.2f} |", flush=True)
    torch.set_num_threads(1)
    pair = make_lung_pair(seed=0, n_points=max(sizes))
    cfg = load_config("lung").flow
    for p in [int(s) for s in args.stage_points.split(",") if s]:
        model = FlowModel(net, PRESETS["lung"].normalisation, "radius", p)

        def stage(model=model) -> None:
            flow_predict(
                pair["source"],
                pair["target"],
                np.ones(len(pair["source"])),
                cfg,
                model,
                rng=np.random.default_rng(0),
                source_feature=pair["source_radius"],
                target_feature=pair["target_radius"],
            )

        wall, cpu = timed(stage, args.repeats)
        print(
            f"| whole stage (network on {p} + projection) | {max(sizes)} | 1 | {wall:.2f} | {cpu:.2f} |",
            flush=True,
        )
    if args.train:
        batch, points = (int(v) for v in args.train.split("x"))
        settings = TrainSettings(preset="lung", batch_size=batch, points=points, shape_pool=1)
        train_net = FlowNet(settings.network())
        init_parameters(train_net, 0)
        optimiser = torch.optim.Adam(train_net.parameters(), lr=1e-3, foreach=True)
        source = PairSource(settings)
        step = [0]

        def train_step() -> None:
            loss, _ = multiscale_loss(train_net, source.batch(step[0], "cpu"), settings.weights())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step[0] += 1

        wall, cpu = timed(train_step, args.repeats)
        print(
            f"| training step, batch {batch} (pairs made on the fly) | {points} | 1 | {wall:.2f} | {cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
