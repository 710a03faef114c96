"""The `dcgan` command as a user runs it: real subprocesses, files on disk, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def dcgan(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run `dcgan ARGS` in cwd the way a user would; DCGAN_TEST_DEVICE is not applied (the CLI's default)."""
    root = str(Path(__file__).resolve().parents[2])  # the checkout, also where the package isn't installed
    env = {**os.environ, "DCGAN_THREADS": "1", "DCGAN_CACHE_DIR": str(cwd / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


TINY = ["--set", "z_dim=8", "--set", "g_channels=8", "--set", "d_channels=8", "--set", "batch_size=16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    dcgan("train", "--dataset", "digits", "--img-size", "32", "--steps", "30", "--out", "runs/a", "--seed", "0",
          "--set", "sample_every=10", "--set", "checkpoint_every=20", *TINY, cwd=root)
    return root


def test_train_writes_the_run_layout(run_dir):
    run = run_dir / "runs" / "a"
    assert (run / "generator.safetensors").exists() and (run / "grid.png").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000020.pt", "step-0000030.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == \
           ["step-0000010.png", "step-0000020.png", "step-0000030.png"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 30 and {"loss_d", "loss_g", "d_real", "d_fake", "eta_seconds"} <= set(lines[-1])


def test_resume_continues_in_its_own_directory(run_dir):
    result = dcgan("train", "--resume", "runs/a/checkpoints/step-0000030.pt", "--steps", "40", cwd=run_dir)
    assert json.loads(result.stdout.splitlines()[-1])["step"] == 40
    assert (run_dir / "runs/a/checkpoints/step-0000040.pt").exists()
    refused = dcgan("train", "--resume", "runs/a/checkpoints/step-0000040.pt", "--steps", "50", "--set",
                    "lr=0.1", cwd=run_dir, check=False)
    assert refused.returncode == 2 and "lr: cannot change on --resume" in refused.stderr


def test_seeded_grids_and_images_are_byte_identical(run_dir):
    gen = "runs/a/generator.safetensors"
    dcgan("sample", "--generator", gen, "--seeds", "0-15", "--grid", "g1.png", cwd=run_dir)
    dcgan("sample", "--generator", gen, "--seeds", "0-15", "--grid", "g2.png", cwd=run_dir)
    assert (run_dir / "g1.png").read_bytes() == (run_dir / "g2.png").read_bytes()
    dcgan("sample", "--generator", gen, "--seeds", "7", "--images", "A", cwd=run_dir)
    dcgan("sample", "--generator", gen, "--seeds", "0-63", "--images", "B", cwd=run_dir)
    assert (run_dir / "A/seed-000007.png").read_bytes() == (run_dir / "B/seed-000007.png").read_bytes()
    assert len(list((run_dir / "B").iterdir())) == 64
    assert (run_dir / "B/seed-000006.png").read_bytes() != (run_dir / "B/seed-000007.png").read_bytes()


def test_truncation_and_interpolation(run_dir):
    gen = "runs/a/generator.safetensors"
    dcgan("sample", "--generator", gen, "--seeds", "0-3", "--grid", "t.png", "--truncation", "0.7", cwd=run_dir)
    dcgan("sample", "--generator", gen, "--interpolate", "3,9", "--frames", "6", "--gif", "i.gif", cwd=run_dir)
    assert (run_dir / "t.png").exists() and (run_dir / "i.gif").read_bytes()[:6] == b"GIF89a"


def _write_folder(root: Path, extra: dict[str, bytes]) -> Path:
    from PIL import Image

    folder = root / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 80, 10, 10)).save(folder / f"{i}.png")
    for name, data in extra.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("case,args,message", [
    ("unknown key", ["--dataset", "digits", "--steps", "5", "--set", "learning_rate=1"],
     "learning_rate: unknown config key"),
    ("bad size", ["--dataset", "digits", "--steps", "5", "--img-size", "48"], "img_size: must be one of 32, 64, 128"),
    ("non-image", ["--dataset", "folder:{root}/imgs", "--steps", "5"], "notes.txt is not an allowed image"),
    ("empty folder", ["--dataset", "folder:{root}/empty", "--steps", "5"], "empty, no image files"),
    ("no work", ["--dataset", "digits"], "give --steps or --epochs"),
])
def test_bad_training_input_is_one_line_and_writes_nothing(tmp_path, case, args, message):
    _write_folder(tmp_path, {"notes.txt": b"not an image"})
    (tmp_path / "empty").mkdir()
    args = [a.replace("{root}", str(tmp_path)) for a in args]
    result = dcgan("train", *args, "--out", "out", *TINY, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_shape_is_one_line(run_dir, tmp_path):
    from core.gan.checkpoint import load_training_state, save_training_state

    state = load_training_state(run_dir / "runs/a/checkpoints/step-0000030.pt")
    state["config"] = state["config"].replace(g_channels=16).to_dict()
    save_training_state(tmp_path / "other.pt", {k: v for k, v in state.items() if k != "format"})
    result = dcgan("train", "--resume", str(tmp_path / "other.pt"), "--steps", "40", "--out", "o", cwd=tmp_path,
                   check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has shape" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_sample_errors_are_one_line(run_dir):
    bad = dcgan("sample", "--generator", "runs/a/checkpoints/step-0000030.pt", "--grid", "x.png", cwd=run_dir,
                check=False)
    assert bad.returncode == 2 and "not a .safetensors generator" in bad.stderr and bad.stderr.count("\n") == 1
    seeds = dcgan("sample", "--generator", "runs/a/generator.safetensors", "--seeds", "9-1", "--grid", "x.png",
                  cwd=run_dir, check=False)
    assert seeds.returncode == 2 and "runs backwards" in seeds.stderr
    assert not (run_dir / "x.png").exists()


def test_train_with_eval_every_prints_scores_and_keeps_the_best(tmp_path):
    result = dcgan("train", "--dataset", "digits", "--img-size", "32", "--steps", "20", "--out", "runs/e",
                   "--set", "eval_every=10", "--set", "eval_num=64", "--set", "sample_every=0", *TINY, cwd=tmp_path)
    summary = json.loads(result.stdout)
    assert summary["best"]["step"] in (10, 20) and Path(tmp_path / summary["best"]["generator"]).exists()
    assert "FID" in result.stderr  # the evaluated steps are reported with their scores
    lines = [json.loads(line) for line in (tmp_path / "runs" / "e" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "fid" in line] == [10, 20]
    assert min(line["fid"] for line in lines if "fid" in line) == summary["best"]["fid"]
