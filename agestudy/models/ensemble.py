"""An ensemble: several copies of one network, each with its own random initialisation.

The members train side by side, each on its own shuffle of the data with its own
augmentations (``train_one_epoch``; their losses add up, their weights never mix), and the
ensemble predicts the mean of their class probabilities. Its forward
returns the log of that mean, so it can stand wherever a single network's logits do:
softmax(ensemble(x)) is exactly the averaged probability.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """M x B x classes: each member's own logits for the same inputs."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = self.member_logits(x).float().log_softmax(dim=-1)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
