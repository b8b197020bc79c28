"""Remote-code shims: what lets ``diffusers.DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)`` load a folder saved by :class:`~smlm_diffusers.SMLMDiffusionPipeline`.

Diffusers finds a custom class through ``model_index.json``'s ``[module file, class]`` entry
and imports that module from the folder. Each shim module imports the class from the
installed package (no copy of its code) and the diffusers base class that diffusers looks
for in the module's namespace (docs/conventions.md traps: "a component class's module must have
``ModelMixin`` in its namespace").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# entry of model_index.json -> (shim module file, module of the class, class, diffusers base class)
SHIM_MODULES = {
    "_class_name": ("pipeline_smlm", "smlm_diffusers.pipelines.pipeline_smlm", "SMLMDiffusionPipeline",
                    "DiffusionPipeline"),
    "kde_net": ("deepstorm", "smlm_diffusers.models.deepstorm", "DeepSTORM", "ModelMixin"),
    "scheduler": ("scheduling_gamma_ddpm", "smlm_diffusers.schedulers.scheduling_gamma_ddpm", "GammaDDPMScheduler",
                  "SchedulerMixin"),
}

SHIM = '''"""Written by smlm_diffusers' save_pretrained: the class comes from the installed package.

It lets `diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` load
this folder; the code itself is not copied here.
"""

from diffusers import {base}  # noqa: F401  (diffusers resolves the component's base class here)

try:
    from {module} import {cls}  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "This pipeline needs the smlm-diffusers package: `pip install smlm-diffusers` "
        "(or `pip install -e .` in a clone of its repository)."
    ) from err
'''


def write_remote_code(save_directory: str | os.PathLike) -> None:
    """Write the shim modules into a saved pipeline folder and point ``model_index.json`` at them."""
    folder = Path(save_directory)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    for key, (module_file, module, cls, base) in SHIM_MODULES.items():
        if key != "_class_name" and index.get(key, [None])[0] is None:  # an optional component left out
            continue
        target = folder if key == "_class_name" else folder / key
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{module_file}.py").write_text(SHIM.format(module=module, cls=cls, base=base))
        index[key] = [module_file, cls]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
