"""What each stage entry point returns: one frozen dataclass per stage.

A stage that stores a JSON summary (``<run>/<stage>.json``, schemas in :mod:`heatlab.run.summaries`)
returns that summary as a :class:`StageResult` plus what only the caller needs (the table paths, the
no-truth result of an evaluation); :meth:`StageResult.to_record` gives the stored JSON object back and
:meth:`StageResult.from_record` reads one (a field an older summary lacks takes its default, keys no
field names are dropped), so run folders written before these classes still open.

Kept in one module, left of every stage, so a stage, the CLI and the demo import results without
importing each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping


def _when_set() -> Any:
    """A field the stage's summary holds only when it has a value (e.g. the CAM layer, when a CAM method ran)."""
    return field(default=None, metadata={"when_set": True})


@dataclass(frozen=True)
class StageResult:
    """Base: the fields are the stored summary's keys except those named in ``extra``."""

    #: Fields the caller gets that the stored summary does not hold.
    extra: ClassVar[tuple[str, ...]] = ()

    def to_record(self) -> dict[str, Any]:
        """The JSON object the stage stores (a field the stage writes only when it has a value is left out when None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in self.extra and not (getattr(self, f.name) is None and f.metadata.get("when_set"))}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], **extra: Any) -> "StageResult":
        """The result of a stored summary ``record`` (checked by its schema) plus the caller's ``extra`` fields."""
        names = {f.name for f in dataclasses.fields(cls)} - set(cls.extra)
        return cls(**{k: v for k, v in record.items() if k in names}, **extra)


@dataclass(frozen=True)
class TrainResult(StageResult):
    """:func:`heatlab.run.training.train_run`: base and per-branch accuracies (nothing stored as JSON).

    ``branches``: one ``{"branch", "stop_reason", "iterations", "best_shard_acc", "val_acc", "test_acc"}``
    per branch; ``warning``: a sentence when every model is near ``chance_acc``; ``skipped``: the
    units already trained before this call.
    """

    run_dir: str
    base: dict[str, Any]
    branches: list[dict[str, Any]]
    val_acc_mean: float | None
    test_acc_mean: float | None
    chance_acc: float
    warning: str | None = None
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NoTruthResult(StageResult):
    """:func:`heatlab.run.no_truth.no_truth_run` (``no_truth.json``) plus ``table``, the scores' path."""

    extra: ClassVar[tuple[str, ...]] = ("table",)

    split: str
    methods: list[str]
    control: str
    branches: list[str]
    samples: int
    skipped: list[str] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)
    best: dict[str, dict] = field(default_factory=dict)
    complete: bool = False
    table: str = ""


@dataclass(frozen=True)
class AgreementResult(StageResult):
    """:func:`heatlab.run.agreement.write_metric_agreement`: ``table`` (``tables/metric_agreement.parquet``),
    its no-truth ``metrics`` and the ground-truth ``references`` they are compared with (nothing stored as JSON)."""

    table: str
    metrics: list[str]
    references: list[str]


@dataclass(frozen=True)
class EvaluateResult(StageResult):
    """:func:`heatlab.run.evaluate.evaluate_run` (``evaluate.json``) plus ``paths`` (table name -> file)
    and ``no_truth``, the no-truth stage's result (None when no no-truth metric ran)."""

    extra: ClassVar[tuple[str, ...]] = ("paths", "no_truth")

    split: str
    methods: list[str]
    branches: list[str]
    samples: int
    tables: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    input_kind: str | None = None
    truth_kind: str | None = None
    feature_names: list[str] | None = None
    attribution: dict[str, Any] | None = None
    cam_layer: str | None = _when_set()
    cam_layer_rule: str | None = _when_set()
    metrics: dict[str, dict] = field(default_factory=dict)
    complete: bool = False
    paths: dict[str, str] = field(default_factory=dict)
    no_truth: NoTruthResult | None = None


@dataclass(frozen=True)
class AxResult(StageResult):
    """:func:`heatlab.run.ax.ax_run` (``ax.json``) plus ``paths`` (``co``, ``co_gap`` -> file)."""

    extra: ClassVar[tuple[str, ...]] = ("paths",)

    split: str
    methods: list[str]
    branches: list[str]
    samples: int
    holdout_split: str | None = None
    largest_gap: dict[str, Any] | None = None
    space: str | None = None
    normalized: bool = False
    space_note: str | None = None
    compare_method: str | None = None
    cam_layer: str | None = _when_set()
    cam_layer_rule: str | None = _when_set()
    attribution: dict[str, Any] | None = None
    groupings: dict[str, dict] = field(default_factory=dict)
    complete: bool = False
    paths: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GaxStageResult(StageResult):
    """:func:`heatlab.run.gax.gax_run` (``gax/gax.json``): its settings and how many samples reached the target."""

    split: str
    branch: str
    max_steps: int
    snapshot_every: int
    target_co: float
    lr: float
    first_n_correct: int | None = None
    batch_size: int | None = None
    space: str | None = None
    weights_sha256: str | None = None
    similarity_factor: float | None = None
    bias: float | None = None
    eps: float | None = None
    ax: str | None = None
    samples: int = 0
    reached: int = 0
    median_steps_to_target: float | None = None
    random_weights: bool = False
    complete: bool = False


@dataclass(frozen=True)
class LrpFiltersResult(StageResult):
    """:func:`heatlab.run.lrp_filters.lrp_filters_run` (``lrp-filters.json``) plus ``paths`` (table name -> file).

    ``means``: ``{"branch/filter": {score: mean}}``; ``effects``: ``{filter: {metric: {difference, low,
    high, verdict, higher_is_better}}}``; ``verdicts``: ``{filter: {"better"|"worse"|"tied": [metrics]}}``.
    """

    extra: ClassVar[tuple[str, ...]] = ("paths",)

    samples: int
    means: dict[str, dict[str, float | None]]
    split: str = "test"
    composite: str | None = None
    start: str | None = None
    maxpool: str | None = None
    layers: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    effects: dict[str, dict] = field(default_factory=dict)
    verdicts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    design: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    paths: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LrpStudyResult(StageResult):
    """:func:`heatlab.run.lrp_study.lrp_study` (``lrp-study.json``): Mean Power from the first to the last iteration."""

    iterations: int
    final_accuracy: float
    filter_layers: list[str]
    mp_trend: dict[str, dict[str, float]]
    settings: dict[str, Any]
    mp_layers: list[str] = field(default_factory=list)
    mp_points: dict[str, str] = field(default_factory=dict)
    maxpool: str | None = None
    random_weights: bool = False
    complete: bool = False


@dataclass(frozen=True)
class MixerResult(StageResult):
    """:func:`heatlab.run.mixer.mixer_run` (``mixer.json``) plus ``table``, the path of ``tables/mixer.parquet``.

    ``settings``: per setting ``{accuracy_plain, accuracy_masked, ci_low, ci_high, gain, mask_mean, ...}``.
    """

    extra: ClassVar[tuple[str, ...]] = ("table",)

    seeds: int
    train_samples: int
    test_samples: int
    settings: dict[str, dict[str, Any]]
    branch: str | None = None
    n_steps: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    architecture: str | None = None
    input_shape: list[int] = field(default_factory=list)
    n_classes: int | None = None
    confidence: float | None = None
    interval: str | None = None
    label_informed: list[str] = field(default_factory=list)
    leak_test: dict[str, Any] | None = None
    random_weights: bool = False
    complete: bool = False
    table: str = ""


@dataclass(frozen=True)
class ExplainResult(StageResult):
    """:func:`heatlab.run.explain.explain_run`: the record stored in ``attributions.safetensors``'s
    metadata plus ``path`` (that file), ``targets`` and ``predictions`` (one class index per image)."""

    extra: ClassVar[tuple[str, ...]] = ("path", "targets", "predictions")

    ids: list[str]
    sources: list[str]
    methods: list[str]
    signs: dict[str, str]
    class_names: list[str] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    branch: str | None = None
    target: str | int = "predicted"
    model_name: str | None = None
    random_weights: bool = False
    cam_layer: str | None = _when_set()
    cam_layer_rule: str | None = _when_set()
    path: str = ""
    targets: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
