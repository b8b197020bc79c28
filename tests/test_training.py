"""Both training scripts end to end through `accelerate launch` (tiny configs, a few steps), with resume."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.training import load_config
from smlm_diffusers.training.data import SimulationRanges, make_training_batch

ROOT = Path(__file__).resolve().parents[1]


def launch(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
           str(ROOT / "train" / script), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def deepstorm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepstorm")
    launch("train_deepstorm.py", "--config", "train/configs/deepstorm_tiny.yaml", "--output_dir", str(out))
    return out


@pytest.mark.slow
def test_deepstorm_training_runs_and_resumes(deepstorm_run):
    out = deepstorm_run
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5, 6]
    assert log["loss"].notna().all() and "jaccard_d1" in log
    assert (out / "checkpoints" / "checkpoint-6").is_dir()
    model = sd.DeepSTORM.from_pretrained(out / "kde_net")
    assert model.config.context_channels == 8
    assert (out / "kde_net" / "train_config.yaml").is_file() and (out / "kde_net" / "train_log.png").is_file()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    res = launch("train_deepstorm.py", "--config", "train/configs/deepstorm_tiny.yaml", "--output_dir", str(out),
                 "--max_steps", "8", "--resume_from_checkpoint", "latest")
    assert "resumed from" in res.stdout + res.stderr and "checkpoint-6" in res.stdout + res.stderr
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5, 6, 7, 8]  # continued, not restarted
    after = sd.DeepSTORM.from_pretrained(out / "kde_net").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_ddpm_training_runs_and_resumes(deepstorm_run, tmp_path):
    out = tmp_path / "ddpm"
    common = ["--config", "train/configs/ddpm_tiny.yaml", "--output_dir", str(out),
              "--kde_net_path", str(deepstorm_run / "kde_net")]
    launch("train_ddpm.py", *common)
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    res = launch("train_ddpm.py", *common, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    assert "resumed from" in res.stdout + res.stderr
    assert list(pd.read_csv(out / "train_log.csv")["step"]) == [1, 2, 3, 4, 5, 6]
    assert any((out / "samples").glob("val_step*.png"))
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    frames, _ = sd.simulate(n_frames=1, shape=(12, 12), seed=0)
    o = pipe(frames, num_samples=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert o.samples.shape == (1, 2, 48, 48)


@pytest.mark.slow
def test_camera_layout_ddpm_trains_through_accelerate_and_resumes(deepstorm_run, tmp_path):
    """v2: the UNet at camera resolution (pixel-unshuffled KDE, 16 + 16 + 1 channels in, 16 out), pooled pairs."""
    out = tmp_path / "ddpm_v2"
    common = ["--config", "train/configs/ddpm_v2_tiny.yaml", "--output_dir", str(out),
              "--kde_net_path", str(deepstorm_run / "kde_net")]
    launch("train_ddpm.py", *common)
    res = launch("train_ddpm.py", *common, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    assert "resumed from" in res.stdout + res.stderr and "checkpoint-4" in res.stdout + res.stderr
    assert list(pd.read_csv(out / "train_log.csv")["step"]) == [1, 2, 3, 4, 5, 6]
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(out / "pipeline")
    assert (pipe.unet.config.in_channels, pipe.unet.config.out_channels) == (33, 16)
    assert pipe.config.default_inference_steps == 2
    pipe.set_progress_bar_config(disable=True)
    frames, _ = sd.simulate(n_frames=1, shape=(12, 20), density=3.0, seed=0)
    o = pipe(frames, num_samples=2, generator=torch.Generator().manual_seed(0))
    assert o.samples.shape == (1, 2, 48, 80)


def test_pair_pool_crops_are_consistent_across_grids():
    """Crops of the pair pool cut the KDEs and the frame at the same place, with every symmetry."""
    from smlm_diffusers.training.pairs import crop_pairs

    gen = torch.Generator().manual_seed(0)
    frame = torch.rand(5, 1, 10, 10)
    # a KDE that is the frame repeated 4x4: any crop or symmetry must keep it so
    kde = frame.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    y, y_hat, f = crop_pairs(kde, kde.clone(), frame, crop_px=8, factor=4, edge_px=2, generator=gen, augment=True)
    assert y.shape == (5, 1, 32, 32) and f.shape == (5, 1, 8, 8)
    expanded = f.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    inside = y > -1.0  # outside the patch the KDE is padded with the empty level, the frame with 0
    assert torch.equal(y[inside], expanded[inside]) and torch.equal(y, y_hat)
    assert torch.all(f[~inside[..., ::4, ::4]] == 0.0)
    with pytest.raises(ValueError, match="does not fit"):
        crop_pairs(kde, kde, frame, crop_px=16, factor=4, edge_px=2, generator=gen)


def test_training_data_matches_the_simulator_and_kde():
    ranges = SimulationRanges(patch_size=16, density=(2.0, 2.0), background=(20.0, 20.0),
                              photons=(1000.0, 1000.0), background_variation=0.0)
    batch = make_training_batch(ranges, 4, torch.Generator().manual_seed(0))
    assert batch.frames_adu.shape == (4, 16, 16) and batch.kde_unit.shape == (4, 1, 64, 64)
    assert float(batch.kde_unit.min()) >= -1.0 - 1e-6
    # KDE mass in the patch ~ number of emitters whose centres are inside it
    mass = sd.KDEScaling(1.0).from_unit(batch.kde_unit).sum(dim=(1, 2, 3))
    assert torch.all(mass > 0)


def test_config_rejects_unknown_keys(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_deepstorm", ROOT / "train" / "train_deepstorm.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_deepstorm", script)  # dataclasses resolve annotations through it
    spec.loader.exec_module(script)
    DeepSTORMTrainConfig = script.DeepSTORMTrainConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 4\ndata:\n  pach_size: 16\n")
    with pytest.raises(ValueError, match="pach_size"):
        load_config(DeepSTORMTrainConfig, bad)
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_config(DeepSTORMTrainConfig, bad)



def _script_config(name: str, cls: str):
    """The config dataclass of a training script (train/ is not a package)."""
    import importlib.util

    if not hasattr(sys.modules.get(name), cls):
        spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses resolve annotations through it
        spec.loader.exec_module(sys.modules[name])
    return getattr(sys.modules[name], cls)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_camera_block_and_old_flat_keys_load_alike(tmp_path):
    import yaml

    from smlm_diffusers.training.config import config_to_dict

    flat = _write(tmp_path / "flat.yaml", "patch_size: 16\npixel_size_nm: 100\ncamera_offset: 400.0\n"
                                          "camera_gain: 2.5\nread_noise: 3.0\nkde_sigma: 1.0\n")
    block = _write(tmp_path / "block.yaml", "patch_size: 16\n"
                                            "camera: {pixel_size_nm: 100, offset: 400.0, gain: 2.5, read_noise: 3.0}\n")
    old, new = load_config(SimulationRanges, flat), load_config(SimulationRanges, block)
    assert old == new
    assert new.camera == sd.Camera(pixel_size_nm=100.0, offset=400.0, gain=2.5, read_noise=3.0)
    # the names code used before the block still read (read-only)
    assert (new.pixel_size_nm, new.camera_offset, new.camera_gain, new.read_noise) == (100.0, 400.0, 2.5, 3.0)
    # a partial block or a partial set of flat keys: the rest is the paper's camera
    assert load_config(SimulationRanges, _write(tmp_path / "p.yaml", "read_noise: 2.0\n")).camera == \
        load_config(SimulationRanges, _write(tmp_path / "q.yaml", "camera: {read_noise: 2.0}\n")).camera == \
        sd.Camera(read_noise=2.0)

    both = _write(tmp_path / "both.yaml", "camera: {offset: 100.0}\nread_noise: 1.6\ncamera_gain: 1.0\n")
    with pytest.raises(ValueError, match=r"camera: block or as the old flat keys \['camera_gain', 'read_noise'\]"):
        load_config(SimulationRanges, both)
    typo = _write(tmp_path / "typo.yaml", "camera: {readnoise: 2.0}\n")
    with pytest.raises(ValueError, match=r"typo.yaml.camera: unknown camera keys \['readnoise'\]"):
        load_config(SimulationRanges, typo)

    # saved configs carry the block, and load back to the same ranges
    cls = _script_config("train_ddpm", "DDPMTrainConfig")
    cfg = load_config(cls, _write(tmp_path / "ddpm.yaml", yaml.safe_dump({"data": yaml.safe_load(flat.read_text())})))
    saved = config_to_dict(cfg)
    assert saved["data"]["camera"] == new.camera.to_dict()
    assert not {"pixel_size_nm", "camera_offset", "camera_gain", "read_noise"} & set(saved["data"])
    again = load_config(cls, _write(tmp_path / "saved.yaml", yaml.safe_dump(saved, sort_keys=False)))
    assert again == cfg and config_to_dict(again) == saved


def test_shipped_flat_train_configs_load_into_the_camera():
    import yaml

    paths = sorted((ROOT / "pretrained").glob("*/*/train_config.yaml"))
    assert paths
    for path in paths:
        cls = _script_config(*(("train_ddpm", "DDPMTrainConfig") if path.parent.name == "unet"
                               else ("train_deepstorm", "DeepSTORMTrainConfig")))
        data = yaml.safe_load(path.read_text())["data"]
        cfg = load_config(cls, path)
        if "camera" not in data:  # the format these folders were written in
            assert cfg.data.camera == sd.Camera(**{"pixel_size_nm": data.get("pixel_size_nm", 108.0),
                                                   "offset": data.get("camera_offset", 100.0),
                                                   "gain": data.get("camera_gain", 1.0),
                                                   "read_noise": data.get("read_noise", 1.6)}), path


def test_camera_mismatch_with_deepstorm_names_the_fields():
    from types import SimpleNamespace

    from smlm_diffusers.training.data import check_kde_net_optics

    def kde_net(kde_sigma=1.0, **camera):
        return SimpleNamespace(camera=sd.Camera(**camera), config=SimpleNamespace(kde_sigma=kde_sigma))

    ranges = SimulationRanges(camera=sd.Camera(pixel_size_nm=100.0, read_noise=3.0))
    check_kde_net_optics(ranges, kde_net(pixel_size_nm=100.0 * (1 + 1e-9), read_noise=3.0))  # float tolerance
    with pytest.raises(ValueError) as err:
        check_kde_net_optics(ranges, kde_net(pixel_size_nm=108.0, read_noise=3.0, kde_sigma=1.5))
    msg = str(err.value)
    assert "data.camera.pixel_size_nm = 100 (DeepSTORM: 108)" in msg and "data.kde_sigma = 1 (DeepSTORM: 1.5)" in msg
    assert "read_noise" not in msg and "offset" not in msg
    assert ranges.camera.isclose(sd.Camera(pixel_size_nm=100.0 + 1e-7, read_noise=3.0))
    assert ranges.camera.differences(sd.Camera()) == {"pixel_size_nm": (100.0, 108.0), "read_noise": (3.0, 1.6)}


def _config(tmp_path: Path, base: str, **changes) -> str:
    """A copy of a training config with top-level keys changed (a nested dict replaces its key's)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "train" / "configs" / base).read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        elif isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = cfg[key] | value
        else:
            cfg[key] = value
    path = tmp_path / f"changed_{base}"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_saved_weights_with_the_new_optics(deepstorm_run, tmp_path):
    source = deepstorm_run / "kde_net"
    # learning rate 0: the fine-tuned weights must be exactly the saved ones, the camera the new one
    config = _config(tmp_path, "deepstorm_tiny.yaml", model=None, init_from=str(source), learning_rate=0.0,
                     max_steps=1, data={"pixel_size_nm": 100.0, "sigma_px": [1.0, 1.2], "read_noise": 3.0})
    launch("train_deepstorm.py", "--config", config, "--output_dir", str(tmp_path / "ft"))
    tuned = sd.DeepSTORM.from_pretrained(tmp_path / "ft" / "kde_net")
    saved = sd.DeepSTORM.from_pretrained(source)
    assert tuned.config.pixel_size_nm == 100.0 and tuned.config.read_noise == 3.0
    assert tuned.config.psf_sigma_px == pytest.approx(1.1) and tuned.config.context_channels == 8
    # (the BatchNorm running statistics do move: they are buffers, not trained weights)
    for (name, a), b in zip(saved.named_parameters(), tuned.parameters()):
        assert torch.equal(a, b), name

    both = _config(tmp_path, "deepstorm_tiny.yaml", init_from=str(source))
    cmd = [sys.executable, str(ROOT / "train" / "train_deepstorm.py"), "--config", both, "--output_dir",
           str(tmp_path / "both")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode != 0 and "either model" in res.stderr


def test_install_weights_continues_the_log_and_replaces_the_unet_in_place(tmp_path):
    """train/install_weights.py: a sitting's UNet replaces the folder's (same file), the log continues
    with offset steps and a sitting column, each earlier sitting's config is kept beside the new one."""
    import importlib.util

    import pandas as pd
    from safetensors.torch import load_file
    from tiny_models import tiny_pipeline

    spec = importlib.util.spec_from_file_location("install_weights", Path(__file__).parents[1] / "train" / "install_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    folder, run = tmp_path / "shipped", tmp_path / "run"
    torch.manual_seed(0)
    tiny_pipeline(in_channels=3).save_pretrained(folder)
    torch.manual_seed(1)
    tiny_pipeline(in_channels=3).save_pretrained(run / "pipeline")
    pd.DataFrame({"step": [50, 100], "loss": [0.5, 0.4]}).to_csv(folder / "unet" / "train_log.csv", index=False)
    (folder / "unet" / "train_config.yaml").write_text("sitting: 1\n")
    pd.DataFrame({"step": [50, 100, 150], "loss": [0.3, 0.2, 0.1]}).to_csv(run / "train_log.csv", index=False)
    (run / "train_config.yaml").write_text("sitting: 2\n")
    mod.main([str(run), str(folder)])
    weights = "diffusion_pytorch_model.safetensors"
    a, b = load_file(folder / "unet" / weights), load_file(run / "pipeline" / "unet" / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = pd.read_csv(folder / "unet" / "train_log.csv")
    assert list(log["step"]) == [50, 100, 150, 200, 250] and list(log["sitting"]) == [1, 1, 2, 2, 2]
    assert (folder / "unet" / "train_config_sitting1.yaml").read_text() == "sitting: 1\n"
    assert (folder / "unet" / "train_config.yaml").read_text() == "sitting: 2\n"
    assert (folder / "unet" / "train_log.png").is_file()
    # a third sitting: the second's config is kept too
    (run / "train_config.yaml").write_text("sitting: 3\n")
    mod.main([str(run), str(folder)])
    assert list(pd.read_csv(folder / "unet" / "train_log.csv")["sitting"]) == [1, 1, 2, 2, 2, 3, 3, 3]
    assert (folder / "unet" / "train_config_sitting1.yaml").read_text() == "sitting: 1\n"
    assert (folder / "unet" / "train_config_sitting2.yaml").read_text() == "sitting: 2\n"
    assert (folder / "unet" / "train_config.yaml").read_text() == "sitting: 3\n"
    other = tmp_path / "other"
    torch.manual_seed(2)
    tiny_pipeline(in_channels=2).save_pretrained(other / "pipeline")
    (other / "train_log.csv").write_text("step,loss\n1,1\n")
    with pytest.raises(SystemExit, match="architecture"):
        mod.main([str(other), str(folder)])


def test_held_out_loss_is_paired_and_matches_the_closed_form(tmp_path):
    """train/eval_ddpm_loss.py: the same held-out crops, noise and levels for every model; a UNet that
    outputs zeros scores mean(v^2) of those crops, v = sqrt(g) eps - sqrt(1 - g) r0 computed here."""
    import importlib.util

    from tiny_models import tiny_pipeline

    spec = importlib.util.spec_from_file_location("eval_ddpm_loss", Path(__file__).parents[1] / "train" / "eval_ddpm_loss.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    random = tiny_pipeline(in_channels=3, layout="camera")
    random.save_pretrained(tmp_path / "random")
    zero = tiny_pipeline(in_channels=3, layout="camera")  # the same DeepSTORM (same seed)
    torch.nn.init.zeros_(zero.unet.conv_out.weight)
    torch.nn.init.zeros_(zero.unet.conv_out.bias)
    zero.save_pretrained(tmp_path / "zero")
    cfg = load_config(mod.DDPMTrainConfig, Path(__file__).parents[1] / "train" / "configs" / "ddpm_v2_tiny.yaml", {})
    table = mod.evaluate_models([str(tmp_path / "random"), str(tmp_path / "zero")], cfg, 24, seed=5)
    assert table.loc[0, "diff_from_first"] == 0.0
    y, y_hat, _, gamma, _ = mod.held_out_batch(cfg, zero.kde_net, sd.GammaDDPMScheduler(**cfg.scheduler), 24, 5)
    r0 = torch.nn.functional.pixel_unshuffle(y - y_hat, 4)
    noise = torch.randn(r0.shape, generator=torch.Generator().manual_seed(6))
    g = gamma.view(-1, 1, 1, 1)
    v = g.sqrt() * noise - (1 - g).sqrt() * r0
    assert table.loc[1, "loss"] == pytest.approx(float((v**2).mean()), rel=1e-5)
    assert table.loc[1, "diff_from_first"] == pytest.approx(table.loc[1, "loss"] - table.loc[0, "loss"], abs=1e-6)
    assert abs(table.loc[1, "diff_from_first"]) > 0  # the random UNet's output is not zero
    torch.manual_seed(3)
    other = tiny_pipeline(in_channels=3, layout="camera")
    other.kde_net = sd.DeepSTORM(context_channels=8, dilations=(1, 2), upsample_channels=(8, 4), prediction_channels=4)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="another DeepSTORM"):
        mod.evaluate_models([str(tmp_path / "random"), str(tmp_path / "other")], cfg, 4, seed=5)
