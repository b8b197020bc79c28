"""The evaluation that produces every number in the README and the model cards.

Run it as ``python -m benchmarks.run [--methods picasso,...] [--quick] [--out DIR]``, or from
code::

    from benchmarks import run_benchmark, default_scenarios
    table = run_benchmark(["picasso"], default_scenarios(quick=True))

Methods are registered localizers (:mod:`benchmarks.localizers`); scenarios are small
dataclasses (:mod:`benchmarks.scenarios`). Metrics are exactly docs/conventions.md's, computed by
:func:`smlm_diffusers.localization.evaluate`.
"""

from .localizers import LOCALIZERS, get_localizer, register_localizer
from .scenarios import (
    Scenario,
    default_scenarios,
    density_scenarios,
    isolated_scenarios,
    simulate_scenario,
)


def __getattr__(name):
    # benchmarks.run is imported lazily so that ``python -m benchmarks.run`` does not find
    # it already in sys.modules (runpy warns about that).
    if name in ("RESULT_COLUMNS", "run_benchmark", "simulator_throughput"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LOCALIZERS",
    "RESULT_COLUMNS",
    "Scenario",
    "default_scenarios",
    "density_scenarios",
    "get_localizer",
    "isolated_scenarios",
    "register_localizer",
    "run_benchmark",
    "simulate_scenario",
    "simulator_throughput",
]
