"""Per-prompt utilities on a fixed scale: Thurstone Case V (probit) or Bradley-Terry (logit) MAP fits.

A reward model trained with the pairwise loss is constrained on reward *differences* only.
Fitting a paired-comparison model per prompt to all of its judgements gives continuous
utilities on a fixed scale, which a reward model can then be trained on pointwise.

Model. Response ``i`` of a prompt has utility ``u_i``; one vote on ``(a, b)`` prefers ``a`` with

    P(a ≻ b) = F(u_a − u_b),   F = Φ (``thurstone``, Case V, probit link) or σ (``bt``, logit link).

A pairs row (``response_a``, ``response_b``, soft label ``p``, ``n`` votes) carries ``w = p·n``
votes for ``a`` and ``n − w`` for ``b`` (a tied vote counts 1/2 with
``pairs.ties: half``; a soft judgement against the anchor, ``pairs.anchor_labels: score``, counts
the judge's probability). The log-posterior with a Gaussian prior (``σ = pairs.target_prior_sd``) is

    L(u) = Σ_rows [ w log F(d) + (n − w) log F(−d) ] − Σ_i (u_i − m_i)² / (2σ²),   d = u_a − u_b,

with prior centre ``m_i = 0``, except on an anchored prompt with ``prior_centre = "prompt"``
(``pairs.target_prior_centre``, the default), where ``m_i = ū_p``, the mean utility of the prompt's
responses, the anchor's included: the prior then only penalises the spread of the prompt's utilities
(precision ``(I − J/k)/σ²`` on its ``k`` utilities), so it shrinks them towards each other, not
towards the anchor (``F = 1/2``). With one soft comparison ``p`` against the anchor and no prior,
the MAP solves ``p·λ(u) = (1 − p)·λ(−u)``, i.e. ``F(u) = p``; the prior pulls ``F(u)`` towards 1/2
(``anchor``) or towards the prompt's other responses (``prompt``).

``log F`` is concave for both links, so ``L`` is strictly concave in the free utilities and the MAP
``û`` is unique even for disconnected or unanimous (MLE at infinity) comparison graphs (with
``prompt``, the prior precision restricted to the free utilities has eigenvalues 1/σ² and 1/(kσ²) > 0).

Anchoring. When a prompt has an anchor response (``responses.is_anchor``, e.g. the reference
answer of AlpacaEval), its utility is fixed at ``u_anchor = 0`` (not a free variable), so
``F(u)`` is the probability that a response beats the anchor. Without an anchor the prior is
centred at 0 whatever ``prior_centre`` and the utilities are centred per prompt, ``u_i − mean_j u_j``
(the MAP is already centred: the likelihood depends on differences only and the prior is centred at
0), and ``anchored`` is false: ``F(u)`` is then the probability of beating the prompt's typical response.

Fit. One joint damped Newton iteration over all utilities of all prompts. The Hessian is
block-diagonal by prompt, so each step solves the ``K_p × K_p`` blocks batched
(``numpy.linalg.solve`` on ``[P_k, k, k]``, looping over the distinct block sizes ``k`` only,
never over prompts); a step is halved per prompt until the prompt's ``L`` does not decrease.
Derivatives in ``d`` (``λ = f / F``, ``f = F'``, stable through ``log_ndtr`` / ``expit``)::

    ∂ℓ/∂d  = w λ(d) − (n − w) λ(−d)
    ∂²ℓ/∂d² = w λ'(d) + (n − w) λ'(−d),   λ'(x) = −λ(x)(x + λ(x)) (probit),  −σ(x)σ(−x) (logit)

Standard errors. ``Σ_p = A_p⁻¹`` with ``A_p = −∇²L`` at the MAP (observed information plus
prior precision ``1/σ²``, or ``(I − J/k)/σ²`` on a prompt-centred block; the anchor's row and column
removed), and ``se_i = sqrt(Σ_ii)``; a
centred utility's variance is ``Σ_ii − 2·mean_j Σ_ij + mean_jk Σ_jk``, an anchor's is 0. The
votes of one annotator's K-way ranking are treated as independent pairwise votes (rank
breaking): the point estimates stay consistent, the SEs are model-based and likely too small
(the C(K, 2) votes of one ranking are not independent). Weighting them 2/K each (K − 1 votes per
ranking) was measured on the AlpacaEval target diagnostic (``docs/benchmarks.md``, issue 14) and
not kept: it raised the in-sample ECE at the default prior sd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import log_expit, log_ndtr

from rewardline.data import schema
from rewardline.data.keys import key_codes

Link = Literal["probit", "logit"]
PriorCentre = Literal["anchor", "prompt"]
#: ``pairs.targets`` → link of the paired-comparison model.
LINKS: dict[str, Link] = {"thurstone": "probit", "bt": "logit"}
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


@dataclass
class UtilityFit:
    """Utilities, standard errors and anchoring of ``n_items`` responses (in item order)."""

    utility: np.ndarray  # float64 [n_items]
    se: np.ndarray  # float64 [n_items]
    anchored: np.ndarray  # bool [n_items]: the item's prompt has an anchor
    iterations: int
    max_gradient: float  # max |∂L/∂u| at the returned utilities


def log_cdf(x: np.ndarray, link: Link) -> np.ndarray:
    """``log F(x)``: ``log Φ(x)`` (probit) or ``log σ(x)`` (logit), stable in both tails."""
    return log_ndtr(x) if link == "probit" else log_expit(x)


def hazard(x: np.ndarray, log_f: np.ndarray, log_f_neg: np.ndarray, link: Link) -> tuple[np.ndarray, np.ndarray]:
    """``λ(x) = f(x)/F(x) = d log F / dx`` and ``λ'(x)``, given ``log F(x)`` and ``log F(−x)``:
    probit ``λ = exp(log φ(x) − log Φ(x))``, ``λ' = −λ(x + λ)``; logit ``λ = σ(−x)``, ``λ' = −σ(x)σ(−x)``."""
    if link == "probit":
        lam = np.exp(-0.5 * x * x - _LOG_SQRT_2PI - log_f)
        return lam, -lam * (x + lam)
    lam = np.exp(log_f_neg)
    return lam, -lam * np.exp(log_f)


@dataclass
class _Blocks:
    """Items ordered by (block size, prompt): each size's blocks are contiguous."""

    order: np.ndarray  # item → position in block order
    position_item: np.ndarray  # position → item
    local: np.ndarray  # position → index within its prompt block
    size: np.ndarray  # position → its block's size k
    flat: np.ndarray  # position → offset of its block in the flat k² buffer
    block_of: np.ndarray  # position → block number (in block order)
    runs: list[tuple[int, int, int, int, int]]  # (k, item lo, item hi, flat lo, flat hi) per distinct k


def _layout(item_prompt: np.ndarray) -> _Blocks:
    sizes = np.bincount(item_prompt)
    key_size = sizes[item_prompt]
    position_item = np.lexsort((np.arange(item_prompt.size), item_prompt, key_size))  # position → item
    order = np.empty_like(position_item)
    order[position_item] = np.arange(position_item.size)
    prompt_sorted = item_prompt[position_item]
    new_block = np.r_[True, prompt_sorted[1:] != prompt_sorted[:-1]]
    block_of = np.cumsum(new_block) - 1
    starts = np.flatnonzero(new_block)
    size = key_size[position_item]
    local = np.arange(position_item.size) - starts[block_of]
    block_size = size[starts]
    block_flat = np.r_[0, np.cumsum(block_size.astype(np.int64) ** 2)[:-1]]
    runs = []
    for k in np.unique(block_size):
        blocks = np.flatnonzero(block_size == k)
        lo, hi = int(blocks[0]), int(blocks[-1]) + 1
        item_hi = int(starts[hi]) if hi < starts.size else position_item.size
        flat_hi = int(block_flat[hi]) if hi < block_flat.size else int(block_flat[-1] + block_size[-1] ** 2)
        runs.append((int(k), int(starts[lo]), item_hi, int(block_flat[lo]), flat_hi))
    return _Blocks(order, position_item, local, size, block_flat[block_of], block_of, runs)


def _row_terms(u: np.ndarray, a: np.ndarray, b: np.ndarray, wins: np.ndarray, votes: np.ndarray,
               link: Link) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: ``ℓ``, ``∂ℓ/∂d`` and ``−∂²ℓ/∂d²`` at ``d = u_a − u_b`` (two ``log F`` calls per row)."""
    d = u[a] - u[b]
    losses = votes - wins
    log_f, log_f_neg = log_cdf(d, link), log_cdf(-d, link)
    lam_pos, dlam_pos = hazard(d, log_f, log_f_neg, link)
    lam_neg, dlam_neg = hazard(-d, log_f_neg, log_f, link)
    ell = wins * log_f + losses * log_f_neg
    return ell, wins * lam_pos - losses * lam_neg, -(wins * dlam_pos + losses * dlam_neg)


def _hessian_index(a: np.ndarray, b: np.ndarray, lay: _Blocks) -> np.ndarray:
    """Flat-buffer positions of ``(a,a), (b,b), (a,b), (b,a)`` of every row (fixed during the fit)."""
    pa_, pb_ = lay.order[a], lay.order[b]
    flat_a = lay.flat[pa_] + lay.local[pa_] * lay.size[pa_]
    flat_b = lay.flat[pb_] + lay.local[pb_] * lay.size[pb_]
    return np.concatenate([flat_a + lay.local[pa_], flat_b + lay.local[pb_], flat_a + lay.local[pb_],
                           flat_b + lay.local[pa_]])


def _prior_deviation(u: np.ndarray, item_prompt: np.ndarray, centred: np.ndarray, n_prompts: int) -> np.ndarray:
    """``u_i − m_i``: the prior's centre ``m_i`` is 0, or the mean utility of the item's prompt where ``centred``."""
    mean = np.bincount(item_prompt, u, n_prompts) / np.maximum(np.bincount(item_prompt, minlength=n_prompts), 1)
    return u - np.where(centred, mean[item_prompt], 0.0)


def _newton_system(u: np.ndarray, grad_d: np.ndarray, curv: np.ndarray, rows: tuple[np.ndarray, ...],
                   index: np.ndarray, lay: _Blocks, anchor: np.ndarray, precision: float,
                   prior: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ``∇L`` [n] and the flat buffer of the blocks of ``A = −∇²L`` (anchors: identity rows)."""
    a, b = rows[0], rows[1]
    n = u.size
    item_prompt, centred, n_prompts = prior
    grad = (np.bincount(a, grad_d, n) - np.bincount(b, grad_d, n)
            - precision * _prior_deviation(u, item_prompt, centred, n_prompts))
    total = lay.runs[-1][4] if lay.runs else 0
    hess = np.bincount(index, np.concatenate([curv, curv, -curv, -curv]), total)
    position_item = lay.position_item
    diagonal = lay.flat + lay.local * lay.size + lay.local
    hess[diagonal] += np.where(anchor[position_item], 0.0, precision)
    for k, lo, hi, flo, fhi in lay.runs:
        block = hess[flo:fhi].reshape(-1, k, k)
        block -= (precision / k) * centred[position_item[lo:hi:k]][:, None, None]  # −(1/σ²)(I − J/k) prior
        free = ~anchor[position_item[lo:hi]].reshape(-1, k)
        block *= free[:, :, None] & free[:, None, :]
        block[:, np.arange(k), np.arange(k)] += ~free
    grad[anchor] = 0.0
    return grad, hess


def _solve_blocks(hess: np.ndarray, rhs: np.ndarray, lay: _Blocks) -> np.ndarray:
    """``A⁻¹ rhs`` block by block (rhs and result in item order)."""
    position_item = lay.position_item
    out = np.empty_like(rhs)
    for k, lo, hi, flo, fhi in lay.runs:
        items = position_item[lo:hi]
        out[items] = np.linalg.solve(hess[flo:fhi].reshape(-1, k, k), rhs[items].reshape(-1, k, 1)).ravel()
    return out


def _prompt_objective(u: np.ndarray, rows: tuple[np.ndarray, ...], row_prompt: np.ndarray, precision: float,
                      link: Link, prior: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """``L`` per prompt at ``u``, and the rows' ``∂ℓ/∂d``, ``−∂²ℓ/∂d²`` (for the next Newton system)."""
    item_prompt, centred, n_prompts = prior
    ell, grad_d, curv = _row_terms(u, *rows, link)
    deviation = _prior_deviation(u, item_prompt, centred, n_prompts)
    value = np.bincount(row_prompt, ell, n_prompts) - np.bincount(item_prompt, 0.5 * precision * deviation**2,
                                                                   n_prompts)
    return value, grad_d, curv


def fit_utilities(item_prompt: np.ndarray, a: np.ndarray, b: np.ndarray, wins: np.ndarray, votes: np.ndarray,
                  anchor: np.ndarray | None = None, link: Link = "probit", prior_sd: float = 2.0,
                  tol: float = 1e-9, max_iter: int = 100, prior_centre: PriorCentre = "prompt") -> UtilityFit:
    """MAP utilities of all items at once (see the module docstring).

    ``item_prompt`` [n_items]: prompt code (0..P−1) of each item; ``a``, ``b`` [rows]: item
    indices of each comparison (same prompt); ``wins`` = votes for ``a`` (``p·n``), ``votes`` = ``n``;
    ``anchor`` [n_items]: items fixed at utility 0.
    """
    item_prompt = np.asarray(item_prompt, np.int64)
    n = item_prompt.size
    anchor = np.zeros(n, bool) if anchor is None else np.asarray(anchor, bool)
    rows = (np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(wins, np.float64),
            np.asarray(votes, np.float64))
    if np.any(item_prompt[rows[0]] != item_prompt[rows[1]]):
        raise ValueError("a comparison joins responses of two different prompts")
    if n == 0:
        return UtilityFit(np.zeros(0), np.zeros(0), np.zeros(0, bool), 0, 0.0)
    precision = 1.0 / prior_sd**2
    n_prompts = int(item_prompt.max()) + 1
    row_prompt = item_prompt[rows[0]]
    lay = _layout(item_prompt)
    index = _hessian_index(rows[0], rows[1], lay)
    u = np.zeros(n)
    has_anchor = np.bincount(item_prompt, anchor, n_prompts)[item_prompt] > 0
    prior = (item_prompt, has_anchor & (prior_centre == "prompt"), n_prompts)
    value, grad_d, curv = _prompt_objective(u, rows, row_prompt, precision, link, prior)
    grad, hess = _newton_system(u, grad_d, curv, rows, index, lay, anchor, precision, prior)
    iterations = 0
    while iterations < max_iter and np.abs(grad).max() > tol:
        step = _solve_blocks(hess, grad, lay)
        scale = np.ones(n_prompts)
        for _ in range(40):  # halve the step of prompts whose objective went down
            trial = u + scale[item_prompt] * step
            new_value, grad_d, curv = _prompt_objective(trial, rows, row_prompt, precision, link, prior)
            worse = new_value < value - 1e-12 * np.maximum(1.0, np.abs(value))
            if not worse.any():
                break
            scale[worse] *= 0.5
        u, value = trial, new_value
        grad, hess = _newton_system(u, grad_d, curv, rows, index, lay, anchor, precision, prior)
        iterations += 1
    max_gradient = float(np.abs(grad).max())
    utility, se = _centre_and_errors(u, hess, lay, anchor, item_prompt, n_prompts)
    return UtilityFit(utility, se, has_anchor, iterations, max_gradient)


def _centre_and_errors(u: np.ndarray, hess: np.ndarray, lay: _Blocks, anchor: np.ndarray, item_prompt: np.ndarray,
                       n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre unanchored prompts; ``se`` from the diagonal of the (centred) block inverses."""
    position_item = lay.position_item
    variance = np.empty_like(u)
    utility = u.copy()
    has_anchor = np.bincount(item_prompt, anchor, n_prompts) > 0
    for k, lo, hi, flo, fhi in lay.runs:
        items = position_item[lo:hi].reshape(-1, k)
        cov = np.linalg.inv(hess[flo:fhi].reshape(-1, k, k))
        diag = np.diagonal(cov, axis1=1, axis2=2)
        centred = diag - 2.0 * cov.mean(axis=2) + cov.mean(axis=(1, 2))[:, None]
        anchored = has_anchor[item_prompt[items[:, 0]]]
        variance[items] = np.where(anchored[:, None], diag, centred)
        utility[items] = np.where(anchored[:, None], u[items], u[items] - u[items].mean(axis=1, keepdims=True))
    variance[anchor] = 0.0
    utility[anchor] = 0.0
    return utility, np.sqrt(np.maximum(variance, 0.0))


def fit_targets(pairs: pa.Table, responses: pa.Table | None = None, model: str = "thurstone",
                prior_sd: float = 2.0, prior_centre: PriorCentre = "prompt",
                votes: np.ndarray | None = None) -> tuple[pa.Table, dict]:
    """The ``TARGETS`` table (one row per response in ``pairs``) and fit statistics.

    ``responses`` may carry the optional boolean ``is_anchor``; absent: no prompt is anchored. ``votes``: each
    row's vote count ``n`` (default its ``n_votes``; the annotator-weighted ``Σ w`` of ``pairs.annotator_weights``).
    The link is stored in the table's schema metadata (``link``: probit | logit).
    """
    link = LINKS[model]
    n_rows = pairs.num_rows
    ids = pa.concat_arrays([pairs["response_a_id"].combine_chunks(), pairs["response_b_id"].combine_chunks()])
    codes = key_codes(ids)
    _, first = np.unique(codes, return_index=True)
    row_of_first = first % max(n_rows, 1)
    prompt_ids = pairs["prompt_id"].combine_chunks()
    item_prompt = key_codes(prompt_ids.take(pa.array(row_of_first)))
    response_ids = ids.take(pa.array(first))
    anchor = np.zeros(first.size, bool)
    if responses is not None and "is_anchor" in responses.column_names:
        anchor_ids = responses.filter(pc.fill_null(responses["is_anchor"], False))["response_id"]
        anchor = np.asarray(pc.is_in(response_ids, value_set=anchor_ids.combine_chunks()), bool)
    label = pairs["label"].to_numpy(zero_copy_only=False).astype(np.float64)
    if votes is None:
        votes = pairs["n_votes"].to_numpy(zero_copy_only=False)
    votes = np.asarray(votes, np.float64)
    fit = fit_utilities(item_prompt, codes[:n_rows], codes[n_rows:], label * votes, votes, anchor, link, prior_sd,
                        prior_centre=prior_centre)
    order = np.lexsort((np.arange(first.size), item_prompt))
    take = pa.array(order)
    table = pa.table(
        {
            "prompt_id": prompt_ids.take(pa.array(row_of_first[order])),
            "response_id": response_ids.take(take),
            "split": pairs["split"].combine_chunks().take(pa.array(row_of_first[order])),
            "utility": fit.utility[order],
            "se": fit.se[order],
            "anchored": fit.anchored[order],
        },
        schema=schema.TARGETS.with_metadata({"link": link, "model": model, "prior_sd": repr(prior_sd),
                                             "prior_centre": prior_centre}),
    )
    stats = {"model": model, "link": link, "prior_centre": prior_centre, "responses": int(first.size),
             "iterations": fit.iterations,
             "max_gradient": fit.max_gradient, "anchored_prompts": int(np.unique(item_prompt[fit.anchored]).size),
             "se_median": float(np.median(fit.se)) if first.size else None}
    return table, stats
