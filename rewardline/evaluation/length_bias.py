"""Does the reward model prefer longer responses more than the annotators do?

Inputs are per-pair arrays: rewards ``r_a``, ``r_b``, lengths ``len_a``, ``len_b`` (whatever
unit the caller measures: characters or tokens) and the label ``p`` (share of votes for a).

Definitions
-----------
* ``length_spearman``: Spearman's ρ (``scipy.stats.spearmanr``) between reward and length over
  the *unique* responses of the pairs (a response in several pairs counts once). NaN when
  there are fewer than two responses or either vector is constant.
* ``longer_wins_accuracy``: the pairwise accuracy (:func:`rewardline.evaluation.metrics.pairwise_accuracy`,
  ties in the labels excluded) of the baseline scorer ``reward = length``: the longer
  response wins, equal lengths get half credit.
* On the *decisive* pairs, non-tie labels and ``len_a ≠ len_b``:
  ``model_prefers_longer = mean(1[r_longer > r_shorter] + 0.5·1[r_longer == r_shorter])`` and
  ``labels_prefer_longer = mean(1[majority chose the longer response])``.
* ``length_bias = model_prefers_longer − labels_prefer_longer``: how much more often the model
  picks the longer response than the annotators' majority does, on the same pairs. Positive
  = the model is more length-biased than the labels; the gate bounds it from above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

from rewardline.evaluation.metrics import pairwise_accuracy, tie_mask


def unique_responses(
    response_a_id: np.ndarray | list,
    response_b_id: np.ndarray | list,
    values_a: np.ndarray,
    values_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, values) of each distinct response, taking the value of its first occurrence (a column first)."""
    ids = np.concatenate([np.asarray(response_a_id, dtype=object), np.asarray(response_b_id, dtype=object)])
    values = np.concatenate([np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)])
    uniq, first = np.unique(ids.astype(str), return_index=True)
    return uniq, values[first]


def length_spearman(rewards: np.ndarray, lengths: np.ndarray) -> float:
    """Spearman's ρ of reward vs length; NaN if undefined (< 2 values or a constant vector)."""
    r = np.asarray(rewards, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    if r.size < 2 or np.all(r == r[0]) or np.all(n == n[0]):
        return float("nan")
    return float(spearmanr(r, n).statistic)


@dataclass(frozen=True)
class LengthBias:
    length_spearman: float
    longer_wins_accuracy: float
    model_prefers_longer: float
    labels_prefer_longer: float
    length_bias: float
    n_decisive_pairs: int

    def to_dict(self) -> dict:
        return asdict(self)


def length_bias(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    len_a: np.ndarray,
    len_b: np.ndarray,
    label: np.ndarray,
    response_a_id: np.ndarray | list | None = None,
    response_b_id: np.ndarray | list | None = None,
) -> LengthBias:
    """All length-bias numbers of the module docstring.

    Without response ids, every (pair, side) counts as its own response for the Spearman ρ.
    """
    ra, rb = np.asarray(reward_a, dtype=np.float64), np.asarray(reward_b, dtype=np.float64)
    la, lb = np.asarray(len_a, dtype=np.float64), np.asarray(len_b, dtype=np.float64)
    p = np.asarray(label, dtype=np.float64)

    if response_a_id is None or response_b_id is None:
        rewards, lengths = np.concatenate([ra, rb]), np.concatenate([la, lb])
    else:
        _, rewards = unique_responses(response_a_id, response_b_id, ra, rb)
        _, lengths = unique_responses(response_a_id, response_b_id, la, lb)

    decisive = ~tie_mask(p) & (la != lb)
    a_longer = la[decisive] > lb[decisive]
    delta_longer = np.where(a_longer, 1.0, -1.0) * (ra[decisive] - rb[decisive])  # r_longer − r_shorter
    model_longer = 0.5 * (1.0 + np.sign(delta_longer))
    labels_longer = (p[decisive] > 0.5) == a_longer
    n = int(decisive.sum())
    model_share = float(model_longer.mean()) if n else float("nan")
    label_share = float(labels_longer.mean()) if n else float("nan")
    return LengthBias(
        length_spearman=length_spearman(rewards, lengths),
        longer_wins_accuracy=pairwise_accuracy(la, lb, p),
        model_prefers_longer=model_share,
        labels_prefer_longer=label_share,
        length_bias=model_share - label_share,
        n_decisive_pairs=n,
    )
