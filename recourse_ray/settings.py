"""The settings of a recourse system: how its round loop runs and how its setup is built.

Frozen dataclasses with the study's values as defaults (SPEC §2-3). Each implements
``problems()`` (``recourse_ray._config.Checked``); sweep files build them through
``_config.build_settings`` and the Python API through the same call, so both report
the same messages. This module imports neither the round loop nor Ray, so reading a
sweep file's schema costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recourse_ray._config import check_fields, check_int, check_real, param_message

__all__ = ["SimulationSettings", "SetupSettings", "EXECUTION_ONLY"]

# Settings that choose how a system runs, not what it computes (kept out of system keys).
EXECUTION_ONLY = ("device",)
CANDIDATE_RULES = ("predicted_negative", "not_certain")
SELECTION_RULES = ("common_random_numbers", "lockstep")
VAE_OBJECTIVES = ("scaled", "reference")


def _device_problems(device: Any) -> list[str]:
    """Why ``device`` cannot be used as simulation's torch device (empty when it can)."""
    import torch

    if not isinstance(device, str):
        return [param_message("device", "simulation", "a str such as 'cpu' or 'cuda'", device)]
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return [param_message("device", "simulation", "a torch device such as 'cpu' or 'cuda'", device)]
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return [
                f"The 'device' parameter of simulation is {device!r} but no CUDA device is available "
                "(torch.cuda.is_available() is False)."
            ]
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return [
                f"The 'device' parameter of simulation is {device!r} but only {torch.cuda.device_count()} "
                "CUDA device(s) are available."
            ]
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return [
                f"The 'device' parameter of simulation is {device!r} but no MPS device is available "
                "(torch.backends.mps.is_available() is False)."
            ]
    elif dev.type != "cpu":
        return [param_message("device", "simulation", "a CPU, CUDA or MPS device", device)]
    return []


@dataclass(frozen=True, kw_only=True)
class SimulationSettings:
    """Settings of the round loop (SPEC §2); defaults are the study's values.

    Attributes:
        rounds: number of rounds T_rounds.
        recourse_share: share mu of the current candidates selected per round.
        n_counterfactuals: counterfactuals K generated per selected individual.
        evaluate_every: evaluate every this many rounds (and always round 0 and the last).
        retrain_epochs: epochs of classifier retraining per round.
        retrain_batch_size: mini-batch size of retraining (the study: 1).
        retrain_lr: Adam learning rate of retraining.
        vae_retrain_epochs: epochs of VAE retraining per round (latent generators only).
        vae_batch_size: VAE mini-batch size.
        implement_only_valid: apply only counterfactuals that reached the threshold
            (the study applies all finite ones).
        device: torch device of counterfactual search, and of retraining when the
            model does not take the fused path (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``); never required. It changes speed, not results' meaning, and is
            kept out of system keys.
        candidates: who may be selected: ``"predicted_negative"`` (the study: rows the
            current model predicts as non-target) or ``"not_certain"`` (the reference
            implementation v0.1.0: rows whose float32 probability is not exactly 1.0,
            positives included; a bug, fixed in its v0.1.2).
        selection: ``"common_random_numbers"`` (independent systems drawing from one
            keyed order, SPEC §2) or ``"lockstep"`` (the reference's protocol: the
            systems of a (dataset, seed) cohort advance round by round and select from
            the intersection of their candidate sets; in a sweep the cohort runs as one
            unit).
        retrain_shuffle: shuffle the training rows every epoch (False: index order, as
            the reference).
        retrain_when_none_selected: retrain in rounds where nobody was selected (the
            reference skips them).
    """

    rounds: int = 50
    recourse_share: float = 0.05
    n_counterfactuals: int = 5
    evaluate_every: int = 10
    retrain_epochs: int = 10
    retrain_batch_size: int = 1
    retrain_lr: float = 1e-3
    vae_retrain_epochs: int = 10
    vae_batch_size: int = 50
    implement_only_valid: bool = False
    device: str = "cpu"
    candidates: str = "predicted_negative"
    selection: str = "common_random_numbers"
    retrain_shuffle: bool = True
    retrain_when_none_selected: bool = True

    def problems(self) -> list[str]:
        out = check_fields(
            self,
            {
                "rounds": ("int", 1, None),
                "recourse_share": ("float", 0.0, 1.0),
                "n_counterfactuals": ("int", 1, None),
                "evaluate_every": ("int", 1, None),
                "retrain_epochs": ("int", 0, None),
                "retrain_batch_size": ("int", 1, None),
                "retrain_lr": ("float", 1e-12, None),
                "vae_retrain_epochs": ("int", 0, None),
                "vae_batch_size": ("int", 1, None),
            },
            "simulation",
        )
        if self.recourse_share == 0:
            out.append(param_message("recourse_share", "simulation", "> 0", 0))
        for name in ("implement_only_valid", "retrain_shuffle", "retrain_when_none_selected"):
            if not isinstance(getattr(self, name), bool):
                out.append(param_message(name, "simulation", "a bool", getattr(self, name)))
        for name, allowed in (("candidates", CANDIDATE_RULES), ("selection", SELECTION_RULES)):
            if getattr(self, name) not in allowed:
                out.append(param_message(name, "simulation", f"one of {', '.join(map(repr, allowed))}", getattr(self, name)))
        out.extend(_device_problems(self.device))
        return out

    def evaluation_rounds(self) -> list[int]:
        rounds = set(range(0, self.rounds + 1, self.evaluate_every)) | {0, self.rounds}
        return sorted(rounds)


@dataclass(frozen=True, kw_only=True)
class SetupSettings:
    """How the initial state is built (shared across seeds when ``shared_setup``).

    Attributes:
        n_samples: rows drawn from the dataset (None: the loader's default).
        test_size: share of rows in the untouched test split (stratified).
        pretrain_epochs / pretrain_batch_size / pretrain_lr: initial classifier training
            (study: 100 epochs; batch 1 synthetic, 500 real-world; lr 1e-3).
        vae_latent_dim / vae_hidden / vae_epochs / vae_batch_size: the VAE of latent
            generators (study: latent 2 synthetic / 8 real-world; 100 / 250 epochs; batch 50).
        vae_kl_weight: weight of the VAE's KL term (see models/vae.py for why 0.1).
        pretrain_shuffle: shuffle the rows every pretraining epoch (False: index order,
            as the reference).
        vae_objective: ``"scaled"`` (ours: reconstruction scaled by the data, KL weight
            0.1; docs/semantics.md) or ``"reference"`` (the reference's: summed squared
            error / batch + full KL + decoder weight decay; models/vae.py).
        vae_decoder_weight_decay: weight of the squared L2 norm of the decoder's
            parameters (None: the objective's default, 0 / 0.01).
        vae_keep_optimizer: keep one Adam state across all of the VAE's fits (the
            reference) instead of a fresh one per fit.
        vae_per_system: each system trains its own VAE (the reference trained one per
            system at its first search) instead of one per (dataset, setup seed).
    """

    n_samples: int | None = None
    test_size: float = 0.2
    pretrain_epochs: int = 100
    pretrain_batch_size: int = 1
    pretrain_lr: float = 1e-3
    vae_latent_dim: int = 2
    vae_hidden: int = 32
    vae_epochs: int = 100
    vae_batch_size: int = 50
    vae_kl_weight: float = 0.1
    pretrain_shuffle: bool = True
    vae_objective: str = "scaled"
    vae_decoder_weight_decay: float | None = None
    vae_keep_optimizer: bool = False
    vae_per_system: bool = False

    def problems(self) -> list[str]:
        out = check_fields(
            self,
            {
                "test_size": ("float", 0.01, 0.99),
                "pretrain_epochs": ("int", 0, None),
                "pretrain_batch_size": ("int", 1, None),
                "pretrain_lr": ("float", 1e-12, None),
                "vae_latent_dim": ("int", 1, None),
                "vae_hidden": ("int", 1, None),
                "vae_epochs": ("int", 0, None),
                "vae_batch_size": ("int", 1, None),
                "vae_kl_weight": ("float", 1e-6, None),
            },
            "setup",
        )
        if self.n_samples is not None and check_int(self.n_samples, "n_samples", "setup", 4):
            out.append(param_message("n_samples", "setup", "an int >= 4 or null", self.n_samples))
        for name in ("pretrain_shuffle", "vae_keep_optimizer", "vae_per_system"):
            if not isinstance(getattr(self, name), bool):
                out.append(param_message(name, "setup", "a bool", getattr(self, name)))
        if self.vae_objective not in VAE_OBJECTIVES:
            out.append(param_message("vae_objective", "setup", f"one of {', '.join(map(repr, VAE_OBJECTIVES))}",
                                     self.vae_objective))
        decay = self.vae_decoder_weight_decay
        if decay is not None and check_real(decay, "vae_decoder_weight_decay", "setup", 0.0):
            out.append(param_message("vae_decoder_weight_decay", "setup", "a float >= 0 or null", decay))
        return out
