"""Ensembles as one network: M members packed side by side in every layer.

Every convolution of an M-member network has ``groups=M`` and M times the channels, so
member m only ever sees channels [m*C, (m+1)*C) of each layer: one kernel launch computes
all members, yet their weights, BatchNorm statistics and gradients never mix. Every
parameter and buffer is laid out member-major along its first dimension, which is what
``member_state`` and ``pack_states`` rely on to take members apart and put them together.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MemberFlatten(nn.Module):
    """B x (M*C) x H x W -> B x M x (C*H*W): each member's feature map flattened on its own."""

    def __init__(self, members: int = 1):
        super().__init__()
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, self.members, (c // self.members) * h * w)


class GroupedLinear(nn.Linear):
    """M independent linear layers, B x M x n_in -> B x M x n_out, stored as one
    (M*n_out) x n_in weight: with M = 1 it is exactly ``nn.Linear`` (same state dict)."""

    def __init__(self, in_features: int, out_features: int, members: int = 1, bias: bool = True):
        super().__init__(in_features, out_features * members, bias=bias)
        self.members = members
        # each member initialised like an nn.Linear(in_features, out_features) of its own
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if bias:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.members
        weight = self.weight.view(m, -1, self.in_features)  # M x n_out x n_in
        y = torch.einsum("bmi,moi->bmo", x, weight)
        return y + self.bias.view(m, -1) if self.bias is not None else y


def stack_views(views: torch.Tensor, members: int) -> torch.Tensor:
    """(M*B) x 3 x H x W, member-major (member m's batch is rows [m*B, (m+1)*B)) ->
    B x (M*3) x H x W: each member's own images on its own input channels."""
    mb, c, h, w = views.shape
    return views.view(members, mb // members, c, h, w).transpose(0, 1).reshape(mb // members, members * c, h, w)


def mean_probability_logits(member_logits: torch.Tensor) -> torch.Tensor:
    """B x M x classes -> B x classes: log of the members' mean class probability, so that
    softmax of it is exactly the averaged probability (one member: its own logits)."""
    if member_logits.shape[1] == 1:
        return member_logits[:, 0]
    log_probs = member_logits.float().log_softmax(dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(member_logits.shape[1])


class MemberNetwork(nn.Module):
    """Base of the packable networks: subclasses build their layers for ``self.members`` members
    and implement ``grouped_logits`` on channel-stacked inputs (B x M*3 x H x W -> B x M x classes).

    ``member_logits`` runs the members either as that one grouped network (on a GPU: one kernel
    for all members) or one after the other on the same packed weights (on a CPU, where oneDNN's
    grouped convolutions measured slower than separate ones: 133 against 171 images/s for the
    fp32 default on two cores). Both compute the same function, with the same gradients.
    """

    members: int
    knobs: dict  # the constructor's arguments other than members: how to build one member alone

    def grouped_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def member_logits(self, x: torch.Tensor, grouped: bool | None = None) -> torch.Tensor:
        """(M*B) x 3 x H x W, member-major (member m's own images are rows [m*B, (m+1)*B)) ->
        B x M x classes."""
        if grouped is None:
            grouped = x.device.type != "cpu"
        if self.members == 1:
            return self.grouped_logits(x)
        if grouped:
            return self.grouped_logits(stack_views(x, self.members).contiguous(memory_format=torch.channels_last))
        return torch.stack([self._one_member(k, xk) for k, xk in enumerate(x.chunk(self.members))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W, the same images for every member -> B x classes (ensemble: log mean probability)."""
        if self.members == 1:
            return self.grouped_logits(x)[:, 0]
        if x.device.type != "cpu":
            logits = self.grouped_logits(x.repeat(1, self.members, 1, 1))
        else:
            logits = torch.stack([self._one_member(k, x) for k in range(self.members)], dim=1)
        return mean_probability_logits(logits)

    def _one_member(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Member k on its own images, through views of its slice of the packed weights: gradients
        and BatchNorm statistic updates land in the packed tensors."""
        if "_layout" not in self.__dict__:  # a one-member network: only its structure is used (not a submodule)
            self.__dict__["_layout"] = type(self)(**self.knobs, members=1).to("meta")
        layout = self.__dict__["_layout"].train(self.training)
        tensors = {name: t.chunk(self.members)[k] for name, t in self.named_parameters()}
        for name, t in self.named_buffers():
            # scalar buffers (BatchNorm's batch counter) count once per step, as in a single network
            tensors[name] = t.chunk(self.members)[k] if t.ndim else (t if k == 0 else t.clone())
        return torch.func.functional_call(layout, tensors, (x.contiguous(memory_format=torch.channels_last),))


def member_state(state: dict[str, torch.Tensor], k: int, members: int) -> dict[str, torch.Tensor]:
    """Member k's weights, as the state dict of a one-member network of the same design."""
    return {name: t.chunk(members, dim=0)[k].clone() if t.ndim else t.clone() for name, t in state.items()}


def pack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The inverse: one-member state dicts -> the state dict of their M-member network."""
    return {name: torch.cat([s[name] for s in states]) if t.ndim else t.clone() for name, t in states[0].items()}


def split_members(model: nn.Module) -> list[nn.Module]:
    """An M-member network as M ordinary one-member networks with the same weights, on the same
    device, in eval mode: what an analysis looks at member by member (Q1's table, Q9's Grad-CAM)."""
    members = getattr(model, "members", 1)
    if members == 1:
        return [model]
    param = next(model.parameters())
    state = model.state_dict()
    nets = []
    for k in range(members):
        net = type(model)(**model.knobs, members=1).to(device=param.device, memory_format=torch.channels_last)
        net.load_state_dict(member_state(state, k, members))
        nets.append(net.eval())
    return nets


def pack_members(networks: list[nn.Module]) -> nn.Module:
    """The inverse of split_members: M one-member networks -> one M-member network."""
    first = networks[0]
    model = type(first)(**first.knobs, members=len(networks))
    model.load_state_dict(pack_states([n.state_dict() for n in networks]))
    return model
