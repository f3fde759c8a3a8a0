"""`ReproCallback`: writes the run record of a `model.fit` call; `keras_repro.fit` uses it too.

For users who call `model.fit` themselves:

    >>> import keras_repro
    >>> keras_repro.configure(seed=42, mode="bitwise")                          # doctest: +SKIP
    >>> cb = keras_repro.ReproCallback(x=x, y=y, hyperparameters={"arch": "mlp"}) # doctest: +SKIP
    >>> model.fit(x, y, epochs=3, callbacks=[cb])                               # doctest: +SKIP
    >>> cb.record.path                                                          # doctest: +SKIP

The record is written when training begins (`running`), after every epoch, and at the end
(`completed`); a process that exits while the record still says `running` marks it `interrupted`.
"""

from __future__ import annotations

import atexit
import copy
import os
import socket
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping

import keras

from keras_repro import model_info
from keras_repro.data import fingerprint
from keras_repro.environment import capture_code, capture_environment
from keras_repro.policy import ENV_DIR, ENV_RECORDS_FILE
from keras_repro.record import SCHEMA, RECORD_FILE, RunRecord, atomic_write_json, create_run_dir, to_jsonable, utc_now
from keras_repro import runtime

__all__ = ["ReproCallback", "default_run_dir"]

_DEFAULT_RUN_DIR = "runs"


def default_run_dir(run_dir: str | os.PathLike[str] | None = None) -> str:
    """`run_dir` if given, else `--repro_dir`, else `$KERAS_REPRO_DIR`, else `runs`."""
    if run_dir is not None:
        return os.fspath(run_dir)
    flags_module = sys.modules.get("keras_repro.flags")
    if flags_module is not None:
        flag_dir = flags_module.parsed_run_dir()
        if flag_dir:
            return flag_dir
    return os.environ.get(ENV_DIR) or _DEFAULT_RUN_DIR


class ReproCallback(keras.callbacks.Callback):
    """Records a run: policy, environment, code, data fingerprints, hyperparameters, weights, metrics.

    Args:
        run_dir: where `<run_id>/run.json` goes (default: `--repro_dir`, `$KERAS_REPRO_DIR`, `runs`).
        x, y, sample_weight, validation_data: the fit inputs, for their fingerprints (optional).
        hyperparameters: any dict worth recording (it is compared by `keras-repro diff`).
        fit_args: the `model.fit` arguments to record (keras_repro.fit fills these in).
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
    ) -> None:
        super().__init__()
        self.run_dir = default_run_dir(run_dir)
        self._inputs = {"x": x, "y": y, "sample_weight": sample_weight, "validation_data": validation_data}
        self._user_hyperparameters = dict(hyperparameters) if hyperparameters else None
        self._fit_args = dict(fit_args) if fit_args else None
        self.data: dict[str, Any] | None = None  # precomputed fingerprints (keras_repro.fit)
        self.order_source: Callable[[int], Any] | None = None  # epoch -> sample order (array stream)
        self.dataset_tap: Any = None
        self.announce = True  # False for the records of non-chief workers (keras_repro.distribution)
        self.extra: dict[str, Any] = {}  # fields keras_repro.fit adds (resumed_from, ...)
        self.resumed: Mapping[str, Any] | None = None  # the checkpointed record a resumed fit continues
        self._resume_steps = 0
        self.policy: dict[str, Any] | None = None
        self.applied: dict[str, Any] | None = None
        self._data: dict[str, Any] | None = None
        self.path: Path | None = None
        self._epoch_steps = 0
        self._finished = False
        self.source: Any = None  # issue 12: the `x` given to fit, named by `check --locate` (keras_repro.fit sets it)
        self.step_inputs: Any = None  # issue 12: keras_repro.input_digest.StepInputs of the model
        self.locator: Any = None  # issue 12: keras_repro.locate_capture.Locator in `check --locate` reruns

    # The record -------------------------------------------------------------------------------------
    @property
    def record(self) -> RunRecord | None:
        """The run record as last written (None before training began)."""
        if self._data is None:
            return None
        return RunRecord(self._data, self.path)

    def _write(self) -> None:
        assert self._data is not None and self.path is not None
        atomic_write_json(self.path, self._data)

    def start(self) -> None:
        """Creates the run directory and writes the `running` record (called by on_train_begin)."""
        if self._data is not None:
            return
        policy = runtime.configured_policy()
        applied = runtime.configured_applied()
        if self.policy is None:
            self.policy = policy.as_dict() if policy is not None else {"seed": None, "mode": "off", "threads": None}
        if self.applied is None:
            self.applied = applied or {
                "seed": None, "mode": "off", "threads": None, "op_determinism": False, "seeded": [],
                "warnings": ["keras_repro.configure() was not called: nothing was seeded or fixed; recorded only"],
            }
        run_id, directory = create_run_dir(self.run_dir)
        self.path = directory / RECORD_FILE
        flags_module = sys.modules.get("keras_repro.flags")
        flag_values = flags_module.all_flag_values() if flags_module is not None else None
        self._data = {
            "schema": SCHEMA,
            "run_id": run_id,
            "status": "running",
            "started_at": utc_now(),
            "ended_at": None,
            "error": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "resumed_from": None,
            "policy": self.policy,
            "applied": self.applied,
            "environment": capture_environment(),
            "code": capture_code(flag_values),
            "fit": None,
            "hyperparameters": None,
            "model": None,
            "data": None,
            "metrics": {"epochs": [], "steps": [], "steps_per_epoch": []},
        }
        self._data.update(self.extra)
        self._announce()
        _OPEN_RUNS.add(self)

    def _announce(self) -> None:
        """Appends this record's path to $KERAS_REPRO_RECORDS_FILE (how `keras-repro check` finds it)."""
        records_file = os.environ.get(ENV_RECORDS_FILE)
        if not records_file or self.path is None or not self.announce:
            return
        line = (str(self.path.resolve()) + "\n").encode()
        fd = os.open(records_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write with O_APPEND: lines of concurrent runs never interleave
        finally:
            os.close(fd)

    def finish(self, status: str, error: BaseException | str | None = None) -> None:
        """Marks the record `completed`, `failed` or `interrupted` and writes it."""
        if self._data is None or self._finished:
            return
        self._finished = True
        _OPEN_RUNS.discard(self)
        self._flush_step_inputs()  # issue 12
        if self.model is not None and status != "completed":
            try:
                self._data["model"]["final_weights_sha256"] = model_info.weights_sha256(self.model)
            except Exception:
                pass
        self._data["status"] = status
        self._data["ended_at"] = utc_now()
        if error is not None:
            self._data["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._write()

    def _flush_step_inputs(self) -> None:
        """issue 12: appends the input digests not yet in `data.steps` (keras_repro/input_digest.py)."""
        steps = (self._data or {}).get("data", {}) or {}
        steps = steps.get("steps") if isinstance(steps, dict) else None
        if steps is not None and self.step_inputs is not None:
            try:
                self.step_inputs.flush(steps)
            except Exception:  # a record must still be written when the runtime is shutting down
                pass

    # Keras hooks --------------------------------------------------------------------------------------
    def set_model(self, model: Any) -> None:
        super().set_model(model)
        # issue 12: per-step input digests (data.steps); Keras calls set_model before make_train_function.
        from keras_repro.input_digest import StepInputs

        self.step_inputs = StepInputs.install(model)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.start()
        assert self._data is not None
        model = self.model
        params = dict(getattr(self, "params", None) or {})
        fit_args = dict(self._fit_args) if self._fit_args is not None else {}
        fit_args.setdefault("epochs", params.get("epochs"))
        fit_args.setdefault("steps", params.get("steps"))
        self._data["fit"] = to_jsonable(fit_args)
        self._data["hyperparameters"] = model_info.hyperparameters(model, self._user_hyperparameters)
        summary = model_info.model_summary(model)
        summary["initial_weights_sha256"] = model_info.weights_sha256(model)
        summary["final_weights_sha256"] = None
        summary.update(self.extra.get("model_extra", {}))
        self._data["model"] = summary
        self._data.pop("model_extra", None)
        if self.data is not None:
            data = dict(self.data)
        else:
            data = {
                "x": fingerprint(self._inputs["x"]),
                "y": fingerprint(self._inputs["y"]),
                "sample_weight": fingerprint(self._inputs["sample_weight"]),
                "validation": fingerprint(self._inputs["validation_data"]),
            }
        data.setdefault("order", None)
        data["steps"] = [] if self.step_inputs is not None and self.step_inputs.reason is None else None  # issue 12
        self._data["data"] = data
        from keras_repro import locate_capture  # issue 12: only active in `keras-repro check --locate` reruns

        self.locator = locate_capture.Locator.from_environment(self)
        if self.resumed is not None:
            self._continue(self.resumed)
        self._write()

    def _continue(self, old: Mapping[str, Any]) -> None:
        """A resumed fit: carry the metric history, epoch orders, the dataset's first elements and the
        initial weights of the checkpointed record, so that the record reads like one that never stopped."""
        assert self._data is not None
        self._data["metrics"] = copy.deepcopy(old["metrics"])
        self._data["model"]["initial_weights_sha256"] = (old.get("model") or {}).get("initial_weights_sha256")
        old_data = old.get("data") or {}
        self._data["data"]["order"] = copy.deepcopy(old_data.get("order"))
        if isinstance(old_data.get("steps"), list) and self._data["data"].get("steps") is not None:  # issue 12
            self._data["data"]["steps"] = copy.deepcopy(old_data["steps"])
        old_x, new_x = old_data.get("x"), self._data["data"].get("x")
        if isinstance(old_x, dict) and isinstance(new_x, dict) and old_x.get("first_elements"):
            new_x["first_elements"] = old_x["first_elements"]
            new_x["first_elements_sha256"] = old_x.get("first_elements_sha256")
        done = old["metrics"].get("steps_per_epoch") or []
        self._resume_steps = len(old["metrics"].get("steps") or []) - sum(done)  # mid-epoch: steps already in it

    @property
    def steps_in_epoch(self) -> int:
        """Training steps recorded in the current epoch so far."""
        return self._epoch_steps

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch_steps, self._resume_steps = self._resume_steps, 0
        if self.order_source is not None and self._data is not None:
            order = self._data["data"].get("order") or []
            if not (order and isinstance(order[-1], dict) and order[-1].get("epoch") == epoch):  # resumed mid-epoch
                order.append(self.order_source(epoch))
            self._data["data"]["order"] = order

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.locator is not None and self._data is not None:  # issue 12: `check --locate` reruns only
            self.locator.before_step(len(self._data["metrics"]["steps"]))

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._data is None:
            return
        loss = (logs or {}).get("loss")
        self._data["metrics"]["steps"].append(float(loss) if loss is not None else None)
        steps = self._data["data"].get("steps")
        if steps is not None:  # issue 12: the digests of the batches trained on (read every few hundred steps)
            self.step_inputs.after_step(steps)
        self._epoch_steps += 1

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._data is None:
            return
        self._flush_step_inputs()  # issue 12
        metrics = self._data["metrics"]
        metrics["epochs"].append(to_jsonable(dict(logs or {})))
        metrics["steps_per_epoch"].append(self._epoch_steps)
        x_fingerprint = self._data["data"].get("x")
        if self.dataset_tap is not None and isinstance(x_fingerprint, dict) and not x_fingerprint.get("first_elements"):
            x_fingerprint.update(self.dataset_tap.summary())
        self._write()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._data is None:
            return
        self._data["model"]["final_weights_sha256"] = model_info.weights_sha256(self.model)
        self.finish("completed")


# Records still `running` when the interpreter exits (an exception or Ctrl-C escaped model.fit, or
# sys.exit inside a callback) are marked `interrupted`, so no record claims to run forever. A SIGKILL
# leaves `running`; `keras-repro show` reports those as stale when their process is gone.
_OPEN_RUNS: "weakref.WeakSet[ReproCallback]" = weakref.WeakSet()


@atexit.register
def _close_open_runs() -> None:
    for callback in list(_OPEN_RUNS):
        try:
            reason = getattr(sys, "last_value", None)
            callback.finish("interrupted", reason if isinstance(reason, BaseException) else "the process exited during training")
        except Exception:
            pass
