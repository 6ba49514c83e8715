"""Files from elsewhere never run code: the service reads a bundle as JSON and ONNX only, and
the CLI refuses any checkpoint that is not a plain state dict (torch.load weights_only)."""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO, SMALL_COSREC
from contract.bundle import BundleError, load_bundle
from cosrec.commands.export import export_main
from model import build_model
from training.checkpoint import load_checkpoint, save_checkpoint

UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "torch"}


class Canary:
    """Unpickling this creates `path` (harmless, but proves the file's code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_the_service_imports_nothing_that_unpickles():
    for source in sorted((REPO / "service").glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & UNSAFE_MODULES, f"{source.name}: {ast.unparse(node)}"
        assert "allow_pickle" not in source.read_text(), source.name


def _pickle_bundle(bundle: Path, canary: Path, target: str) -> None:
    payload = pickle.dumps(Canary(canary))
    (bundle / target).write_bytes(payload)
    if target == "model.onnx":  # the checksum matches: only the ONNX parser stands in the way
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["onnx_sha256"] = hashlib.sha256(payload).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("target", ["manifest.json", "model.onnx"])
def test_a_bundle_holding_a_pickle_is_refused_without_running_it(main_bundle, tmp_path, target):
    bundle = tmp_path / "bundle"
    shutil.copytree(main_bundle, bundle)
    canary = tmp_path / "canary"
    _pickle_bundle(bundle, canary, target)
    with pytest.raises(BundleError):
        load_bundle(bundle)
    assert not canary.exists()


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    model = build_model("cosrec", 10, 12, L=5, **SMALL_COSREC)
    path = tmp_path / "good.pt"
    save_checkpoint(path, model)
    return path


def _export(checkpoint: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    status = export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")])
    return status, capsys.readouterr().err


def test_the_cli_refuses_a_checkpoint_that_runs_code(tmp_path, capsys):
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Canary(canary)}, evil)  # a real torch zip holding the payload
    status, err = _export(evil, tmp_path, capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert "not a cosrec checkpoint" in err
    assert not canary.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_the_cli_refuses_a_raw_pickle(tmp_path, capsys):
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Canary(canary)))
    status, err = _export(evil, tmp_path, capsys)
    assert status == 2
    assert err.startswith("cosrec export: error:")
    assert not canary.exists()


def test_the_cli_refuses_a_whole_pickled_module(tmp_path, capsys):
    whole = tmp_path / "module.pt"
    torch.save(build_model("cosrec", 10, 12, L=5, **SMALL_COSREC), whole)
    status, err = _export(whole, tmp_path, capsys)
    assert status == 2
    assert "not a cosrec checkpoint" in err


def test_the_cli_refuses_a_dict_that_is_not_a_checkpoint(checkpoint, tmp_path, capsys):
    content = torch.load(checkpoint, weights_only=True)
    content["extra"] = 1
    odd = tmp_path / "odd.pt"
    torch.save(content, odd)
    status, err = _export(odd, tmp_path, capsys)
    assert status == 2
    assert "not a cosrec checkpoint" in err


def test_a_plain_state_dict_checkpoint_is_accepted(checkpoint):
    """The refusals above are specific: a real checkpoint passes the same gate."""
    model = build_model("cosrec", 10, 12, L=5, **SMALL_COSREC)
    assert set(load_checkpoint(checkpoint).state_dict()) == set(model.state_dict())
