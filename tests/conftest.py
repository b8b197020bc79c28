"""Shared fixtures: a tiny random pipeline saved as a model folder (as the app and the CLI load one)."""

import pytest
from tiny_models import tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a saved tiny pipeline (the app's SMLM_DIFFUSERS_MODEL in tests)."""
    folder = tmp_path_factory.mktemp("tiny_model") / "smlm-tiny"
    tiny_pipeline(threshold=0.1).save_pretrained(folder)
    return folder
