"""The anatomix U-Net, rebuilt so that its state_dict matches the published weights key for key.

Why a re-implementation: the published `anatomix.pth` is a bare state_dict whose keys are
indices into one `nn.Sequential` called `model` (`model.<index>.<name>`). Loading it strictly
needs exactly the same module order, including the stateless ReLU / MaxPool / Upsample
modules that create the gaps in the indices. The layout follows the anatomix paper and code
(Dey et al., "Learning General-Purpose Biomedical Volume Representations using
Randomized Synthesis", ICLR 2025; upstream code: neel-dey/anatomix,
`anatomix/model/network.py`, MIT licence, "Copyright 2024 Neel Dey").

Layout for `num_downs = L`, widths w_0 = ngf, w_i = ngf * 2**(i-1) for i >= 1:
  stem conv-BN-ReLU (in -> ngf)
  L encoder levels: (conv-BN-ReLU) x 2 -> record skip -> MaxPool
  bottleneck: (conv-BN-ReLU) x 2 at width 2 * w_L
  L decoder levels: Upsample -> cat(skip, up) -> (conv-BN-ReLU) x 2
  final conv (no norm, no activation)
With the anatomix settings (L=4, ngf=16) that is 66 modules, skips after 8/15/22/29 and
concatenations after the Upsamples at 37/44/51/58. The same class with L=5, ngf=20 is the
segmentation U-Net of the MaskGen reference recipe (Diaz et al. 2026).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

# Layers whose outputs feed the contrastive loss in anatomix pretraining (Dey et al. 2025):
# conv outputs before BN, plus the final output. `Unet.pretrain_layers()` derives the same
# choice for any depth.
ANATOMIX_PRETRAIN_LAYERS = (27, 31, 38, 45, 52, 65)
NORMS = ("batch", "instance")


def _conv(cin: int, cout: int, bias: bool) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=1, padding="same",
                     padding_mode="reflect", bias=bias)


class Unet(nn.Module):
    """anatomix-compatible 3D U-Net (BatchNorm, ReLU, max pooling, nearest upsampling).

    `norm="instance"` swaps every BatchNorm3d for an affine InstanceNorm3d (no running
    statistics), as the anatomix-dev models do: the output then depends on the input volume
    alone, never on statistics gathered at another canvas size. Its state_dict has the same
    keys minus the running statistics, so the norm is recognisable from the weights.

    `forward(x)` returns the final output. `forward(x, layers=[...])` also returns the
    activations after the listed module indices, as `(output, [feats...])`; with
    `encode_only=True` it stops after the last listed layer and returns only the list.
    At an Upsample index the recorded tensor is the post-concatenation one (as upstream).
    """

    def __init__(self, input_nc: int = 1, output_nc: int = 16, num_downs: int = 4,
                 ngf: int = 16, norm_eps: float = 1e-5, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.input_nc, self.output_nc = input_nc, output_nc
        self.num_downs, self.ngf = num_downs, ngf
        self.norm, self.norm_eps = norm, norm_eps
        relu = nn.ReLU(inplace=True)  # one shared object, as upstream; owns no state
        mods: list[nn.Module] = []
        self.encoder_idx: list[int] = []   # after these indices, push a skip
        self.decoder_idx: list[int] = []   # after these (Upsample) indices, pop + concat

        self.channels: list[int] = []      # width of the tensor after each module index

        def block(cin: int, cout: int) -> None:
            nrm = (nn.BatchNorm3d(cout, eps=norm_eps) if norm == "batch"
                   else nn.InstanceNorm3d(cout, eps=norm_eps, affine=True))
            mods.extend([_conv(cin, cout, bias=False), nrm, relu])
            self.channels.extend([cout] * 3)

        block(input_nc, ngf)
        width = ngf
        for level in range(num_downs):
            out = width if level == 0 else width * 2
            block(width, out)
            block(out, out)
            self.encoder_idx.append(len(mods) - 1)
            mods.append(nn.MaxPool3d(2))
            self.channels.append(out)
            width = out
        block(width, width * 2)
        block(width * 2, width * 2)
        mult = 2 ** num_downs
        for _ in range(num_downs):
            self.decoder_idx.append(len(mods))
            mods.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.channels.append(ngf * (mult + mult // 2))  # after the concatenation
            block(ngf * (mult + mult // 2), ngf * (mult // 2))
            block(ngf * (mult // 2), ngf * (mult // 2))
            mult //= 2
        mods.append(_conv(ngf, output_nc, bias=False))
        self.channels.append(output_nc)
        self.model = nn.Sequential(*mods)
        self._enc = set(self.encoder_idx)
        self._dec = set(self.decoder_idx)

    @property
    def size_multiple(self) -> int:
        return 2 ** self.num_downs

    def check_input(self, x: torch.Tensor) -> None:
        """Fail early with a readable message instead of a cryptic cat/pad error."""
        if x.dim() != 5 or x.shape[1] != self.input_nc:
            raise ValueError(f"expected input of shape B x {self.input_nc} x D x H x W, "
                             f"got {tuple(x.shape)}")
        m = self.size_multiple
        spatial = tuple(x.shape[2:])
        if any(s % m for s in spatial):
            raise ValueError(f"every spatial size must be divisible by {m} "
                             f"(2**num_downs, num_downs={self.num_downs}); got {spatial}")
        if any(s < 2 * m for s in spatial):
            raise ValueError(f"every spatial size must be at least {2 * m} (reflect padding "
                             f"needs 2 voxels at the bottleneck); got {spatial}")

    def forward(self, x: torch.Tensor, layers: Sequence[int] | None = None,
                encode_only: bool = False):
        self.check_input(x)
        want = set(layers or ())
        last = max(want) if want else -1
        feats: list[torch.Tensor] = []
        skips: list[torch.Tensor] = []
        n = len(self.model)
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in self._dec:
                x = torch.cat((skips.pop(), x), dim=1)
            if i in self._enc:
                skips.append(x)
            if i in want:
                nxt = self.model[i + 1] if i + 1 < n else None
                # the shared ReLU is in place: keep a copy if it would overwrite this tensor
                inplace_next = isinstance(nxt, nn.ReLU) and nxt.inplace
                feats.append(x.clone() if inplace_next else x)
                if encode_only and i == last:
                    return feats
        if want:
            return x, feats
        return x

    def pretrain_layers(self) -> tuple[int, ...]:
        """anatomix's contrastive layers for this depth: the last encoder level's second conv,
        the bottleneck's first conv, the first conv of every decoder level but the full-resolution
        one, and the final conv (27, 31, 38, 45, 52, 65 for num_downs=4)."""
        convs = [i for i, m in enumerate(self.model) if isinstance(m, nn.Conv3d)]
        enc_last = convs[2 * self.num_downs]          # stem, then two per encoder level
        bottleneck = convs[2 * self.num_downs + 1]
        dec_first = [d + 1 for d in self.decoder_idx[:-1]]
        return (enc_last, bottleneck, *dec_first, convs[-1])

    def layer_channels(self, layers: Iterable[int]) -> list[int]:
        """Channel count of the activation recorded at each index (sizes projection heads)."""
        return [self.channels[i] for i in layers]


def anatomix_unet(ngf: int = 16, num_downs: int = 4, input_nc: int = 1,
                  output_nc: int = 16) -> Unet:
    """The published configuration by default: Unet(3, 1, 16, num_downs=4, ngf=16)."""
    return Unet(input_nc=input_nc, output_nc=output_nc, num_downs=num_downs, ngf=ngf)


def seeded_extractor_net(seed: int, ngf: int, num_downs: int = 4, norm: str = "batch",
                         norm_eps: float = 1e-5) -> Unet:
    """Unet(1 -> 16) with Kaiming init drawn from `seed` (the global RNG is left untouched): the
    start of pretraining and the untrained "-random" control extractors alike."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return kaiming_init(Unet(input_nc=1, output_nc=16, num_downs=num_downs, ngf=ngf,
                                 norm=norm, norm_eps=norm_eps))


def kaiming_init(net: nn.Module) -> nn.Module:
    """Kaiming-normal conv weights, unit/zero norm affine: the init anatomix's pretraining uses (Dey et al., ICLR 2025)."""
    for m in net.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def strip_wrappers(state: dict) -> dict:
    """Accept checkpoints that wrap the state_dict or carry compile/DataParallel prefixes.

    The published file is a bare state_dict (as published); the HF loader strips
    `_orig_mod.` (torch.compile); training checkpoints often nest under a key.
    """
    for key in ("state_dict", "model_state_dict", "net_G", "model", "net"):
        if isinstance(state.get(key), dict) and not any(
                isinstance(k, str) and k.startswith("model.") for k in state):
            state = state[key]
            break
    out = {}
    for k, v in state.items():
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out
