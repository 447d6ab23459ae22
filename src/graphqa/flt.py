"""Stage ``flt``: score the final model's feature groups on val, write a mask per keep fraction.

Two scores per group (:func:`weight_magnitude_scores`, :func:`permutation_scores`); the
``flt.method`` one ranks the groups, the other is recorded beside it. The groups, masks and the
later recommendation are pure maths in :mod:`graphqa.maths.flt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphqa.config import Params
from graphqa.contract import (
    EDGE_COLUMNS,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    DataContractError,
    read_json,
)
from graphqa.data import PackedSplit
from graphqa.files import write_json
from graphqa.layout import SchemaPaths
from graphqa.maths.flt import (
    FeatureGroup,
    build_groups,
    make_mask,
    mask_filename,
    rank_groups,
    repeat_summary,
)
from graphqa.model import TopoQANet
from graphqa.module import load_module
from graphqa.schema import FeatureSchema
from graphqa.scoring import packed_logits

#: The ranking the stage writes beside the masks (``flt_mask_keep_<f>.json``).
GROUP_SCORES_FILE = "flt_group_scores.json"


def preflight(graph_dir: str | Path, schema: FeatureSchema) -> None:
    """FLT needs labelled columns: the sidecars must exist and agree with the schema."""
    graph_dir = Path(graph_dir)
    expected = {
        NODE_COLUMNS: schema.node_columns,
        EDGE_COLUMNS: schema.edge_columns,
        TOPOLOGY_COLUMNS: ["ID", *schema.topology_columns],
    }
    for name, columns in expected.items():
        path = graph_dir / name
        if not path.exists():
            raise DataContractError(
                path, "<file>", "labelled feature columns (FLT groups by column name)", "missing"
            )
        found = read_json(path)
        if found != columns:
            raise DataContractError(
                path,
                "<file>",
                f"the {len(columns)} column names of the resolved schema",
                f"{len(found) if isinstance(found, list) else type(found).__name__} "
                "names that differ",
            )


def _input_positions(net: TopoQANet, schema: FeatureSchema, kind: str) -> dict[str, int]:
    """Column name -> position in the model's (masked) input for node or edge features."""
    norm = net.node_norm if kind == "node" else net.edge_norm
    names = schema.node_columns if kind == "node" else schema.edge_columns
    return {names[int(i)]: pos for pos, i in enumerate(norm.index.tolist())}


def weight_magnitude_scores(
    net: TopoQANet, schema: FeatureSchema, groups: list[FeatureGroup]
) -> dict[str, dict[str, float]]:
    """Sum of |W| of the first encoder layer over a group's columns (inputs are standardised,
    so magnitudes are comparable). Columns the model never saw score 0."""
    weights = {
        "node": net.node_encoder.weight.detach().abs().sum(0),
        "edge": net.edge_encoder[0].weight.detach().abs().sum(0),
    }
    scores = {}
    for group in groups:
        pos = _input_positions(net, schema, group.kind)
        total = sum(float(weights[group.kind][pos[c]]) for c in group.columns if c in pos)
        scores[group.name] = {"score": total, "per_column": total / len(group.columns)}
    return scores


def _mse(
    net: TopoQANet,
    split: PackedSplit,
    x: torch.Tensor,
    edge_attr: torch.Tensor,
    batch_graphs: int = 256,
) -> float:
    """MSE of sigmoid(net) over a packed split with substituted feature matrices."""
    pred = torch.sigmoid(packed_logits(net, split, batch_graphs, x, edge_attr))
    return float(((pred - split.y.double()) ** 2).mean())


def permutation_scores(
    net: TopoQANet,
    schema: FeatureSchema,
    split: PackedSplit,
    groups: list[FeatureGroup],
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Increase of val MSE when a group's columns are shuffled across all nodes (or edges) of
    the split, i.e. mostly replaced by other graphs' values; ``score`` is the mean over
    ``repeats`` shuffles, with their sd and a 95 % interval (:func:`repeat_summary`)."""
    net = net.eval()
    base = _mse(net, split, split.x, split.edge_attr)
    col_index = {
        "node": {c: i for i, c in enumerate(schema.node_columns)},
        "edge": {c: i for i, c in enumerate(schema.edge_columns)},
    }
    scores = {}
    for g, group in enumerate(groups):
        cols = torch.tensor([col_index[group.kind][c] for c in group.columns])
        deltas = []
        for r in range(repeats):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + g * 1_009 + r)
            source = split.x if group.kind == "node" else split.edge_attr
            perm = torch.randperm(source.shape[0], generator=gen)
            shuffled = source.clone()
            shuffled[:, cols] = source[perm][:, cols]
            x, e = (shuffled, split.edge_attr) if group.kind == "node" else (split.x, shuffled)
            deltas.append(_mse(net, split, x, e) - base)
        scores[group.name] = {
            "score": float(np.mean(deltas)),
            **repeat_summary(deltas),
            "repeats": [float(d) for d in deltas],
        }
    return scores


def flt_stage(
    *, params: Params, schema_dir: str | Path, model_path: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Stage worker for ``flt``: rank the final model's feature groups by importance on val
    and write one mask per keep fraction, for the pruned retrains to train with.

    Reads ``<schema_dir>/feature_metadata.json``, ``<schema_dir>/packed/val.pt``,
    ``model_path`` and (pre-flight) ``<paths.graph_dir>/{node_columns.json,
    edge_columns.json,topology_columns.json}``. Writes into ``out_dir``:
    ``flt_group_scores.json`` (both methods' scores, the ranking) and
    ``flt_mask_keep_<frac>.json`` per ``flt.keep_fracs``.

    Args:
        params: the params (``flt`` section, ``paths.graph_dir``, ``trainer.num_threads``).
        schema_dir: stage ``schema``'s folder.
        model_path: the final model's checkpoint.
        out_dir: the stage's output folder.

    Returns:
        The content of ``flt_group_scores.json``.

    Raises:
        DataContractError: a column sidecar is missing or disagrees with the schema.
    """
    cfg = params.flt
    schema = FeatureSchema.load(SchemaPaths(Path(schema_dir)).feature_metadata)
    preflight(params.paths.graph_dir, schema)
    net = load_module(model_path).net
    groups = build_groups(schema, cfg.group_mode, cfg.apply_to, cfg.drop_basic)
    val = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed("val"))
    torch.set_num_threads(params.trainer.num_threads)
    by_method = {
        "weight_magnitude": weight_magnitude_scores(net, schema, groups),
        "permutation": permutation_scores(
            net, schema, val, groups, cfg.permutation_repeats, cfg.seed
        ),
    }
    ranked = rank_groups(groups, by_method[cfg.method])
    other = "permutation" if cfg.method == "weight_magnitude" else "weight_magnitude"
    for row in ranked:
        row[f"{other}_score"] = by_method[other][row["group"]]["score"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "method": cfg.method,
        "group_mode": cfg.group_mode,
        "apply_to": list(cfg.apply_to),
        "model": Path(model_path).as_posix(),
        "val_mse": _mse(net.eval(), val, val.x, val.edge_attr),
        "ranked": ranked,
        "ranked_by_other_method": [r["group"] for r in rank_groups(groups, by_method[other])],
    }
    write_json(out_dir / GROUP_SCORES_FILE, result)
    for frac in cfg.keep_fracs:
        write_json(out_dir / mask_filename(frac), make_mask(schema, groups, ranked, frac))
    print("flt: groups by importance: " + ", ".join(r["group"] for r in ranked))
    return result
