"""The paper's networks (appendix A) as encoder / decoder / classifier modules.

- `paper_mlp`: encoder and decoder 784-256-16, classifier 16-12-10, ReLU, batch norm after the
  hidden layers (the MNIST model of section 5.1).
- `transfer_mlp`: 784-400-64 with dropout 0.1 after the hidden layer, single-layer classifier.
- `cifar_resnet`: torchvision ResNet-18 encoder for 32x32 RGB, a decoder of one fully connected
  and 4 transposed-convolution layers, a linear classifier.

Making J a deterministic function of theta on a fixed batch (needed for consistent HVPs):
- batch norm uses the statistics of the batch it is applied to, never running statistics
  (`torch.func.replace_all_batch_norm_modules_`), so J(theta) on a fixed batch is a pure
  function; the same rule holds for validation batches (no train/eval switch to drift);
- dropout takes its mask as an input (`FixedDropout`), drawn with the reparameterisation noise
  and re-drawn only between path points, like the common random numbers of the encoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_


class FixedDropout(nn.Module):
    """Dropout whose mask is an input: x * mask / (1 - p); identity when mask is None."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x, mask=None):
        return x if mask is None else x * mask / (1.0 - self.p)


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """The hidden layers' nonlinearity by name (ACTIVATIONS): "relu" (the paper's; J piecewise
    smooth), "silu", "softplus", "tanh" (smooth: J is C-infinity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


class MLPEncoder(nn.Module):
    """x -> (mean, log_std) of a Gaussian over z: Linear-[BN]-act-[FixedDropout]-Linear (act: ReLU
    by default, the paper's)."""

    def __init__(self, input_dim, hidden, latent, batch_norm=True, dropout=0.0, act="relu"):
        super().__init__()
        self.latent_dim = latent
        self.hidden = nn.Linear(input_dim, hidden)
        self.norm = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        self.act = activation(act)
        self.dropout = FixedDropout(dropout)
        self.out = nn.Linear(hidden, 2 * latent)
        self.mask_shape = (hidden,) if dropout > 0 else None

    def forward(self, x, mask=None):
        h = self.dropout(self.act(self.norm(self.hidden(x.reshape(x.shape[0], -1)))), mask)
        out = self.out(h)
        return out[:, : self.latent_dim], out[:, self.latent_dim:]


def mlp_decoder(latent, hidden, output_dim, batch_norm=False, act="relu") -> nn.Sequential:
    """z -> mean of x. Acts on (..., latent) (several noise samples at once), so no batch norm
    by default: batch statistics over a (samples, batch) stack would mix noise draws."""
    layers = [nn.Linear(latent, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [activation(act), nn.Linear(hidden, output_dim)]
    return nn.Sequential(*layers)


def classifier_head(latent, classes, hidden=None, act="relu") -> nn.Sequential:
    if hidden:
        return nn.Sequential(nn.Linear(latent, hidden), activation(act), nn.Linear(hidden, classes))
    return nn.Sequential(nn.Linear(latent, classes))


def _prepare(*modules):
    for m in modules:
        replace_all_batch_norm_modules_(m)
    return modules


def paper_mlp(input_dim=784, hidden=256, latent=16, classifier_hidden=12, classes=10):
    """(encoder, decoder, classifier) of the paper's MNIST model."""
    return _prepare(MLPEncoder(input_dim, hidden, latent, batch_norm=True),
                    mlp_decoder(latent, hidden, input_dim), classifier_head(latent, classes, classifier_hidden))


def smooth_mlp(input_dim=64, hidden=128, latent=8, classifier_hidden=12, classes=10, act="silu"):
    """(encoder, decoder, classifier) of the paper's MLP made smooth for exact equilibria
    (problems/smooth_network.py): the same widths, a smooth activation, no batch norm."""
    return (MLPEncoder(input_dim, hidden, latent, batch_norm=False, act=act),
            mlp_decoder(latent, hidden, input_dim, act=act), classifier_head(latent, classes, classifier_hidden, act=act))


def transfer_mlp(input_dim=784, hidden=400, latent=64, dropout=0.1, classes=10):
    """(encoder, decoder, classifier) of the paper's transfer model (dropout 0.1 after the hidden layer)."""
    return _prepare(MLPEncoder(input_dim, hidden, latent, batch_norm=True, dropout=dropout),
                    mlp_decoder(latent, hidden, input_dim), classifier_head(latent, classes))


class ResNetEncoder(nn.Module):
    """torchvision ResNet-18 (3x3 stem, no max-pool, as usual for 32x32) -> (mean, log_std)."""

    def __init__(self, latent):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(num_classes=2 * latent)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.net, self.latent_dim = net, latent

    def forward(self, x, mask=None):
        out = self.net(x)
        return out[:, : self.latent_dim], out[:, self.latent_dim:]


class DeconvDecoder(nn.Module):
    """z -> 32x32x3 image mean: one fully connected layer to 256x2x2, then 4 transposed convolutions."""

    def __init__(self, latent, width=256):
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent, width * 4)
        chans = [width, width // 2, width // 4, width // 8]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(chans[-1], 3, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z):
        lead = z.shape[:-1]
        h = torch.relu(self.fc(z.reshape(-1, z.shape[-1]))).reshape(-1, self.width, 2, 2)
        return self.deconv(h).reshape(*lead, 3 * 32 * 32)


def cifar_resnet(latent=64, classes=10, width=256):
    """(encoder, decoder, classifier) of the paper's CIFAR-10 model, for 32x32 RGB."""
    return _prepare(ResNetEncoder(latent), DeconvDecoder(latent, width), classifier_head(latent, classes))


MODELS = {"paper-mlp": paper_mlp, "transfer-mlp": transfer_mlp, "cifar-resnet": cifar_resnet}
