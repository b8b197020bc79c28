"""Model card, Hub push and Hub loading, offline: a mock Hub on 127.0.0.1 (tests/hub_server.py).

``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` when it is imported, so the
client side runs in subprocesses pointed at the mock server, with their own ``HF_HOME`` and a
dummy token. One subprocess pushes (a pipeline folder, then a Space) and loads the pipeline back
by repo id; a second one, offline with the server unreachable, loads it from the cache and
checks the error for a repo that was never downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from huggingface_hub import ModelCard

from hub_server import MockHub
from tiny_models import tiny_pipeline
from smlm_diffusers import GammaDDPMScheduler
from smlm_diffusers.hub import PAPER_SCHEDULE, main, space_files, space_readme, upload_plan, write_model_card

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPO = "smlm-org/smlm-tiny"
SPACE_REPO = "smlm-org/smlm-demo"

# what a pipeline folder holds besides the saved pipeline, and must never be uploaded
JUNK = ["checkpoints/checkpoint-4/model.safetensors", "checkpoints/checkpoint-4/optimizer.bin",
        "checkpoints/checkpoint-4/random_states_0.pkl", "unet/scaler.pt", "train.log", "__pycache__/x.cpython-311.pyc"]


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random pipeline saved with save_pretrained (meaningless but deterministic outputs)."""
    pipe = tiny_pipeline()
    folder = tmp_path_factory.mktemp("tiny") / "smlm-tiny"
    pipe.save_pretrained(folder)
    return folder


def _with_training_record(folder: Path) -> Path:
    """Add train_config.yaml / train_log.csv where the training scripts write them, plus junk."""
    for sub, config in (("unet", "ddpm.yaml"), ("kde_net", "deepstorm.yaml")):
        cfg = yaml.safe_load((ROOT / "train" / "configs" / config).read_text())
        (folder / sub / "train_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        pd.DataFrame({"step": [1, 2, 3, 4], "loss": [0.5, 0.4, 0.3, 0.25], "lr": [1e-4] * 4,
                      "elapsed_s": [1.0, 2.0, 3.0, 4.5], "jaccard_d1": [np.nan, 0.61, np.nan, 0.7654],
                      "rmse_nm_d1": [np.nan, 30.0, np.nan, 21.5]}).to_csv(folder / sub / "train_log.csv", index=False)
    for junk in JUNK:
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_bytes(b"not for the Hub")
    return folder


@pytest.fixture(scope="module")
def model_dir(tiny_dir, tmp_path_factory) -> Path:
    """A copy of the tiny pipeline with a training record and checkpoint junk (no card yet)."""
    folder = shutil.copytree(tiny_dir, tmp_path_factory.mktemp("model") / "smlm-tiny")
    return _with_training_record(folder)


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory) -> Path:
    """A results.csv with the benchmark's exact columns and known numbers."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.run import RESULT_COLUMNS
    finally:
        sys.path.remove(str(ROOT))
    rows = [
        {"method": "picasso", "group": "isolated", "scenario": "isolated_p200", "layout": "grid", "photons": 200.0,
         "background": 20.0, "sigma_px": 1.0, "n_frames": 40, "jaccard": 0.99532, "precision": 0.998,
         "recall": 0.997, "rmse_nm": 26.9738, "efficiency": 73.02, "crlb_nm": 24.3303, "rmse_crlb_ratio": 1.1087,
         "coverage_1sigma": 0.6214, "z_std": 1.126, "frames_per_s": 455.66, "border_px": 0.0},
        {"method": "smlm-ddpm", "group": "isolated", "scenario": "isolated_p200", "layout": "grid", "photons": 200.0,
         "background": 20.0, "sigma_px": 1.0, "n_frames": 40, "jaccard": 0.9811, "precision": 0.99,
         "recall": 0.99, "rmse_nm": 25.01, "efficiency": 74.6, "crlb_nm": 24.3303, "rmse_crlb_ratio": 1.0279,
         "coverage_1sigma": 0.7001, "z_std": 0.95, "frames_per_s": 3.21, "border_px": 0.0},
        {"method": "picasso", "group": "density", "scenario": "density_4", "layout": "uniform", "photons": 2000.0,
         "background": 20.0, "density": 4.0, "sigma_px": 1.0, "n_frames": 100, "jaccard": 0.3521,
         "precision": 0.9981, "recall": 0.3526, "rmse_nm": 90.9512, "efficiency": -11.71, "crlb_nm": np.nan,
         "rmse_crlb_ratio": np.nan, "coverage_1sigma": 0.145, "z_std": 16.45, "frames_per_s": 74.6,
         "border_px": 0.0},
    ]
    path = tmp_path_factory.mktemp("bench") / "results.csv"
    pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS).to_csv(path, index=False)
    return path


def make_space_root(root: Path) -> tuple[Path, list[str]]:
    """A fake repository root: what a Space needs, and everything it must leave behind."""
    keep = ["app.py", "requirements.txt", "README.md", "smlm_diffusers/__init__.py", "smlm_diffusers/hub.py",
            "smlm_diffusers/models/deepstorm.py", "pretrained/smlm-ddpm-2d/model_index.json",
            "pretrained/smlm-ddpm-2d/unet/config.json",
            "pretrained/smlm-ddpm-2d/unet/diffusion_pytorch_model.safetensors",
            "pretrained/smlm-ddpm-2d/README.md"]
    leave = ["tests/test_app.py", "tests/hub_server.py", "runs/ddpm/pipeline/model_index.json",
             "runs/ddpm/checkpoints/checkpoint-250/optimizer.bin", ".venv/lib/site.py", ".venv/pyvenv.cfg",
             "benchmarks/results/results.csv", "benchmarks/run.py", ".cache/huggingface/token", ".git/HEAD",
             ".pytest_cache/v/cache/nodeids", "model_cards/smlm_pipeline.md", "train/train_ddpm.py", "pyproject.toml",
             "smlm_diffusers.egg-info/PKG-INFO", "smlm_diffusers/__pycache__/hub.cpython-311.pyc",
             "smlm_diffusers/models/__pycache__/deepstorm.cpython-311.pyc",
             "pretrained/smlm-ddpm-2d/checkpoints/checkpoint-1/random_states_0.pkl", "runs_deepstorm.log",
             "pretrained/smlm-ddpm-2d/unet/train.log", "requirements-dev.txt"]
    for rel in keep + leave:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"content of {rel}\n".encode())
    (root / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    (root / "README.md").write_text("# smlm-diffusers\n\nThe project README.\n")
    (root / "pretrained/smlm-ddpm-2d/unet/diffusion_pytorch_model.safetensors").write_bytes(os.urandom(2048))
    return root, sorted(keep)


@pytest.fixture(scope="module")
def hub():
    with MockHub(lfs_patterns=["*.safetensors"]) as server:
        yield server


def client_env(endpoint: str, hf_home: Path, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {
        "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_TOKEN": "hf_dummy", "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_XET": "1",  # the mock Hub speaks git-LFS, not Xet
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost",
        "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    }


def run_client(script: str, env: dict, cwd: Path) -> dict:
    """Run ``script`` in a fresh interpreter; its last stdout line is a JSON report."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"client failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Shared by both clients: the same frames and seed, so outputs compare exactly.
_RUN = """
import json, sys, numpy as np, torch
import smlm_diffusers as sd
frames, _ = sd.simulate(n_frames=2, shape=(12, 12), density=3.0, seed=0)
def run(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(frames, num_samples=2, num_inference_steps=3, min_probability=0.0,
                generator=torch.Generator().manual_seed(7))
"""

PUSH_AND_LOAD = _RUN + """
from huggingface_hub import ModelCard
from smlm_diffusers.hub import main
model_dir, results, space_root, out = __import__("os").environ["ARGS"].split("|")
main(["push", model_dir, "--repo-id", "{model}", "--results", results])
main(["push", model_dir, "--repo-id", "{model}"])          # again: repo exists, nothing changed
main(["push", space_root, "--repo-id", "{space}", "--repo-type", "space"])

local = run(sd.SMLMDiffusionPipeline.from_pretrained(model_dir))
hub_pipe = sd.SMLMDiffusionPipeline.from_pretrained("{model}")
remote = run(hub_pipe)
from diffusers import DiffusionPipeline
generic = DiffusionPipeline.from_pretrained("{model}", trust_remote_code=True)
from smlm_diffusers.hub import resolve_pretrained
snapshot = resolve_pretrained("{model}")
np.savez(out, samples=remote.samples, kde_mean=remote.kde_mean)
card = ModelCard.load("{model}")
print(json.dumps({{
    "snapshot": str(snapshot),
    "same_samples": bool(np.array_equal(local.samples, remote.samples)),
    "same_locs": bool(local.localizations.equals(remote.localizations)),
    "n_locs": len(remote.localizations),
    "generic_class": type(generic).__name__,
    "generic_same": bool(np.array_equal(run(generic).samples, local.samples)),
    "card": card.data.to_dict(),
}}))
""".format(model=MODEL_REPO, space=SPACE_REPO)

OFFLINE = _RUN + """
out = __import__("os").environ["ARGS"]
ref = np.load(out)
pipe = sd.SMLMDiffusionPipeline.from_pretrained("{model}")      # from the cache, no server
errors = []
for repo, kw in (("smlm-org/never-downloaded", {{}}), ("{model}", {{"cache_dir": out + ".empty-cache"}})):
    try:
        sd.SMLMDiffusionPipeline.from_pretrained(repo, **kw)
        errors.append(None)
    except OSError as err:
        errors.append(f"{{type(err).__name__}}: {{err}}")
print(json.dumps({{"same": bool(np.array_equal(run(pipe).samples, ref["samples"])), "errors": errors}}))
""".format(model=MODEL_REPO)


@pytest.fixture(scope="module")
def pushed(hub, model_dir, results_csv, tmp_path_factory):
    """Push the model folder and a Space root to the mock Hub, then load the model back by repo id."""
    work = tmp_path_factory.mktemp("client")
    model_dir = shutil.copytree(model_dir, work / "smlm-tiny")  # the push writes the card into it
    space_root, space_keep = make_space_root(work / "repo-root")
    before = {"model": upload_plan(model_dir), "space": upload_plan(space_root, "space")}
    env = client_env(hub.url, work / "hf_home") | {
        "ARGS": "|".join([str(model_dir), str(results_csv), str(space_root), str(work / "remote.npz")])}
    report = run_client(PUSH_AND_LOAD, env, cwd=work)
    return {"report": report, "work": work, "plan": before, "model_dir": model_dir, "space_root": space_root,
            "space_keep": space_keep}


# -- model card ----------------------------------------------------------------------------------
def test_card_sections_tables_and_metadata(model_dir, results_csv, tmp_path):
    folder = shutil.copytree(model_dir, tmp_path / "smlm-tiny")
    main(["card", str(folder), "--results", str(results_csv), "--repo-id", MODEL_REPO])
    card = ModelCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "diffusers" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-to-image"
    assert {"smlm", "microscopy", "super-resolution", "ddpm"} <= set(meta["tags"])
    text = card.text
    for heading in ("## Intended use and limits", "## Training data", "## Evaluation", "## Deviations from the paper",
                    "## How to use", "## Train your own", "## Citation"):
        assert heading in text
    # optics from kde_net/config.json, simulation ranges from the training configs (not retyped)
    kde = json.loads((folder / "kde_net" / "config.json").read_text())
    assert f"| camera pixel size | {kde['pixel_size_nm']:g} | nm |" in text
    data = yaml.safe_load((ROOT / "train/configs/ddpm.yaml").read_text())["data"]
    lo, hi = data["photons"]
    assert f"| `photons` | photons per emitter | {lo:g} – {hi:g} | {lo:g} – {hi:g} |" in text
    assert "validation `jaccard_d1` (step 4) | 0.7654" in text
    # benchmark tables from results.csv, one per scenario group
    assert "### Isolated emitters: photon sweep" in text and "### Density sweep" in text
    assert "| picasso | 200 | 0.995 | 26.97 | 24.33 | 1.11 | 0.621 | 1.13 | 456 |" in text
    assert "| smlm-ddpm | 200 | 0.981 | 25.01 | 24.33 | 1.03 | 0.700 | 0.95 | 3.21 |" in text
    assert "| picasso | 4 | 0.352 | 0.998 | 0.353 | 90.95 | -11.7 | 0.145 | 16.45 | 74.6 |" in text
    # the schedule deviation: numbers computed by the scheduler, paper vs shipped
    paper = GammaDDPMScheduler(**PAPER_SCHEDULE)
    shipped = GammaDDPMScheduler.from_pretrained(folder / "scheduler")
    assert paper.gamma_T == pytest.approx(0.60, abs=0.01) and paper.prior_kl_bits() == pytest.approx(0.67, abs=0.01)
    assert f"| {paper.gamma_T:.3g} | {paper.prior_kl_bits():.3g} | epsilon on the KDE |" in text
    assert f"| {shipped.gamma_T:.3g} | {shipped.prior_kl_bits():.3g} | v on the residual |" in text
    # both ways to load, and how to train
    assert f'SMLMDiffusionPipeline.from_pretrained("{MODEL_REPO}")' in text
    assert f'DiffusionPipeline.from_pretrained("{MODEL_REPO}", trust_remote_code=True)' in text
    assert "accelerate launch train/train_ddpm.py --config" in text
    # regenerating gives the same card
    first = (folder / "README.md").read_text()
    write_model_card(folder, results=results_csv, repo_id=MODEL_REPO)
    assert (folder / "README.md").read_text() == first


def test_card_without_results_or_training_record(tiny_dir, tmp_path):
    folder = shutil.copytree(tiny_dir, tmp_path / "bare")
    main(["card", str(folder), "--results", str(tmp_path / "missing" / "results.csv")])
    text = (folder / "README.md").read_text()
    assert "No benchmark results were given" in text
    assert f"--results {(tmp_path / 'missing' / 'results.csv').as_posix()}" in text
    assert "python -m benchmarks.run" in text
    assert "not recorded here" in text  # no train_config.yaml in the folder
    assert "<your-org>/bare" in text
    # even a folder stripped of component configs, with a broken training record, renders
    (folder / "kde_net" / "config.json").unlink()
    shutil.rmtree(folder / "scheduler")
    (folder / "unet" / "train_config.yaml").write_text("- not\n- a mapping\n")
    (folder / "unet" / "train_log.csv").write_text("")
    (folder / "kde_net" / "train_config.yaml").write_text("data: {photons: 300}\n")
    (folder / "kde_net" / "train_log.csv").write_text("loss\n0.5\n")
    out = write_model_card(folder, out=tmp_path / "card.md")
    card = ModelCard.load(out)
    assert card.data.library_name == "diffusers"
    assert "optics it was trained for are not recorded" in card.text
    assert "| paper (section 5) | 100 |" in card.text


def test_card_reads_the_camera_block_and_the_old_flat_keys_alike(tiny_dir, tmp_path):
    # shipped folders keep the flat train_config.yaml of their time; new trainings write a camera: block
    texts = {}
    for fmt in ("block", "flat"):
        folder = _with_training_record(shutil.copytree(tiny_dir, tmp_path / fmt / "smlm-tiny"))
        (folder / "kde_net" / "config.json").unlink()  # the optics then come from the training configs too
        for sub in ("unet", "kde_net"):
            path = folder / sub / "train_config.yaml"
            cfg = yaml.safe_load(path.read_text())
            camera = cfg["data"].pop("camera")
            assert camera["offset"] == 100.0
            if fmt == "flat":
                cfg["data"] |= {"pixel_size_nm": camera["pixel_size_nm"], "camera_offset": camera["offset"],
                                "camera_gain": camera["gain"], "read_noise": camera["read_noise"]}
            else:
                cfg["data"]["camera"] = camera
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out = write_model_card(folder, out=tmp_path / f"{fmt}.md")
        texts[fmt] = out.read_text().replace((tmp_path / fmt).as_posix(), "<tmp>")
    assert texts["block"] == texts["flat"]
    assert "| `camera_offset` | camera offset (ADU) | 100 | 100 |" in texts["block"]
    assert "| camera offset | 100 | ADU |" in texts["block"]


# -- dry runs ------------------------------------------------------------------------------------
def _printed_files(capsys) -> list[str]:
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("would upload")
    return [line.strip() for line in lines[1:]]


def test_dry_run_model_folder(model_dir, capsys):
    before = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    main(["push", str(model_dir), "--repo-id", MODEL_REPO, "--dry-run"])
    listed = _printed_files(capsys)
    saved = [f for f in before if f not in JUNK]
    assert listed == sorted(saved + ["README.md"])  # the card is generated before a real push
    assert not any(f.endswith((".bin", ".pkl", ".pt", ".log", ".pyc")) or "checkpoints" in f for f in listed)
    after = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    assert after == before  # a dry run writes nothing


def test_dry_run_space(tmp_path, capsys):
    root, keep = make_space_root(tmp_path / "root")
    main(["push", str(root), "--repo-id", SPACE_REPO, "--repo-type", "space", "--dry-run"])
    assert _printed_files(capsys) == keep
    readme = space_readme(root)
    meta = yaml.safe_load(readme.split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["license"] == "apache-2.0"
    pin = next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("gradio=="))
    assert meta["sdk_version"] == pin.split("==")[1]
    assert readme.rstrip().endswith("The project README.")
    # front matter already in the README wins over the defaults
    (root / "README.md").write_text("---\ntitle: My SMLM demo\nemoji: 🧪\n---\n# body\n")
    meta = yaml.safe_load(space_readme(root).split("---")[1])
    assert meta["title"] == "My SMLM demo" and meta["sdk"] == "gradio"
    (root / "app.py").unlink()
    with pytest.raises(FileNotFoundError, match="app.py"):
        space_files(root)


# -- push and load through the mock Hub --------------------------------------------------------------
@pytest.mark.slow
def test_push_uploads_exactly_the_plan(hub, pushed):
    model_dir = pushed["model_dir"]
    files = hub.files(MODEL_REPO)
    assert sorted(set(files) - {".gitattributes"}) == pushed["plan"]["model"]
    for rel in pushed["plan"]["model"]:  # byte for byte (README.md was written by the push)
        assert files[rel] == (model_dir / rel).read_bytes(), rel
    assert hub.lfs_paths(MODEL_REPO) == {f for f in files if f.endswith(".safetensors")}
    repo = hub.repo(MODEL_REPO)
    # the curated card is its own, last commit; the second push changed nothing
    assert [c.message for c in repo.commits] == ["initial commit", "Upload smlm-diffusers pipeline",
                                                  "Upload model card"]
    assert "README.md" not in repo.commits[1].files
    assert hub.unhandled == []


@pytest.mark.slow
def test_pushed_card_metadata(pushed):
    meta = pushed["report"]["card"]
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "image-to-image"
    assert meta["license"] == "apache-2.0" and "smlm" in meta["tags"]


@pytest.mark.slow
def test_round_trip_same_output(pushed):
    report, model_dir = pushed["report"], pushed["model_dir"]
    assert report["same_samples"] and report["same_locs"] and report["n_locs"] > 0
    assert report["generic_class"] == "SMLMDiffusionPipeline" and report["generic_same"]
    snapshot = Path(report["snapshot"])
    for rel in pushed["plan"]["model"]:
        assert (snapshot / rel).read_bytes() == (model_dir / rel).read_bytes(), rel
    assert not (snapshot / "checkpoints").exists()


@pytest.mark.slow
def test_space_push(hub, pushed):
    files = hub.files(SPACE_REPO, "space")
    assert sorted(set(files) - {".gitattributes"}) == pushed["space_keep"] == pushed["plan"]["space"]
    assert hub.repo(SPACE_REPO, "space").sdk == "gradio"
    readme = files["README.md"].decode()
    assert yaml.safe_load(readme.split("---")[1])["app_file"] == "app.py"
    root = pushed["space_root"]
    for rel in pushed["space_keep"]:
        if rel != "README.md":
            assert files[rel] == (root / rel).read_bytes(), rel


@pytest.mark.slow
def test_offline_uses_cache_and_fails_clearly_without_it(pushed):
    work = pushed["work"]
    # offline, and the endpoint is a closed port: nothing may go out
    env = client_env("http://127.0.0.1:9", work / "hf_home", offline=True) | {"ARGS": str(work / "remote.npz")}
    report = run_client(OFFLINE, env, cwd=work)
    assert report["same"]
    for err in report["errors"]:
        assert err is not None and err.startswith("OSError") and "not cached locally" in err and "HF_HUB_OFFLINE" in err


def test_card_with_public_data_results(tiny_dir, tmp_path):
    folder = shutil.copytree(tiny_dir, tmp_path / "public")
    rows = [{"dataset": "nairr_ld", "method": m, "subset": sub, "n_frames": n, "n_gt": 100, "n_pred": 90,
             "jaccard": j, "rmse_nm": 20.0, "efficiency": 70.0, "coverage_1sigma": cov, "z_std": 1.0,
             "frames_per_s": 50.0}
            for m, sub, n, j, cov in [("picasso", "all", 500, 0.7, 0.4), ("DDPM", "ddpm", 4, 0.9, 0.68)]]
    csv = tmp_path / "public.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    text = write_model_card(folder, results=csv, out=tmp_path / "card.md").read_text()
    assert "benchmarks.public" in text and "Bundled Tubes" in text and "### Public data: `nairr_ld`" in text
    assert "| picasso | 500 | 0.700 | 20.00 | 70.0 | 0.400 | 50 |" in text
    assert "| DDPM | 4 | 0.900 | 20.00 | 70.0 | 0.680 | 50 |" in text


def test_training_table_sums_the_sittings():
    """A log over several sittings (install_weights.py): their count, the steps in all and the
    wall time of every sitting (each restarts its clock), not the 'sitting' column as a metric."""
    import pandas as pd

    from smlm_diffusers.hub.tables import training_table

    log = pd.DataFrame({"step": [50, 100, 150, 200], "loss": [0.4, 0.3, 0.2, 0.1],
                        "elapsed_s": [10.0, 20.0, 5.0, 15.0], "sitting": [1, 1, 2, 2]})
    text = training_table({"ddpm": {"config": {"batch_size": 8}, "log": log}})
    assert "| DDPM | sittings | 2 |" in text and "| DDPM | steps in all | 200 |" in text
    assert "| DDPM | wall time, all sittings (s) | 35 |" in text and "validation `sitting`" not in text
