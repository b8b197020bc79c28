"""The Hugging Face Hub: loading pipelines by repo id, pushing folders and Spaces, model cards.

- :mod:`~smlm_diffusers.hub.loading`: :func:`resolve_pretrained`, a local folder for a path or a repo id
  (all that the pipeline imports);
- :mod:`~smlm_diffusers.hub.push`: :func:`push_folder` and the upload plan of a model repo or a Space;
- :mod:`~smlm_diffusers.hub.card`: the model card, rendered from the template shipped in
  ``smlm_diffusers/hub/templates/`` (package data), with the tables of :mod:`~smlm_diffusers.hub.tables`;
- :mod:`~smlm_diffusers.hub.cli`: ``python -m smlm_diffusers.hub card | push``.
"""

from .card import (CARD_TAGS, CARD_TEMPLATE, PAPER_SCHEDULE, card_context, render_model_card, schedule_comparison,
                   write_model_card)
from .cli import DEFAULT_RESULTS, main
from .loading import IGNORE_PATTERNS, resolve_pretrained
from .push import (SPACE_FOLDERS, SPACE_IGNORE_PATTERNS, SPACE_ROOT_FILES, files_to_upload, push_folder, space_files,
                   space_readme, upload_plan)
from .tables import benchmark_tables, fmt, markdown_table, simulation_table, training_table

__all__ = [
    "CARD_TAGS", "CARD_TEMPLATE", "DEFAULT_RESULTS", "IGNORE_PATTERNS", "PAPER_SCHEDULE", "SPACE_FOLDERS",
    "SPACE_IGNORE_PATTERNS", "SPACE_ROOT_FILES", "benchmark_tables", "card_context", "files_to_upload", "fmt", "main",
    "markdown_table", "push_folder", "render_model_card", "resolve_pretrained", "schedule_comparison",
    "simulation_table", "space_files", "space_readme", "training_table", "upload_plan", "write_model_card",
]
