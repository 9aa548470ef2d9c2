"""The re-implemented anatomix U-Net must load the published weights' layout strictly."""
import json
from pathlib import Path

import pytest
import torch

from dgbench.models.anatomix import ANATOMIX_PRETRAIN_LAYERS, Unet, anatomix_unet, strip_wrappers

MANIFEST = Path(__file__).resolve().parents[1] / "dgbench" / "weights" / "anatomix_state_dict.json"




def manifest_state(seed: int = 0) -> dict:
    """A state_dict with the manifest's keys, order and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in json.loads(MANIFEST.read_text())["keys"].items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.int64)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.1
    return out


def test_state_dict_matches_manifest_strictly():
    net = anatomix_unet()
    ref = json.loads(MANIFEST.read_text())["keys"]
    sd = net.state_dict()
    assert list(sd) == list(ref)                                  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == ref      # same shapes
    assert len(net.model) == 66 and net.encoder_idx == [8, 15, 22, 29]
    assert net.decoder_idx == [37, 44, 51, 58]
    assert sum(p.numel() for p in net.parameters()) == 5_899_344
    state = manifest_state()
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.state_dict()["model.38.weight"], state["model.38.weight"])


def test_forward_shape_and_layers():
    torch.manual_seed(0)
    net = anatomix_unet().eval()
    x = torch.rand(1, 1, 32, 32, 32)
    y = net(x)
    assert y.shape == (1, 16, 32, 32, 32)
    out, feats = net(x, layers=list(ANATOMIX_PRETRAIN_LAYERS) + [37])
    assert torch.equal(out, y)
    shapes = [tuple(f.shape[1:]) for f in feats]
    # returned in module order, as upstream; 37 is the post-concat tensor (128 skip + 256 up)
    assert shapes == [(128, 4, 4, 4), (256, 2, 2, 2), (384, 4, 4, 4), (128, 4, 4, 4),
                      (64, 8, 8, 8), (32, 16, 16, 16), (16, 32, 32, 32)]
    assert net.layer_channels(sorted(list(ANATOMIX_PRETRAIN_LAYERS) + [37])) == \
        [s[0] for s in shapes]
    only = net(x, layers=[27], encode_only=True)
    assert len(only) == 1 and torch.equal(only[0], feats[0])


def test_recorded_bn_output_is_not_overwritten_by_inplace_relu():
    net = anatomix_unet(ngf=4).eval()
    _, (bn,) = net(torch.rand(1, 1, 32, 32, 32), layers=[1])
    assert (bn < 0).any()  # a BN output before the in-place ReLU keeps its negative values


@pytest.mark.parametrize("shape, msg", [((1, 1, 40, 32, 32), "divisible by 16"),
                                        ((1, 1, 16, 16, 16), "at least 32"),
                                        ((1, 2, 32, 32, 32), "shape")])
def test_clear_error_for_bad_input(shape, msg):
    with pytest.raises(ValueError, match=msg):
        anatomix_unet(ngf=4)(torch.rand(shape))


def test_smaller_variant_same_family():
    small = Unet(ngf=6)
    big_keys = list(anatomix_unet().state_dict())
    assert list(small.state_dict()) == big_keys      # same layout, narrower
    assert small.state_dict()["model.31.weight"].shape == (96, 48, 3, 3, 3)
    seg = Unet(input_nc=17, output_nc=16, num_downs=5, ngf=20)   # the reference recipe's backbone (Diaz et al. 2026)
    assert len(seg.model) == 80 and seg.encoder_idx == [8, 15, 22, 29, 36]
    assert seg.decoder_idx == [44, 51, 58, 65, 72]
    assert sum(p.numel() for p in seg.parameters()) == 36_874_980


def test_strip_wrappers():
    sd = {"model.0.weight": torch.zeros(1)}
    assert strip_wrappers({"state_dict": {"_orig_mod.model.0.weight": torch.zeros(1)}}).keys() \
        == sd.keys()
    assert strip_wrappers({"module.model.0.weight": torch.zeros(1)}).keys() == sd.keys()
    assert strip_wrappers(sd).keys() == sd.keys()


def test_pretrain_layers_follow_the_anatomix_choice_at_any_depth():
    assert Unet(num_downs=4, ngf=4).pretrain_layers() == ANATOMIX_PRETRAIN_LAYERS
    net = Unet(num_downs=3, ngf=4)
    layers = net.pretrain_layers()
    convs = [i for i, m in enumerate(net.model) if isinstance(m, torch.nn.Conv3d)]
    assert set(layers) <= set(convs) and layers[-1] == convs[-1] and len(layers) == 5
    _, feats = net(torch.rand(1, 1, 16, 16, 16), layers=layers)
    assert [f.shape[-1] for f in feats] == [4, 2, 4, 8, 16]   # last encoder, bottleneck, decoder


def test_instance_norm_variant_is_recognised_from_its_weights():
    from dgbench.models.extractors import unet_from_state
    net = Unet(num_downs=3, ngf=4, norm="instance")
    state = net.state_dict()
    assert not any("running" in k or "num_batches" in k for k in state)
    assert isinstance(net.model[1], torch.nn.InstanceNorm3d) and net.model[1].affine
    back = unet_from_state(state, norm_eps=1e-3)
    assert (back.norm, back.num_downs, back.ngf, back.norm_eps) == ("instance", 3, 4, 1e-3)
    assert unet_from_state(Unet(num_downs=4, ngf=4).state_dict()).norm == "batch"
    with pytest.raises(ValueError, match="norm must be"):
        Unet(norm="group")
