"""Training throughput: the Lightning stage path vs. a minimal hand-written PyTorch/PyG loop.

Why: the `train` stage runs through Lightning (``GraphQAModule`` + ``build_trainer``), which
adds per-step hooks, metric objects, whole-split validation metrics, checkpointing and DVCLive
logging on top of the arithmetic. This benchmark measures how much of the raw training speed
that costs, so the overhead is a number rather than a guess. Target: Lightning reaches at least
80% of the plain loop's graphs/s (overhead <= 20%).

Both paths use the same packed train/val splits, the same network (``net_config_for`` from
``params.yaml`` with standardisers fitted on the train split; identical initial weights), the
same batch size, shuffle order, epochs, seed, thread count and deterministic-algorithms setting.
Per epoch both do one training pass and one validation pass over the val split; the plain loop
only collects val predictions, Lightning also computes its epoch metrics, checkpoints and logs
(that is the overhead being measured). Data loading into PyG ``Data`` lists is done once before
timing and shared. Only ``trainer.fit`` / the plain loop is timed.

Timings are wall-clock on CPU: other processes sharing the machine skew them, so use
``--repeats`` > 1 (measurements alternate between the paths) and compare medians.

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--epochs 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# isort: off
import graphqa  # noqa: F401  (must come first: pins the numeric path before torch loads)

# isort: on
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.flop_counter import FlopCounterMode

from graphqa.config import Params, load_params
from graphqa.data import GraphQADataModule
from graphqa.layout import FEATURE_METADATA, RunPaths
from graphqa.model import TopoQANet, build_net
from graphqa.module import GraphQAModule
from graphqa.schema import FeatureSchema
from graphqa.train import build_trainer, configure_determinism, net_config_for

TARGET_RATIO = 0.8


@dataclass(frozen=True)
class Measurement:
    path: str
    seconds: float
    train_graphs: int

    @property
    def graphs_per_s(self) -> float:
        return self.train_graphs / self.seconds


class GraphCounter(Callback):
    """Counts training graphs actually processed by ``trainer.fit``."""

    def __init__(self) -> None:
        self.train_graphs = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.train_graphs += int(batch.num_graphs)


def bench_params(params_path: str, epochs: int) -> Params:
    """The stage's params with progress output, early stopping and epoch count pinned."""
    return load_params(
        params_path,
        overrides={
            "logging.progress": "none",
            "early_stopping.enabled": False,
            "trainer.max_epochs": epochs,
            "mlflow.enabled": False,
        },
    )


def fresh_net(template: TopoQANet) -> TopoQANet:
    """Independent copy of the template (same initial weights and fitted standardisers)."""
    return copy.deepcopy(template)


def prepare(params: Params, seed: int) -> None:
    """Same global state before every measurement: threads, seeds, deterministic algorithms."""
    configure_determinism(params, seed)
    torch.use_deterministic_algorithms(params.trainer.deterministic)


def run_lightning(
    params: Params, data: GraphQADataModule, template: TopoQANet, seed: int
) -> Measurement:
    prepare(params, seed)
    module = GraphQAModule(
        fresh_net(template),
        params.optimizer.model_dump(),
        params.scheduler.model_dump(),
        params.loss.model_dump(),
        params.selection.model_dump(),
    )
    counter = GraphCounter()
    with tempfile.TemporaryDirectory(prefix="graphqa-bench-") as tmp:
        trainer = build_trainer(params, RunPaths(Path(tmp)), "bench", extra_callbacks=[counter])
        start = time.perf_counter()
        trainer.fit(module, datamodule=data)
        seconds = time.perf_counter() - start
    return Measurement("lightning", seconds, counter.train_graphs)


def plain_loop(params: Params, data: GraphQADataModule, net: TopoQANet, epochs: int) -> int:
    """Hand-written train + val loop; returns the number of training graphs processed."""
    optimizer = torch.optim.AdamW(
        net.parameters(),
        lr=params.optimizer.learning_rate,
        weight_decay=params.optimizer.weight_decay,
    )
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    graphs = 0
    for epoch in range(epochs):
        train_loader.sampler.set_epoch(epoch)  # same shuffle order as Lightning
        net.train()
        for batch in train_loader:
            pred = torch.sigmoid(
                net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
            )
            loss = F.mse_loss(pred, batch.y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            graphs += int(batch.num_graphs)
        net.eval()
        preds = []
        with torch.inference_mode():
            for batch in val_loader:
                preds.append(
                    torch.sigmoid(
                        net(
                            batch.x,
                            batch.edge_index,
                            batch.edge_attr,
                            batch.batch,
                            batch.num_graphs,
                        )
                    )
                )
        torch.cat(preds)
    return graphs


def run_plain(
    params: Params, data: GraphQADataModule, template: TopoQANet, seed: int, epochs: int
) -> Measurement:
    prepare(params, seed)
    net = fresh_net(template)
    start = time.perf_counter()
    graphs = plain_loop(params, data, net, epochs)
    seconds = time.perf_counter() - start
    return Measurement("plain", seconds, graphs)


def train_step_flops(params: Params, data: GraphQADataModule, template: TopoQANet) -> float:
    """FLOPs per graph of one training step (forward + backward) on the first real batch,
    counted by ``torch.utils.flop_counter`` (matmuls and other counted ops; gathers, scatters
    and element-wise work count zero there)."""
    net = fresh_net(template).train()
    batch = next(iter(data.train_dataloader()))
    with FlopCounterMode(display=False) as counter:
        pred = torch.sigmoid(
            net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
        )
        F.mse_loss(pred, batch.y).backward()
    return counter.get_total_flops() / int(batch.num_graphs)


def sgemm_flops_per_s(n: int = 1024, repeats: int = 10) -> float:
    """This machine's dense float32 matmul rate at the current thread count (median of runs)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    torch.mm(a, b)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(seconds)


def flop_ceiling(
    params: Params, data: GraphQADataModule, template: TopoQANet, achieved: float
) -> None:
    per_graph = train_step_flops(params, data, template)
    peak = sgemm_flops_per_s()
    ceiling = peak / per_graph
    print(
        f"\nFLOP-bound ceiling: {per_graph / 1e6:.2f} MFLOP per graph per training step "
        f"(FlopCounterMode, forward+backward, first train batch) at this machine's dense "
        f"float32 matmul rate {peak / 1e9:.1f} GFLOP/s (1024x1024 sgemm, "
        f"{torch.get_num_threads()} threads) -> ceiling {ceiling:,.0f} graphs/s; "
        f"plain loop achieves {achieved:.1f} graphs/s = {achieved / ceiling:.2%} of it.\n"
        "  An upper bound only: message passing (gathers, scatters, softmax over edges) is "
        "memory/gather-bound and counts no FLOPs here, and the network's small matmuls never "
        "reach sgemm's rate."
    )


def deterministic_cost(
    params: Params, data: GraphQADataModule, template: TopoQANet, seed: int, repeats: int
) -> None:
    """Lightning path with ``trainer.deterministic`` on vs. off, alternating."""
    off = params.model_copy(
        update={"trainer": params.trainer.model_copy(update={"deterministic": False})}
    )
    on = params.model_copy(
        update={"trainer": params.trainer.model_copy(update={"deterministic": True})}
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(repeats):
        for p in (on, off) if rep % 2 == 0 else (off, on):
            times[p.trainer.deterministic].append(run_lightning(p, data, template, seed).seconds)
    t_on, t_off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"trainer.deterministic: on {t_on:.2f} s, off {t_off:.2f} s (median of {repeats}); "
        f"time ratio on/off {t_on / t_off:.3f}"
    )


def numerics_cost(params_file: str, schema_dir: Path, epochs: int, repeats: int) -> None:
    """Pinned (AVX2) vs. native numerics: reuses ``benchmarks/numerics_cost.py``'s fresh-process
    training on the same packed data."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from numerics_cost import _train  # the one definition of a pinned/native training run

    times: dict[str, list[float]] = {"pinned": [], "native": []}
    with tempfile.TemporaryDirectory(prefix="graphqa-bench-numerics-") as tmp:
        for rep in range(repeats):
            for mode in ("pinned", "native") if rep % 2 == 0 else ("native", "pinned"):
                out = Path(tmp) / f"{mode}-{rep}"
                run = _train(mode, Path(params_file).resolve(), schema_dir.resolve(), epochs, out)
                times[mode].append(run["seconds"])
    pinned, native = statistics.median(times["pinned"]), statistics.median(times["native"])
    print(
        f"pinned numerics: pinned {pinned:.2f} s, native {native:.2f} s (train_stage, {epochs} "
        f"epochs, median of {repeats}); time ratio pinned/native {pinned / native:.3f}"
    )


def quiet_lightning() -> None:
    """Keep the output to the table: no device banners or single-process hints."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "dvclive"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning vs. newer torch


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--schema-dir", default="data/schema")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="default: params.dataloader.seed")
    parser.add_argument(
        "--no-costs",
        action="store_true",
        help="skip the deterministic on/off and pinned/native numerics measurements",
    )
    args = parser.parse_args()
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be >= 1")

    quiet_lightning()
    params = bench_params(args.params, args.epochs)
    seed = params.dataloader.seed if args.seed is None else args.seed
    schema_dir = Path(args.schema_dir)
    schema = FeatureSchema.load(schema_dir / FEATURE_METADATA)

    prepare(params, seed)
    data = GraphQADataModule(
        schema_dir / "packed",
        batch_size=params.dataloader.batch_size,
        num_workers=params.dataloader.num_workers,
        seed=seed,
    )
    data.setup("fit")  # build the PyG Data lists once, outside every timed region
    train = data.split("train")
    template = build_net(net_config_for(params, schema))
    template.fit_standardizers(train.x, train.edge_attr)

    print(
        f"train graphs {len(train)}, val graphs {len(data.split('val'))}, "
        f"batch size {params.dataloader.batch_size}, epochs {args.epochs}, "
        f"repeats {args.repeats}, threads {params.trainer.num_threads}, seed {seed}, "
        f"deterministic {params.trainer.deterministic}",
        flush=True,
    )

    prepare(params, seed)
    warm = time.perf_counter()
    plain_loop(params, data, fresh_net(template), 1)
    print(f"warm-up: 1 plain epoch in {time.perf_counter() - warm:.2f} s", flush=True)

    results: dict[str, list[Measurement]] = {"lightning": [], "plain": []}
    for rep in range(args.repeats):
        order = ("lightning", "plain") if rep % 2 == 0 else ("plain", "lightning")
        for path in order:
            if path == "lightning":
                m = run_lightning(params, data, template, seed)
            else:
                m = run_plain(params, data, template, seed, args.epochs)
            results[path].append(m)
            print(
                f"  repeat {rep + 1}: {m.path:<9} {m.seconds:7.2f} s  "
                f"{m.graphs_per_s:8.1f} graphs/s  ({m.train_graphs} train graphs)",
                flush=True,
            )

    label = "median " if args.repeats > 1 else ""
    print()
    print(f"{'path':<10} {label + 'seconds':>14} {label + 'graphs/s':>15}")
    rate: dict[str, float] = {}
    for path, ms in results.items():
        seconds = statistics.median(m.seconds for m in ms)
        rate[path] = statistics.median(m.graphs_per_s for m in ms)
        print(f"{path:<10} {seconds:>14.2f} {rate[path]:>15.1f}")
    ratio = rate["lightning"] / rate["plain"]
    met = ratio >= TARGET_RATIO
    print(
        f"\nratio lightning/plain graphs/s: {ratio:.3f} (overhead {1 - ratio:+.1%}); "
        f"target >= {TARGET_RATIO}: {'MET' if met else 'NOT MET'}"
    )
    flop_ceiling(params, data, template, rate["plain"])
    if not args.no_costs:
        deterministic_cost(params, data, template, seed, args.repeats)
        numerics_cost(args.params, schema_dir, args.epochs, args.repeats)


if __name__ == "__main__":
    main()
