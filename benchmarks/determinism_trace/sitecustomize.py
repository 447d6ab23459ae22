"""Per-step numeric trace of a training process (loaded via PYTHONPATH by
``benchmarks/determinism_harness.py --trace``): for every optimizer step, the sha256 of the
batch, the loss bits, the gradients and the weights, appended to ``$GRAPHQA_TRACE_FILE``. Two
traces of the same training show the first step, and the first tensor, where they part."""

from __future__ import annotations

import hashlib
import os

_TRACE = os.environ.get("GRAPHQA_TRACE_FILE")


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _install() -> None:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    import graphqa  # noqa: F401  (pins the numeric path before torch loads)

    class StepTrace(Callback):
        def __init__(self) -> None:
            self.fh = open(_TRACE, "a")  # noqa: SIM115

        def _write(self, *fields) -> None:
            self.fh.write("\t".join(str(f) for f in fields) + "\n")
            self.fh.flush()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._write("batch", trainer.current_epoch, batch_idx, _digest([batch.y]))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            grads = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
            if trainer.global_step < 50 or trainer.global_step % 10 == 0:
                self._write(
                    "grad",
                    trainer.current_epoch,
                    trainer.global_step,
                    *(f"{n}={_digest([g])}" for n, g in grads),
                )

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self._write("step", trainer.current_epoch, batch_idx, float(loss).hex())

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            values = sorted((k, v.hex()) for k, v in metrics.items())
            self._write("val", trainer.current_epoch, values)

    original = L.Trainer.__init__

    def patched(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), StepTrace()]
        original(self, *args, **kwargs)

    L.Trainer.__init__ = patched


if _TRACE:
    _install()
