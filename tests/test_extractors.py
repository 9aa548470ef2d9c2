"""Extractor registry, weight verification and the frozen wrapper."""
import io
import json
import urllib.error
import urllib.request

import pytest
import torch
from torch import nn

from dgbench.models import extractors as ex
from dgbench.models import weights as w
from dgbench.models.anatomix import anatomix_unet
from dgbench.registry import EXTRACTORS




@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty cache, no env override, and no network unless a test provides one."""
    monkeypatch.setenv("DGBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(w.ANATOMIX_ENV, raising=False)

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return tmp_path


@pytest.fixture(scope="module")
def fake_anatomix(tmp_path_factory):
    """An anatomix-shaped checkpoint with random weights and BN statistics."""
    torch.manual_seed(0)
    net = anatomix_unet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "anatomix.pth"
    torch.save(net.state_dict(), path)
    return path, net.eval()


def test_git_blob_sha1_matches_git_hash_object(tmp_path):
    assert w.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    p = tmp_path / "f"
    p.write_bytes(b"hello\n")
    assert w.git_blob_sha1(p) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_registry_names():
    assert {"anatomix", "synthanat-tiny", "anatomix-random"} <= set(EXTRACTORS.names())


def test_corrupted_file_is_rejected(isolated):
    bad = isolated / "anatomix.pth"
    bad.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(ex.ExtractorWeightsError) as e:
        ex.build_extractor("anatomix", weights=bad)
    msg = str(e.value)
    assert w.ANATOMIX_SHA1 in msg and w.git_blob_sha1(bad) in msg
    assert w.ANATOMIX_URL in msg and w.ANATOMIX_ENV in msg


def test_env_var_file_with_wrong_hash_is_rejected(isolated, fake_anatomix, monkeypatch):
    monkeypatch.setenv(w.ANATOMIX_ENV, str(fake_anatomix[0]))  # real SHA-1 cannot match
    with pytest.raises(ex.ExtractorWeightsError, match="expected " + w.ANATOMIX_SHA1):
        ex.build_extractor("anatomix")


def test_offline_failure_says_where_to_put_the_file(isolated):
    with pytest.raises(ex.ExtractorWeightsError) as e:
        ex.build_extractor("anatomix")
    msg = str(e.value)
    assert "download failed" in msg and "unreachable" in msg
    assert str(isolated / "cache" / "anatomix" / "anatomix.pth") in msg
    assert w.ANATOMIX_ENV in msg and w.ANATOMIX_URL in msg and w.ANATOMIX_SHA1 in msg


def test_missing_explicit_path_is_an_error_not_a_fallback(isolated):
    with pytest.raises(ex.ExtractorWeightsError, match="not found"):
        ex.build_extractor("anatomix", weights=isolated / "nope.pth")


def test_file_with_right_hash_loads(isolated, fake_anatomix, monkeypatch):
    path, ref = fake_anatomix
    monkeypatch.setattr(w, "ANATOMIX_SHA1", w.git_blob_sha1(path))
    monkeypatch.setenv(w.ANATOMIX_ENV, str(path))
    e = ex.build_extractor("anatomix")
    assert e.weights_sha1 == w.git_blob_sha1(path) and e.weights_verified
    assert e.out_channels == 16
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(e(x), ref(x))


def test_wrapped_compiled_checkpoint_loads(isolated, fake_anatomix, monkeypatch):
    path, ref = fake_anatomix
    wrapped = isolated / "wrapped.pth"
    torch.save({"state_dict": {"_orig_mod." + k: v for k, v in ref.state_dict().items()}},
               wrapped)
    monkeypatch.setattr(w, "ANATOMIX_SHA1", w.git_blob_sha1(wrapped))
    e = ex.build_extractor("anatomix", weights=wrapped)
    assert torch.equal(e.net.state_dict()["model.65.weight"], ref.state_dict()["model.65.weight"])


def test_download_goes_to_cache_after_checksum(isolated, fake_anatomix, monkeypatch):
    path, _ = fake_anatomix
    data = path.read_bytes()
    monkeypatch.setattr(w, "ANATOMIX_SHA1", w.git_blob_sha1(data))
    calls = []

    def fake_urlopen(url, timeout):
        calls.append((url, timeout))
        return io.BytesIO(data)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    e = ex.build_extractor("anatomix")
    assert calls == [(w.ANATOMIX_URL, w.DOWNLOAD_TIMEOUT_S)]
    assert w.anatomix_cache_path().read_bytes() == data
    assert e.weights_path == str(w.anatomix_cache_path())
    ex.build_extractor("anatomix")               # second time: from the cache
    assert len(calls) == 1


def test_download_with_wrong_hash_is_not_saved(isolated, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>"))
    with pytest.raises(ex.ExtractorWeightsError, match="not saved"):
        ex.build_extractor("anatomix")
    assert not w.anatomix_cache_path().exists()


def test_verify_false_is_an_explicit_recorded_override(isolated, fake_anatomix):
    with pytest.warns(UserWarning, match="verify=False"):
        e = ex.build_extractor("anatomix", weights=fake_anatomix[0], verify=False)
    assert e.metadata()["weights_verified"] is False


def test_frozen_wrapper_stays_eval_and_out_of_checkpoints():
    e = ex.build_extractor("synthanat-tiny")
    before = {k: v.clone() for k, v in e.net.state_dict().items()}

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv3d(17, 2, 1)
            self.extractor = e

    m = Model()
    assert all(not p.requires_grad for p in e.parameters())
    m.train()
    e.train(True)
    assert not e.training and not any(x.training for x in e.modules())
    next(x for x in e.modules() if isinstance(x, nn.BatchNorm3d)).training = True  # forced
    x = torch.rand(2, 1, 32, 32, 32, requires_grad=True)
    y = e(x)
    assert y.shape == (2, 16, 32, 32, 32) and not y.requires_grad
    after = e.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # BN statistics bit for bit
    sd = m.state_dict()
    assert list(sd) == ["head.weight", "head.bias"]               # extractor not checkpointed
    m2 = Model()
    assert not m2.load_state_dict(sd, strict=True).missing_keys
    assert w.git_blob_sha1(e.weights_path) == e.weights_sha1


def test_bundled_extractor_provenance():
    pt, meta = w.bundled_weights("synthanat-tiny")
    assert pt.stat().st_size < 2.2e6
    assert meta["git_blob_sha1"] == w.git_blob_sha1(pt)
    assert meta["command"].startswith("dgbench pretrain-features") and meta["steps"] > 0
    e = ex.build_extractor("synthanat-tiny")
    assert e.out_channels == 16 and e.net.ngf == meta["architecture"]["ngf"]
    assert e.metadata()["weights_sha1"] == meta["git_blob_sha1"]
    assert e.trained_size == meta["size"] == 32


def test_bundled_weights_corruption_detected(tmp_path):
    pt, meta = w.bundled_weights("synthanat-tiny")
    bad = tmp_path / "x.pt"
    bad.write_bytes(pt.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "x.json").write_text(json.dumps(meta))
    with pytest.raises(ex.ExtractorWeightsError, match=meta["git_blob_sha1"]):
        ex.build_extractor("synthanat-tiny", weights=bad)


def test_random_extractors_are_explicit_and_deterministic():
    a, b = ex.build_extractor("synthanat-tiny-random"), ex.build_extractor("synthanat-tiny-random")
    assert a.weights_sha1 is None
    assert torch.equal(a.net.model[0].weight, b.net.model[0].weight)
    with pytest.raises(ValueError):
        ex.build_extractor("anatomix-random", weights="x.pt")


def test_bundled_v2_is_the_default_with_its_provenance():
    from dgbench.registry import METHODS, load_plugins
    load_plugins()
    assert METHODS.get("maskgen").defaults["extractor"] == w.BUNDLED == "synthanat-v2"
    pt, meta = w.bundled_weights("synthanat-v2")
    assert pt.stat().st_size < 10e6 and meta["dtype"] == "float32"
    assert meta["git_blob_sha1"] == w.git_blob_sha1(pt)
    assert meta["command"].startswith("dgbench pretrain-features --name synthanat-v2")
    assert meta["steps"] == meta["config"]["steps"] and meta["sizes"] == [32, 48, 64]
    log = (pt.parent / "synthanat-v2.log").read_text()
    assert meta["command"] in log and f"step {meta['steps']}/{meta['steps']} loss" in log
    state = torch.load(pt, weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    e = ex.build_extractor("synthanat-v2")
    assert (e.net.ngf, e.net.num_downs, e.net.norm) == (8, 4, "instance") == \
        (meta["architecture"]["ngf"], meta["architecture"]["num_downs"], meta["architecture"]["norm"])
    assert e.weights_verified and e.trained_size == 64
    r = ex.build_extractor("synthanat-v2-random")
    assert r.weights_sha1 is None and r.net.norm == "instance"
    assert not torch.equal(r.net.model[0].weight, e.net.model[0].weight)


def test_bundled_file_of_another_architecture_is_refused(tmp_path, monkeypatch):
    # a synthanat-tiny file placed where synthanat-v2 should be: clear error, not a silent swap
    pt, meta = w.bundled_weights("synthanat-tiny")
    (tmp_path / "synthanat-v2.pt").write_bytes(pt.read_bytes())
    (tmp_path / "synthanat-v2.json").write_text(json.dumps(meta))
    monkeypatch.setattr(w, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ex.ExtractorWeightsError, match="is not the synthanat-v2 architecture"):
        ex.build_extractor("synthanat-v2")


def test_one_cache_folder_for_data_and_weights_even_when_the_variable_is_empty(monkeypatch, tmp_path):
    from dgbench.data.adapter import cache_dir
    from dgbench.models.weights import anatomix_cache_path
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DGBENCH_CACHE", "")
    assert cache_dir() == tmp_path / ".cache" / "dgbench"
    assert anatomix_cache_path().parent.parent == cache_dir()
    monkeypatch.setenv("DGBENCH_CACHE", str(tmp_path / "c"))
    assert anatomix_cache_path() == tmp_path / "c" / "anatomix" / "anatomix.pth"
