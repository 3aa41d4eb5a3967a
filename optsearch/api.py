"""The public Python API: what the CLI does, for notebooks and scripts (``import optsearch``).

``search`` runs the search and returns a ``RunResult``; ``pareto`` answers another budget from a
``--method pareto`` result's stored curves; ``evaluate`` measures given or uniform
formats; ``load_result`` reads a result folder; ``export`` and ``verify`` hand a result to hardware
and prove the hand-off. Settings are named as on the command line and in YAML files (``eps``,
``search_fraction``, ``allocation`` ...) and checked by the same schema.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from optsearch.config.schema import DEFAULTS, SETTINGS, check_run_document, run_settings
from optsearch.config.yamlfile import Document
from optsearch.core.errors import DataError, OptsearchError
from optsearch.data import Dataset, to_class_indices
from optsearch.methods.knapsack import OBJECTIVES
from optsearch.results.folder import ResultFolder
from optsearch.results.result import RunResult
from optsearch.settings import RunSettings

if TYPE_CHECKING:
    from optsearch.run.deployed import Verification
    from optsearch.run.evaluation import FormatsEvaluation

ARRAYS_SPEC = "arrays"
"""What a run on in-memory arrays records as its data (there is no file to name)."""


def make_settings(model: str | Path, data: str | Path, **options: Any) -> RunSettings:
    """The typed settings of a run, from the names the CLI and YAML files use, checked by the same
    schema (a ``ConfigError`` lists every problem). ``data_dir`` sets where dataset names are read."""
    data_dir = options.pop("data_dir", None)
    unknown = [name for name in options if name not in SETTINGS]
    if unknown:
        valid = ", ".join(n for n in SETTINGS if n not in ("model", "data"))
        raise OptsearchError(f"unknown setting {unknown[0]!r}; valid settings: {valid}")
    given = {"model": str(model), "data": str(data), **options}
    checked = check_run_document(Document("optsearch.settings()", _yaml_like(given)))
    values = {**DEFAULTS, **checked.values}
    built = run_settings(values)
    if data_dir is not None:
        from dataclasses import replace

        built = replace(built, data=replace(built.data, data_dir=str(data_dir)))
    return built


def _yaml_like(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values as YAML would give them (tuples as lists), so the schema checks them the same way."""
    return {
        k: [_yaml_like_item(v) for v in value] if isinstance(value, tuple) else value
        for k, value in values.items()
    }


def _yaml_like_item(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def search(
    model: Any,
    data: Any,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool | Literal["auto"] = False,
    settings: RunSettings | None = None,
    echo: Callable[[str], None] | None = None,
    **options: Any,
) -> RunResult:
    """Search the formats of ``model`` on ``data`` (``eps=0.01`` and every other setting by name).

    ``out`` is the result folder (default: a new temporary folder, kept). ``resume="auto"`` continues
    an interrupted run into ``out`` when it was started with the same settings and inputs, and
    otherwise starts again, replacing ``out`` (what a script that may be stopped at any time wants).
    ``settings`` gives ready ``RunSettings`` instead of ``options``. Progress goes to stderr;
    ``echo`` receives the run's messages (default: none).
    """
    from optsearch.model.environment import quiet_tensorflow

    quiet_tensorflow()
    from optsearch.run.runner import run

    model_path = _model_path(model)
    dataset, spec = _dataset(data)
    chosen = settings if settings is not None else make_settings(model_path, spec, **options)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="optsearch-")) / "result"
    if resume == "auto":
        from optsearch.run.batch import resume_differences
        from optsearch.run.outdir import partial_dir

        resume = partial_dir(folder).is_dir() and not resume_differences(chosen, folder)
        overwrite = not resume
    return run(
        chosen,
        folder,
        overwrite=overwrite,
        resume=resume,
        echo=echo or (lambda _: None),
        dataset=dataset,
    )


def pareto(
    result: str | Path,
    eps: float,
    *,
    out: str | Path | None = None,
    objective: str | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
) -> RunResult:
    """A verified result for another budget from a ``--method pareto`` result's stored curves: the
    allocation at ``eps`` minimising ``objective`` (default: the result's), verified, repaired and
    refined on the same search set; no curve is measured again. ``out`` defaults to
    ``<result>-eps<eps>`` beside it."""
    from optsearch.model.environment import quiet_tensorflow

    quiet_tensorflow()
    from optsearch.core.files import sha256
    from optsearch.run.pareto_run import StoredCurves
    from optsearch.run.runner import run

    folder = Path(result)
    earlier = ResultFolder.at(folder).read()
    record = earlier.pareto
    if record is None:
        raise OptsearchError(
            f"{folder} was made by --method {earlier.settings.search.method}, which measures no "
            "sensitivity curves: run `optsearch run ... --method pareto` first"
        )
    if not 0.0 < eps <= record.reach * (1 + 1e-9):
        raise OptsearchError(
            f"--eps {eps:g}: the curves of {folder} reach {record.reach:g} (2 x its eps {earlier.eps:g}); "
            f"give an eps in (0, {record.reach:g}], or run again with a larger --eps"
        )
    objective = earlier.settings.search.objective if objective is None else objective
    if objective not in OBJECTIVES:
        raise OptsearchError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    settings = earlier.settings.with_search(eps=eps, objective=objective)
    if settings.data.spec == ARRAYS_SPEC:
        raise OptsearchError(
            f"{folder} was searched on in-memory arrays, which it does not keep: run optsearch.search "
            "again on them with method='pareto' and the new eps"
        )
    if not settings.model.is_file():
        raise OptsearchError(
            f"{settings.model} (the model {folder} was searched on) is not there: run from the folder "
            "the search ran in"
        )
    if sha256(settings.model) != earlier.model.sha256:
        raise OptsearchError(
            f"{settings.model} has changed since {folder} measured its curves (sha256 differs): "
            "run the search again"
        )
    destination = Path(out) if out is not None else folder.with_name(f"{folder.name}-eps{eps:g}")
    return run(
        settings,
        destination,
        overwrite=overwrite,
        echo=echo or (lambda _: None),
        stored=StoredCurves.of(record, str(folder)),
    )


def evaluate(
    model: Any, data: Any, *, bw: int = 8, formats: str | Path | None = None, **options: Any
) -> FormatsEvaluation:
    """Accuracy of ``model`` in float and with uniform ``bw``-bit formats (or the formats of a
    formats.json / result folder) on the search and held-out parts, and the costs. Without a
    ``fold_bn`` option, BatchNorms are folded as the run that wrote ``formats`` folded them."""
    from optsearch.model.environment import quiet_tensorflow

    quiet_tensorflow()
    from optsearch.run.evaluation import evaluate_formats

    model_path = _model_path(model)
    dataset, spec = _dataset(data)
    chosen = make_settings(model_path, spec, **options)
    formats_file = None if formats is None else ResultFolder.at(formats).formats_file
    evaluation, _ = evaluate_formats(
        chosen.model,
        chosen.data,
        bw=bw,
        formats_file=formats_file,
        offset_rule=chosen.search.offset_rule,
        activation_point=chosen.activation_point,
        fold_bn=chosen.fold_bn if "fold_bn" in options else None,
        unsafe_load=chosen.unsafe_load,
        batch_size=chosen.batch_size,
        dataset=dataset,
        confidence=chosen.search.confidence,
    )
    return evaluation


def load_result(path: str | Path) -> RunResult:
    """The ``RunResult`` of a result folder (or its formats.json)."""
    return ResultFolder.at(path).read()


def save(result: RunResult, folder: str | Path) -> Path:
    """Write ``result`` as a result folder (formats.json, formats.csv, report.md, the plots) into
    ``folder`` (created; an existing one is refused). The quantized model is not among them: it is in
    the folder the search wrote (``out=``)."""
    from optsearch.render.files import write_rendered
    from optsearch.run.outdir import atomic_dir

    destination = Path(folder)
    with atomic_dir(destination, overwrite=False) as tmp:
        ResultFolder.at(tmp).write_json(result)
        write_rendered(result, tmp)
    return destination


def export(result: str | Path, target: str, folder: str | Path, **options: Any) -> list[Path]:
    """Export the result folder ``result`` for ``target`` (``hls4ml`` or ``c``) into ``folder``;
    the files written. ``options`` are the exporter's (``input_format``, ``input_range`` ...)."""
    from optsearch.model.environment import quiet_tensorflow

    quiet_tensorflow()
    from optsearch.deploy.exporters import exporter
    from optsearch.run.deployed import load_result as load_deployable
    from optsearch.run.outdir import atomic_dir

    chosen = exporter(target)
    loaded = load_deployable(_result_path(result))
    destination = Path(folder)
    with atomic_dir(destination, overwrite=bool(options.pop("overwrite", False))) as tmp:
        written = chosen.write(loaded.netlist, tmp, loaded.name, str(loaded.path), loaded.recorded, **options)
    return [destination / name for name in written.files]


def verify(
    result: str | Path, data: str | None = None, *, part: str = "all", samples: int | None = None
) -> Verification:
    """Run the integer reference of a result folder against its Keras quantized model."""
    from optsearch.model.environment import quiet_tensorflow

    quiet_tensorflow()
    from optsearch.run.deployed import load_result as load_deployable
    from optsearch.run.deployed import verify_result

    return verify_result(load_deployable(_result_path(result)), data, part, samples)


def _result_path(result: str | Path | RunResult) -> Path:
    if isinstance(result, RunResult):
        raise OptsearchError(
            "pass the folder of the result (the out= of optsearch.search), not the RunResult"
        )
    return Path(result)


def _model_path(model: Any) -> Path:
    """A model file's path; a Keras model object is saved to a temporary ``.keras`` file first."""
    if isinstance(model, str | Path):
        return Path(model)
    if hasattr(model, "save") and hasattr(model, "layers"):
        path = Path(tempfile.mkdtemp(prefix="optsearch-model-")) / f"{model.name or 'model'}.keras"
        model.save(path)
        return path
    raise OptsearchError(f"model must be a .keras/.h5 path or a Keras model, got {type(model).__name__}")


def _dataset(data: Any) -> tuple[Dataset | None, str]:
    """``(arrays as a Dataset, "arrays")`` for ``(x, y)``, else ``(None, the spec)``."""
    if isinstance(data, str | Path):
        return None, str(data)
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise DataError(f"data: {len(x)} samples but {len(y)} labels; give one label per sample")
        return Dataset(x, to_class_indices(y, ARRAYS_SPEC), ARRAYS_SPEC), ARRAYS_SPEC
    raise DataError(f"data must be a .npz path, a dataset name or arrays (x, y), got {type(data).__name__}")
