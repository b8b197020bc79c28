"""Shared fixtures: a tiny random pipeline saved as a model folder (as the app and the CLI load one)."""

import pytest
import torch
from tiny_models import tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a saved tiny pipeline (the app's SMLM_DIFFUSERS_MODEL in tests)."""
    folder = tmp_path_factory.mktemp("tiny_model") / "smlm-tiny"
    tiny_pipeline(threshold=0.1).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _modules_are_built_on_the_cpu(request):
    """Fail the test that leaves torch building modules on the meta device (a leaked model-loading patch),
    instead of a later, unrelated test."""
    yield
    device = torch.nn.Linear(1, 1).weight.device
    assert device.type == "cpu", f"{request.node.nodeid} left new modules on the {device} device"
