"""Which mode a pipeline call runs, and what a call that does not say runs.

Three modes, from one folder:

- **DDPM** (``num_samples > 0``): DDPM samples propose configurations where DeepSTORM's molecules are in
  doubt, and the frame's likelihood weighs them (:mod:`smlm_diffusers.localization.configurations`).
- **DeepSTORM + arbitration** (``num_samples=0`` with ``deepstorm_arbitrate``): the same weighing of
  DeepSTORM's molecules against their own pair proposals, no samples (needs ``refine``: the weighing fits
  on the frame).
- **DeepSTORM** (``num_samples=0`` without it): the network's molecules, refined on the frame when
  ``refine`` is on.

A call without ``num_samples`` runs the folder's ``default_num_samples`` (0 when the folder does not say).
The shipped 2D folders say 0 with ``deepstorm_arbitrate`` on: the dense benchmark (README, Benchmarks)
measures DDPM mode equal to DeepSTORM + arbitration in Jaccard and sigma calibration at several times its time
(issue 32), so the default is the faster of the two.
"""

from __future__ import annotations

from dataclasses import dataclass

DDPM, DEEPSTORM_ARBITRATION, DEEPSTORM = "DDPM", "DeepSTORM + arbitration", "DeepSTORM"


@dataclass(frozen=True)
class CallMode:
    """The mode of one call: its number of samples and whether DeepSTORM mode weighs its pair proposals
    (always False in DDPM mode, which weighs them with the samples' proposals)."""

    num_samples: int
    arbitrate: bool

    @property
    def name(self) -> str:
        """``"DDPM"``, ``"DeepSTORM + arbitration"`` or ``"DeepSTORM"`` (the README's dense table's names)."""
        if self.num_samples > 0:
            return DDPM
        return DEEPSTORM_ARBITRATION if self.arbitrate else DEEPSTORM


def call_mode(config, num_samples: int | None = None, arbitrate: bool | None = None,
              refine: bool | None = None) -> CallMode:
    """The mode a call with these arguments runs on a pipeline of this ``config``.

    ``num_samples`` None is the folder's ``default_num_samples``; ``arbitrate`` and ``refine`` None are the
    folder's ``deepstorm_arbitrate`` and ``refine``. The folder's arbitration without ``refine`` is off (a
    folder saved before refinement); an explicit ``arbitrate=True`` without it is an error.
    """
    k = int(config.get("default_num_samples", 0) if num_samples is None else num_samples)
    if k < 0:
        raise ValueError(f"num_samples must be >= 0, got {k}")
    refine = bool(config.get("refine", False) if refine is None else refine)
    if arbitrate and not refine and k == 0:
        raise ValueError("arbitrate=True weighs fits on the frame: it needs refine (this call or folder has it off)")
    wanted = bool(config.get("deepstorm_arbitrate", False) if arbitrate is None else arbitrate)
    return CallMode(k, k == 0 and wanted and refine)
