"""Side by side with DiCE (dice-ml 0.12, gradient method, PyTorch backend).

Same trained torch model (our 2-32-1 MLP on ``overlapping``), the same 20 rejected
individuals, 5 counterfactuals each. DiCE runs its own gradient search (Adam, its
defaults: learning rate 0.05, 500 to 5,000 iterations, hinge y-loss, proximity and
diversity terms, post-hoc sparsity), one individual at a time as its API works; ours is
the ``dice`` preset (BCE validity + 0.1 L2 + DiCE diversity, step 0.01, at most 100
iterations), all individuals in one batch. Reported: seconds per counterfactual, their
ratio, and the validity of both (share of counterfactuals with p(y=1) >= 0.5 under the
model).

DiCE expects its model to read min-max normalised features; the model is wrapped so that
it first maps DiCE's normalised inputs back to feature space: both searches query the
very same network.

Needs the benchmark extra (a separate environment is fine, it pulls pandas and
scikit-learn): ``pip install -e ".[bench]"``, then
``python benchmarks/bench_dice.py [--n 20]``.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import torch

import recourse_ray as rr


class Denormalised(torch.nn.Module):
    """Our classifier behind DiCE's min-max normalisation: x_norm -> p(y=1), shape (N, 1)."""

    def __init__(self, model, lo: np.ndarray, hi: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32))
        self.register_buffer("span", torch.as_tensor(hi - lo, dtype=torch.float32))

    def forward(self, x):
        return self.model.proba(x.float() * self.span + self.lo).unsqueeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="individuals")
    args = parser.parse_args()
    import dice_ml
    import pandas as pd

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(1)
    data = rr.data.load("overlapping", seed=0)
    train, _ = data.split(seed=0)
    model = rr.models.create("mlp", input_dim=2, seed=0)
    model.fit(train.X, train.y, epochs=100, batch_size=1, seed=0)
    negatives = train.X[model.predict(train.X) == 0][: args.n]
    K = 5

    # Ours: the dice preset, all individuals in one batched search.
    gen = rr.generators.create("dice")
    start = time.perf_counter()
    ours = gen.search(model, negatives, n_counterfactuals=K, seeds=np.arange(len(negatives)))
    ours_s = time.perf_counter() - start
    ours_validity = float((model.predict_proba(ours.counterfactuals.reshape(-1, 2)) >= 0.5).mean())

    # DiCE: gradient method on the same network.
    df = pd.DataFrame(train.X, columns=list(train.feature_names))
    df["y"] = train.y
    d = dice_ml.Data(dataframe=df, continuous_features=list(train.feature_names), outcome_name="y")
    lo, hi = train.X.min(axis=0), train.X.max(axis=0)
    m = dice_ml.Model(model=Denormalised(model, lo, hi), backend="PYT", func="ohe-min-max")
    explainer = dice_ml.Dice(d, m, method="gradient")
    queries = pd.DataFrame(negatives, columns=list(train.feature_names))
    dice_cfs = []
    start = time.perf_counter()
    for i in range(len(queries)):
        try:
            result = explainer.generate_counterfactuals(queries.iloc[[i]], total_CFs=K, desired_class=1, verbose=False)
        except Exception:  # noqa: BLE001 - DiCE raises when it finds none; counted as 0 returned
            continue
        cf = result.cf_examples_list[0].final_cfs_df
        if cf is not None and len(cf):
            dice_cfs.append(cf[list(train.feature_names)].to_numpy(dtype=np.float32))
    dice_s = time.perf_counter() - start
    dice_points = np.concatenate(dice_cfs) if dice_cfs else np.zeros((0, 2), np.float32)
    dice_validity = float((model.predict_proba(dice_points) >= 0.5).mean()) if len(dice_points) else 0.0
    n_ours, n_dice = ours.counterfactuals.shape[0] * K, len(queries) * K

    print(f"{len(negatives)} individuals x {K} counterfactuals, MLP 2-32-1 on overlapping, 1 torch thread")
    print("| method | total | per counterfactual | validity | counterfactuals returned |")
    print("|---|---|---|---|---|")
    print(f"| recourse_ray `dice` (batched) | {ours_s:.3f} s | {1e3 * ours_s / n_ours:.2f} ms | {ours_validity:.0%} | {n_ours} |")
    print(f"| dice-ml 0.12 gradient (PyTorch) | {dice_s:.1f} s | {1e3 * dice_s / n_dice:.0f} ms | {dice_validity:.0%} | {len(dice_points)} |")
    print(f"\nper-counterfactual time ratio: {dice_s / n_dice / (ours_s / n_ours):.0f}x")


if __name__ == "__main__":
    main()
