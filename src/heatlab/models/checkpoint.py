"""A training checkpoint as flat tensors, so it is stored as safetensors (never a pickle).

:class:`Checkpoint` holds what continuous training needs to go on exactly where it stopped after a
whole epoch: the model's state, the optimizer's per-parameter state (Adam's ``step``, ``exp_avg``,
``exp_avg_sq``), the data-order generator's state and torch's RNG state (dropout). Resuming from it
gives the same losses and weights as a run that never stopped. The optimizer's hyper-parameters are
not stored: they come from the same settings, which the caller checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MODEL, _OPT = "model.", "optimizer."


@dataclass
class Checkpoint:
    """State after ``epochs_done`` whole epochs (``iteration`` optimizer steps)."""

    epochs_done: int
    iteration: int
    model: dict[str, torch.Tensor]
    optimizer: dict[int, dict[str, torch.Tensor]]  # torch.optim state_dict()["state"]
    data_rng: torch.Tensor  # torch.Generator.get_state()
    torch_rng: torch.Tensor  # RNG state of the model's device

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor map for ``safetensors.torch.save_file`` (copies, contiguous, on CPU)."""
        out = {_MODEL + k: v for k, v in self.model.items()}
        for index, state in self.optimizer.items():
            for name, value in state.items():
                out[f"{_OPT}{index}.{name}"] = torch.as_tensor(value)
        out["epochs_done"] = torch.tensor(self.epochs_done)
        out["iteration"] = torch.tensor(self.iteration)
        out["data_rng"], out["torch_rng"] = self.data_rng, self.torch_rng
        return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Checkpoint":
        """Inverse of :meth:`to_tensors`."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(_OPT):
                index, name = key[len(_OPT):].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        return cls(epochs_done=int(tensors["epochs_done"]), iteration=int(tensors["iteration"]),
                   model={k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)},
                   optimizer=state,
                   data_rng=tensors["data_rng"], torch_rng=tensors["torch_rng"])
