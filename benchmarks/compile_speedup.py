"""``torch.compile`` vs. eager: training and prediction graphs/s, warm-up cost, agreement.

Why: ``trainer.compile`` (params.yaml) turns on ``torch.compile`` of the network in the
training stage (:class:`graphqa.module.GraphQAModule`, ``compile=True``). Whether that pays
depends on the machine: on a few CPU cores, message passing is bound by gathers and scatters
that inductor cannot fuse away, and compiling costs seconds up front. This benchmark measures
it so the default is a number, not a guess.

For each data set (the packed default train split, and the same graphs replicated ``--scale``
times, a stand-in for a 10x larger set) and each mode (eager, compiled) it:

* trains from identical initial weights with the stage's step (``GraphQAModule.model_step``,
  AdamW, same shuffle order): epoch 1 is the warm-up (it includes compilation), later epochs
  are timed -> training graphs/s;
* scores the val split in inference mode, once untimed (warm-up), then ``--repeats`` times
  timed -> prediction graphs/s;
* reports max |compiled - eager| of the val predictions of the *same* weights (the compiled
  run's, scored eagerly too). Tolerance: 1e-4 on sigmoid outputs (inductor reorders float32
  sums, so bits differ, at float32 noise level). The two training runs themselves are not
  comparable bit for bit: inductor draws its own dropout masks, so they follow different
  paths (their val predictions and final train loss are printed as information only).

Usage::

    .venv/bin/python benchmarks/compile_speedup.py [--epochs 3] [--scale 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

# isort: off
import graphqa  # noqa: F401  (must come first: pins the numeric path before torch loads)

# isort: on
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from graphqa.config import load_params
from graphqa.data import GraphQADataModule
from graphqa.layout import FEATURE_METADATA
from graphqa.model import TopoQANet, build_net
from graphqa.module import GraphQAModule
from graphqa.schema import FeatureSchema
from graphqa.train import configure_determinism, net_config_for

TOLERANCE = 1e-4


def make_module(template: TopoQANet, params, compile: bool) -> GraphQAModule:
    return GraphQAModule(
        copy.deepcopy(template),
        params.optimizer.model_dump(),
        params.scheduler.model_dump(),
        params.loss.model_dump(),
        params.selection.model_dump(),
        compile=compile,
    )


def train(
    module: GraphQAModule, graphs: list[Data], batch_size: int, epochs: int, seed: int
) -> tuple[list[float], float]:
    """Per-epoch seconds and the last epoch's mean train loss."""
    optimizer = torch.optim.AdamW(
        module.parameters(),
        lr=module.hparams["optimizer"]["learning_rate"],
        weight_decay=module.hparams["optimizer"]["weight_decay"],
    )
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(graphs, batch_size=batch_size, shuffle=True, generator=generator)
    seconds, loss_sum, n = [], 0.0, 0
    module.train()
    for _ in range(epochs):
        start = time.perf_counter()
        loss_sum, n = 0.0, 0
        for batch in loader:
            loss, _ = module.model_step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * batch.num_graphs
            n += batch.num_graphs
        seconds.append(time.perf_counter() - start)
    return seconds, loss_sum / max(n, 1)


def predict(module: GraphQAModule, batches: list[Batch]) -> torch.Tensor:
    module.eval()
    with torch.inference_mode():
        return torch.cat([torch.sigmoid(module(b)) for b in batches])


def measure(params, template, graphs, val_batches, compile, epochs, repeats, seed):
    configure_determinism(params, seed)
    module = make_module(template, params, compile)
    epoch_s, loss = train(module, graphs, params.dataloader.batch_size, epochs, seed)
    start = time.perf_counter()
    pred = predict(module, val_batches)  # warm-up (compiles the eval graph)
    predict_warm = time.perf_counter() - start
    timed = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(module, val_batches)
        timed.append(time.perf_counter() - start)
    n_val = sum(b.num_graphs for b in val_batches)
    return {
        "warmup_epoch_s": epoch_s[0],
        "train_graphs_per_s": len(graphs) / statistics.median(epoch_s[1:]),
        "predict_warmup_s": predict_warm,
        "predict_graphs_per_s": n_val / statistics.median(timed),
        "loss": loss,
        "pred": pred,
        "module": module,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--schema-dir", default="data/schema")
    parser.add_argument("--epochs", type=int, default=3, help="epoch 1 = warm-up, rest timed")
    parser.add_argument("--scale", type=int, default=10, help="replication of the large set")
    parser.add_argument("--repeats", type=int, default=3, help="timed prediction passes")
    args = parser.parse_args()
    if args.epochs < 2 or args.scale < 1 or args.repeats < 1:
        parser.error("--epochs must be >= 2, --scale and --repeats >= 1")

    params = load_params(args.params)
    seed = params.dataloader.seed
    schema_dir = Path(args.schema_dir)
    schema = FeatureSchema.load(schema_dir / FEATURE_METADATA)
    configure_determinism(params, seed)
    data = GraphQADataModule(
        schema_dir / "packed", batch_size=params.dataloader.batch_size, num_workers=0, seed=seed
    )
    data.setup("fit")
    train_split = data.split("train")
    template = build_net(net_config_for(params, schema))
    template.fit_standardizers(train_split.x, train_split.edge_attr)
    base = data.graphs("train")
    val = list(DataLoader(data.graphs("val"), batch_size=params.dataloader.batch_size))
    print(
        f"threads {torch.get_num_threads()}, batch size {params.dataloader.batch_size}, "
        f"epochs {args.epochs} (first = warm-up), torch {torch.__version__}; "
        f"tolerance {TOLERANCE:g} on predictions"
    )
    header = (
        f"{'set':<14}{'mode':<10}{'warm-up s':>10}{'train g/s':>11}"
        f"{'pred warm s':>12}{'pred g/s':>10}"
    )
    for name, graphs in (("default", base), (f"x{args.scale}", base * args.scale)):
        epochs = args.epochs if name == "default" else 2
        res = {
            mode: measure(
                params, template, graphs, val, mode == "compiled", epochs, args.repeats, seed
            )
            for mode in ("eager", "compiled")
        }
        print(f"\n{name}: {len(graphs)} train graphs, {sum(b.num_graphs for b in val)} val")
        print(header)
        for mode, r in res.items():
            print(
                f"{name:<14}{mode:<10}{r['warmup_epoch_s']:>10.2f}"
                f"{r['train_graphs_per_s']:>11.1f}{r['predict_warmup_s']:>12.2f}"
                f"{r['predict_graphs_per_s']:>10.1f}"
            )
        e, c = res["eager"], res["compiled"]
        same_weights = make_module(c["module"].net, params, compile=False)
        diff = float((predict(same_weights, val) - c["pred"]).abs().max())
        path_diff = float((e["pred"] - c["pred"]).abs().max())
        print(
            f"speedup compiled/eager: "
            f"train {c['train_graphs_per_s'] / e['train_graphs_per_s']:.2f}x, "
            f"predict {c['predict_graphs_per_s'] / e['predict_graphs_per_s']:.2f}x; "
            f"extra warm-up {c['warmup_epoch_s'] - e['warmup_epoch_s']:+.1f} s; "
            f"same weights: max |pred diff| {diff:.2e} "
            f"({'within' if diff <= TOLERANCE else 'ABOVE'} {TOLERANCE:g}); "
            f"separate training runs (own dropout masks): max |pred diff| {path_diff:.2e}, "
            f"|final train loss diff| {abs(e['loss'] - c['loss']):.2e}"
        )


if __name__ == "__main__":
    main()
