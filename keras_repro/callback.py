"""`ReproCallback`: the Keras hooks that fill a run record; `keras_repro.fit` uses it too.

For users who call `model.fit` themselves:

    >>> import keras_repro
    >>> keras_repro.configure(seed=42, mode="bitwise")                          # doctest: +SKIP
    >>> cb = keras_repro.ReproCallback(x=x, y=y, hyperparameters={"arch": "mlp"}) # doctest: +SKIP
    >>> model.fit(x, y, epochs=3, callbacks=[cb])                               # doctest: +SKIP
    >>> cb.record.path                                                          # doctest: +SKIP

The record is written when training begins (`running`), after every epoch, and at the end
(`completed`); a process that exits while the record still says `running` marks it `interrupted`.
Building and writing the record is `keras_repro.record_writer.RunWriter`'s job; this module imports
Keras, so `keras_repro.fit` imports it only after the policy is applied.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import keras

from keras_repro import model_info
from keras_repro.data import fingerprint
from keras_repro.record import RunRecord
from keras_repro.record_writer import RunWriter, default_run_dir

__all__ = ["ReproCallback", "default_run_dir"]


class ReproCallback(keras.callbacks.Callback):
    """Records a run: policy, environment, code, data fingerprints, hyperparameters, weights, metrics.

    Args:
        run_dir: where `<run_id>/run.json` goes (default: `--repro_dir`, `$KERAS_REPRO_DIR`, `runs`).
        x, y, sample_weight, validation_data: the fit inputs, for their fingerprints (optional).
        hyperparameters: any dict worth recording (it is compared by `keras-repro diff`).
        fit_args: the `model.fit` arguments to record (keras_repro.fit fills these in).
        writer: the `RunWriter` of this run (keras_repro.fit passes the one it started); None: one is
            made when training begins, with the process's configured policy.
        data: precomputed data fingerprints (instead of x, y, ...).
        order_source: epoch -> that epoch's sample order summary, for inputs whose order keras_repro sets.
        dataset_tap: a `DatasetTap` on a user's tf.data input (its first elements go into the record).
        resumed: the checkpointed record a resumed fit continues.
        source: the `x` the user gave to fit (default `x`), named as the data source by
            `keras-repro check --locate` (docs/locate.md).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        x: Any = None,
        y: Any = None,
        sample_weight: Any = None,
        validation_data: Any = None,
        hyperparameters: Mapping[str, Any] | None = None,
        fit_args: Mapping[str, Any] | None = None,
        writer: RunWriter | None = None,
        data: Mapping[str, Any] | None = None,
        order_source: Callable[[int], Any] | None = None,
        dataset_tap: Any = None,
        resumed: Mapping[str, Any] | None = None,
        source: Any = None,
    ) -> None:
        super().__init__()
        self.writer = writer if writer is not None else RunWriter(run_dir, fit_args=fit_args)
        self._inputs = {"x": x, "y": y, "sample_weight": sample_weight, "validation_data": validation_data}
        self._user_hyperparameters = dict(hyperparameters) if hyperparameters else None
        self._data_fingerprints = dict(data) if data is not None else None
        self._order_source = order_source
        self._dataset_tap = dataset_tap
        self._resumed = resumed
        self._resume_steps = 0
        self._epoch_steps = 0
        self.source = source if source is not None else x  # what `check --locate` names as the data source
        self.step_inputs: Any = None  # keras_repro.input_digest.StepInputs: per-step input digests (data.steps)
        self.locator: Any = None  # keras_repro.locate_capture.Locator, in `check --locate` reruns only

    # The record (kept by the writer) ------------------------------------------------------------------
    @property
    def run_dir(self) -> str:
        return self.writer.run_dir

    @property
    def path(self) -> Path | None:
        return self.writer.path

    @property
    def applied(self) -> dict[str, Any] | None:
        """The record's `applied` section (callbacks add warnings to it)."""
        return self.writer.applied

    @property
    def announce(self) -> bool:
        """Whether `keras-repro check` sees this record (False for non-chief workers)."""
        return self.writer.announce

    @property
    def record(self) -> RunRecord | None:
        """The run record as last written (None before training began)."""
        return self.writer.record

    def start(self) -> None:
        """Creates the run directory and writes the `running` record (called by on_train_begin)."""
        self.writer.start()

    def finish(self, status: str, error: BaseException | str | None = None) -> None:
        """Marks the record `completed`, `failed` or `interrupted` and writes it."""
        self._flush_step_inputs()
        self.writer.finish(status, error)

    def _flush_step_inputs(self) -> None:
        """Appends the input digests not yet in `data.steps` (keras_repro/input_digest.py)."""
        data = (self.writer.data or {}).get("data")
        steps = data.get("steps") if isinstance(data, dict) else None
        if steps is not None and self.step_inputs is not None:
            try:
                self.step_inputs.flush(steps)
            except Exception:  # a record must still be written when the runtime is shutting down
                pass

    @property
    def steps_in_epoch(self) -> int:
        """Training steps recorded in the current epoch so far."""
        return self._epoch_steps

    # Keras hooks --------------------------------------------------------------------------------------
    def set_model(self, model: Any) -> None:
        super().set_model(model)
        # Per-step input digests (data.steps): Keras calls set_model before it makes the train function.
        from keras_repro.input_digest import StepInputs

        self.step_inputs = StepInputs.install(model)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.writer.start()
        model = self.model
        self.writer.attach_model(model)
        params = dict(getattr(self, "params", None) or {})
        fit_args = dict(self.writer.fit_args) if self.writer.fit_args is not None else {}
        fit_args.setdefault("epochs", params.get("epochs"))
        fit_args.setdefault("steps", params.get("steps"))
        summary = model_info.model_summary(model)
        summary["initial_weights_sha256"] = model_info.weights_sha256(model)
        summary["final_weights_sha256"] = None
        self.writer.set_sections(fit=fit_args, hyperparameters=model_info.hyperparameters(model, self._user_hyperparameters),
                                 model=summary, data=self._fingerprints())
        from keras_repro import locate_capture  # active only in `keras-repro check --locate` reruns

        self.locator = locate_capture.Locator.from_environment(self)
        if self._resumed is not None:
            self._continue(self._resumed)
        self.writer.write()

    def _fingerprints(self) -> dict[str, Any]:
        if self._data_fingerprints is not None:
            data = dict(self._data_fingerprints)
        else:
            data = {
                "x": fingerprint(self._inputs["x"]),
                "y": fingerprint(self._inputs["y"]),
                "sample_weight": fingerprint(self._inputs["sample_weight"]),
                "validation": fingerprint(self._inputs["validation_data"]),
            }
        data.setdefault("order", None)
        data["steps"] = [] if self.step_inputs is not None and self.step_inputs.reason is None else None
        return data

    def _continue(self, old: Mapping[str, Any]) -> None:
        """A resumed fit: carry the metric history, epoch orders, the dataset's first elements and the
        initial weights of the checkpointed record, so that the record reads like one that never stopped."""
        record = self.writer.data
        assert record is not None
        record["metrics"] = copy.deepcopy(old["metrics"])
        record["model"]["initial_weights_sha256"] = (old.get("model") or {}).get("initial_weights_sha256")
        old_data = old.get("data") or {}
        record["data"]["order"] = copy.deepcopy(old_data.get("order"))
        if isinstance(old_data.get("steps"), list) and record["data"].get("steps") is not None:
            record["data"]["steps"] = copy.deepcopy(old_data["steps"])
        old_x, new_x = old_data.get("x"), record["data"].get("x")
        if isinstance(old_x, dict) and isinstance(new_x, dict) and old_x.get("first_elements"):
            new_x["first_elements"] = old_x["first_elements"]
            new_x["first_elements_sha256"] = old_x.get("first_elements_sha256")
        done = old["metrics"].get("steps_per_epoch") or []
        self._resume_steps = len(old["metrics"].get("steps") or []) - sum(done)  # mid-epoch: steps already in it

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch_steps, self._resume_steps = self._resume_steps, 0
        record = self.writer.data
        if self._order_source is not None and record is not None:
            order = record["data"].get("order") or []
            if not (order and isinstance(order[-1], dict) and order[-1].get("epoch") == epoch):  # resumed mid-epoch
                order.append(self._order_source(epoch))
            record["data"]["order"] = order

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.locator is not None and self.writer.data is not None:  # `check --locate` reruns only
            self.locator.before_step(len(self.writer.data["metrics"]["steps"]))

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        record = self.writer.data
        if record is None:
            return
        loss = (logs or {}).get("loss")
        self.writer.add_step(float(loss) if loss is not None else None)
        steps = record["data"].get("steps")
        if steps is not None:  # the digests of the batches trained on (read from the graph every few hundred steps)
            self.step_inputs.after_step(steps)
        self._epoch_steps += 1

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        record = self.writer.data
        if record is None:
            return
        self._flush_step_inputs()
        self.writer.end_epoch(logs or {}, self._epoch_steps)
        x_fingerprint = record["data"].get("x")
        if self._dataset_tap is not None and isinstance(x_fingerprint, dict) and not x_fingerprint.get("first_elements"):
            x_fingerprint.update(self._dataset_tap.summary())
        self.writer.write()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.writer.started:
            self.finish("completed")
