"""Inter-annotator agreement over rankings (used by the validate stage).

Input is the canonical ``RANKINGS`` table (:mod:`rewardline.data.schema`): one row per
(ranking, response) with ``rank`` (1 = best, tied responses share a rank). Only
*overlapping* prompts, ranked by two or more distinct annotators, say anything
about agreement; every metric below is computed over them alone.

Data rules
----------
* An *item* is a prompt together with a connected group of its rankings (two rankings
  connect when they share a response): rankings of the same prompt over disjoint
  response sets (two sources sampling different answers to one instruction) are
  different items. "Prompt" below means item.
* Rows with a null ``prompt_id``, ``annotator_id``, ``response_id`` or ``rank`` are ignored.
* A ranking is identified by (prompt, annotator). The contract makes ``ranking_id``
  unique per pair; if a pair nevertheless has several ranking ids, the one with the
  smallest ``ranking_id`` (string order) is kept and the others are dropped. A response
  listed twice in one ranking keeps its best (smallest) rank.
* Krippendorff's alpha uses every ranked (prompt, response) unit of the overlapping
  prompts, missing values allowed. Kendall's W, pairwise agreement and the
  leave-one-out scores need complete blocks, so they use each prompt's *common*
  responses (those ranked by all of its annotators), re-ranked within that set;
  prompts with fewer than two common responses are skipped by them.
* Ties are mid-ranks ("average" ranks): a tie group occupying places k+1..k+t gets
  rank k + (t + 1) / 2 for each member, so W, pairwise agreement and the leave-one-out
  scores are the same for dense, competition or mid-rank input (alpha reads raw ranks).
* Exclusion (:func:`annotators_to_exclude`) needs evidence: an annotator whose score is
  None (never overlaps) or rests on fewer than ``min_overlap_prompts`` prompts is kept.

Metrics
-------
* ``krippendorff_alpha``: ordinal alpha, ``1 - D_o / D_e`` (formulas at :func:`_alpha`; the
  ``krippendorff`` package is the tests' oracle). Coders = annotators, units = (prompt, response),
  value = the raw ``rank``. Built from the units x values count matrix (``value_counts``), never the
  annotators x units matrix; only units ranked by two or more annotators count. The coincidence
  matrix is one (V, units) @ (units, V) product: memory ~2 * 8 * units * V bytes for V distinct
  rank values.
* ``kendall_w``: mean over prompts of the tie-corrected Kendall's W (see :func:`kendall_w`).
  Prompts on which every annotator tied every response have a zero denominator:
  W is undefined there and they are skipped.
* ``pairwise_agreement``: over all (annotator pair, response pair) comparisons of a
  prompt, pooled over prompts, the share on which both annotators give the same
  direction ``sign(rank_i - rank_j)``. A tie is its own direction (sign 0): two ties
  agree, a tie against a strict preference disagrees.
* ``annotator_agreement``: for annotator a on prompt p, the leave-one-out consensus is
  the mean mid-rank of the *other* annotators of p; a's score on p is Spearman's rho
  between a's mid-ranks and the mid-ranks of that consensus (both ranked again, so it
  equals ``scipy.stats.spearmanr``). rho is undefined (skipped) when either vector is
  constant. The annotator's agreement is the mean rho over the prompts where it is
  defined (``annotator_scored_prompts`` of them), or None if there are none.

Everything is vectorised: rows are integer-coded and sorted once; overlapping prompts
with the same (m annotators, n responses) shape are stacked into (P, m, n) arrays and
the loop runs over the handful of distinct shapes (in bounded-size chunks), not prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import rankdata

NO_OVERLAP = "no prompt was ranked by two or more annotators"
#: Upper bound on the elements of one (P, m, n, n) chunk of pairwise comparisons.
_CHUNK_ELEMENTS = 4_000_000


@dataclass
class AgreementReport:
    """Agreement metrics over the overlapping prompts of a rankings table.

    A metric is None when it is undefined on the data (``reason`` says why), never a
    made-up number.
    """

    krippendorff_alpha: float | None
    kendall_w: float | None
    pairwise_agreement: float | None
    annotator_agreement: dict[str, float | None]
    annotator_prompts: dict[str, int]
    annotator_overlap_prompts: dict[str, int]
    n_prompts: int
    n_overlap_prompts: int
    reason: str | None
    #: prompts on which the annotator's leave-one-out rho was defined (the mean's support).
    annotator_scored_prompts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict (plain Python floats and ints, None for undefined)."""
        return asdict(self)


def kendall_w(ranks: np.ndarray) -> np.ndarray:
    """Tie-corrected Kendall's W of each (m judges x n items) block of mid-ranks.

    ``ranks`` has shape (..., m, n). With column sums ``R_i = sum_j r_ji``::

        S = sum_i (R_i - m (n + 1) / 2)^2
        T = sum_j sum_{tie groups of judge j} (t^3 - t)
        W = 12 S / (m^2 (n^3 - n) - m T)

    T is read off the mid-ranks: a tie group of size t lowers a judge's sum of squared
    deviations from (n + 1) / 2 by (t^3 - t) / 12, so ``T_j = (n^3 - n) - 12 SS_j``.
    Blocks whose denominator is 0 (every judge tied everything) get NaN.
    """
    m, n = ranks.shape[-2:]
    centred = ranks - (n + 1) / 2
    s = np.square(centred.sum(axis=-2)).sum(axis=-1)
    t = ((n**3 - n) - 12 * np.square(centred).sum(axis=-1)).sum(axis=-1)
    denom = m * m * (n**3 - n) - m * t
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 1e-9 * m * m * (n**3 - n), 12 * s / denom, np.nan)


def loo_spearman(ranks: np.ndarray) -> np.ndarray:
    """Spearman's rho of each judge against the mean rank of the other judges.

    ``ranks`` (..., m, n) mid-ranks, m >= 2. Consensus of judge j:
    ``c_j = (sum_k r_k - r_j) / (m - 1)``, mid-ranked again; then
    ``rho_j = <r_j - rbar, c_j - cbar> / (|r_j - rbar| |c_j - cbar|)``.
    NaN where either vector is constant. Returns shape (..., m).
    """
    m = ranks.shape[-2]
    consensus = (ranks.sum(axis=-2, keepdims=True) - ranks) / (m - 1)
    x = ranks - ranks.mean(axis=-1, keepdims=True)
    c = rankdata(consensus, axis=-1, method="average")
    c -= c.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.square(x).sum(axis=-1) * np.square(c).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 1e-12, (x * c).sum(axis=-1) / norm, np.nan)


def pairwise_counts(ranks: np.ndarray) -> tuple[int, int]:
    """(agreeing, total) (annotator pair, response pair) comparisons over blocks (P, m, n).

    For each response pair i < j, with ``c_s`` annotators giving direction
    ``s = sign(r_i - r_j)`` in {-1, 0, +1}, the agreeing annotator pairs are
    ``sum_s c_s (c_s - 1) / 2`` out of ``m (m - 1) / 2``.
    """
    p, m, n = ranks.shape
    i, j = np.triu_indices(n, 1)
    sign = np.sign(ranks[..., i] - ranks[..., j])  # (P, m, n(n-1)/2)
    agree = 0
    for s in (-1, 0, 1):
        c = (sign == s).sum(axis=1, dtype=np.int64)
        agree += int((c * (c - 1) // 2).sum())
    return agree, p * len(i) * m * (m - 1) // 2


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Integer codes (int64) and the dictionary of a null-free string column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _smallest_ranking_mask(ranking_id: pa.ChunkedArray, pair: np.ndarray) -> np.ndarray:
    """Rows whose ``ranking_id`` is the smallest (string order) of their (prompt, annotator) ``pair``."""
    rid, dictionary = _codes(ranking_id)
    position = np.empty(len(dictionary), np.int64)
    position[pc.sort_indices(dictionary).to_numpy()] = np.arange(len(dictionary))
    rid = position[rid]
    smallest = np.full(int(pair.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, pair, rid)
    return rid == smallest[pair]


def _coincidences(unit: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value domain, ordinal coincidence matrix) of per-row unit codes and rank values.

    ``value_counts[u, v]`` = number of annotators who gave unit u the v-th smallest rank value; units
    coded by a single annotator add nothing to the coincidence matrix and are dropped. The matrix is a sum
    over units, so the matrices of disjoint sets of units (prompt buckets) add up to the matrix of their
    union (Krippendorff 2011, with m_u = Σ_c n_uc ≥ 2)::

        o_ck = Σ_u (n_uc·n_uk − [c = k]·n_uc) / (m_u − 1)
    """
    domain, value = np.unique(rank, return_inverse=True)
    if rank.size == 0:
        return domain, np.zeros((0, 0))
    n_units = int(unit.max()) + 1
    counts = np.bincount(unit * len(domain) + value, minlength=n_units * len(domain))
    counts = counts.reshape(n_units, len(domain))
    counts = counts[counts.sum(axis=1) >= 2]
    if len(counts) == 0:
        return domain, np.zeros((len(domain), len(domain)))
    per_pair = counts / (counts.sum(axis=1, keepdims=True) - 1.0)  # n_uc / (m_u − 1)
    return domain, counts.T @ per_pair - np.diag(per_pair.sum(axis=0))


def _alpha(coincidences: np.ndarray) -> tuple[float | None, str | None]:
    """Ordinal Krippendorff's alpha from the coincidence matrix ``o`` over the value domain (Krippendorff 2011)::

        n_c = Σ_k o_ck,   n = Σ_c n_c,   e_ck = (n_c·n_k − [c = k]·n_c) / (n − 1)     (expected coincidences)
        δ²_ck = (Σ_{g=min(c,k)}^{max(c,k)} n_g − (n_c + n_k) / 2)²                    (ordinal distance)
        α = 1 − Σ o_ck·δ²_ck / Σ e_ck·δ²_ck

    ``krippendorff.alpha(level_of_measurement="ordinal")`` gives the same value (tests/validation)."""
    if len(coincidences) < 2:  # one row / column per value of the domain
        return None, "krippendorff_alpha: every rank value is identical"
    if not coincidences.any():
        return None, "krippendorff_alpha: no response was ranked by two or more annotators"
    n_v = coincidences.sum(axis=0)
    if np.count_nonzero(n_v) < 2:  # D_e = 0: alpha is undefined (the package refuses a one-value domain)
        return None, "krippendorff_alpha: every response ranked by two or more annotators got the same rank value"
    expected = (np.outer(n_v, n_v) - np.diag(n_v)) / (n_v.sum() - 1.0)
    index = np.arange(len(n_v))
    low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
    through = np.concatenate(([0.0], np.cumsum(n_v)))  # Σ_{g<i} n_g
    distances = (through[high + 1] - through[low] - (n_v[:, None] + n_v[None, :]) / 2.0) ** 2
    return float(1 - (coincidences * distances).sum() / (expected * distances).sum()), None


def _blocks(prompt: np.ndarray, m_prompt: np.ndarray) -> Iterator[np.ndarray]:
    """Row indices shaped (P, m, n): one array per (m, n) prompt shape (and bounded-size chunk).

    Rows must be sorted by (prompt, annotator, response) and each prompt's rows complete
    (m annotators x the same n responses), so a prompt is m * n contiguous rows. Prompts
    with fewer than two responses are left out.
    """
    rows = np.bincount(prompt)
    start = np.concatenate(([0], np.cumsum(rows)[:-1]))
    present = np.flatnonzero(rows)
    m = m_prompt[present]
    n = rows[present] // m
    keep = n >= 2
    present, m, n = present[keep], m[keep], n[keep]
    for mm, nn in sorted(set(zip(m.tolist(), n.tolist(), strict=True))):
        starts = start[present[(m == mm) & (n == nn)]]
        chunk = max(1, _CHUNK_ELEMENTS // (mm * nn * nn))
        offsets = np.arange(mm * nn)
        for lo in range(0, len(starts), chunk):
            block = starts[lo : lo + chunk, None] + offsets
            yield block.reshape(-1, mm, nn)


def _refine_by_response_set(prompt: np.ndarray, pair: np.ndarray, response_id: pa.ChunkedArray) -> np.ndarray:
    """Item code = (prompt, connected group of its rankings that share responses).

    Rankings of one prompt over *disjoint* response sets (two sources sampling different
    answers to the same instruction) say nothing about each other: they become separate
    items. Connectivity comes from ``scipy.sparse.csgraph.connected_components`` on the
    bipartite graph rankings -- responses.
    """
    response, _ = _codes(response_id)
    n_pairs, n_resp = int(pair.max()) + 1, int(response.max()) + 1
    graph = coo_matrix((np.ones(pair.size, np.int8), (pair, n_pairs + response)), shape=(n_pairs + n_resp,) * 2)
    _, component = connected_components(graph, directed=False)
    key = prompt.astype(np.int64) * (n_pairs + n_resp) + component[pair]
    return np.unique(key, return_inverse=True)[1].astype(np.int64)


def _overlap_rows(table: pa.Table, prompt: np.ndarray, annotator: np.ndarray,
                  m_prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prompt, annotator, response, rank) codes of the rows of prompts with ≥ 2 annotators, sorted by
    (prompt, annotator, response, rank); a response listed twice in a ranking keeps its best rank."""
    overlap = m_prompt[prompt] >= 2
    table, prompt, annotator = table.filter(pa.array(overlap)), prompt[overlap], annotator[overlap]
    response, _ = _codes(table.column("response_id"))
    rank = table.column("rank").to_numpy().astype(np.float64)
    order = np.lexsort((rank, response, annotator, prompt))
    prompt, annotator, response, rank = prompt[order], annotator[order], response[order], rank[order]
    first = np.ones(len(order), bool)
    first[1:] = (prompt[1:] != prompt[:-1]) | (annotator[1:] != annotator[:-1]) | (response[1:] != response[:-1])
    return prompt[first], annotator[first], response[first], rank[first]


def _block_statistics(prompt: np.ndarray, annotator: np.ndarray, rank: np.ndarray, m_prompt: np.ndarray,
                      n_annot: int) -> tuple[float, int, int, int, np.ndarray, np.ndarray]:
    """Sums over the complete blocks (prompts grouped by their annotator count m, one batched
    computation per m): Kendall's W (sum, defined count), agreeing / compared pairs, and per
    annotator the sum and count of its leave-one-out Spearman ρ against the others' mean rank."""
    w_sum, w_count, agree, compared = 0.0, 0, 0, 0
    rho_sum = np.zeros(n_annot)
    rho_count = np.zeros(n_annot, np.int64)
    for rows in _blocks(prompt, m_prompt):
        ranks = rankdata(rank[rows], axis=-1, method="average")
        w = kendall_w(ranks)
        w_sum += float(np.nansum(w))
        w_count += int(np.isfinite(w).sum())
        a, c = pairwise_counts(ranks)
        agree, compared = agree + a, compared + c
        rho = loo_spearman(ranks).ravel()
        who = annotator[rows[:, :, 0]].ravel()
        ok = np.isfinite(rho)
        rho_sum += np.bincount(who[ok], weights=rho[ok], minlength=n_annot)
        rho_count += np.bincount(who[ok], minlength=n_annot)
    return w_sum, w_count, agree, compared, rho_sum, rho_count


@dataclass
class AgreementSums:
    """The additive parts of the agreement metrics over a set of prompts (one bucket, or several added with
    :meth:`add`): every metric is a ratio of sums over prompts, or a function of the summed coincidence
    matrix, so the sums of disjoint prompt sets add up to those of their union. Per-annotator sums are
    keyed by annotator id."""

    n_prompts: int = 0
    n_overlap: int = 0
    annotator_prompts: dict[str, int] = field(default_factory=dict)
    annotator_overlap_prompts: dict[str, int] = field(default_factory=dict)
    rho_sum: dict[str, float] = field(default_factory=dict)
    rho_count: dict[str, int] = field(default_factory=dict)
    domain: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coincidences: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    w_sum: float = 0.0
    w_count: int = 0
    agree: int = 0
    compared: int = 0

    def add(self, other: AgreementSums) -> AgreementSums:
        """Add ``other`` (the sums of a disjoint set of prompts) into ``self``; returns ``self``."""
        self.n_prompts += other.n_prompts
        self.n_overlap += other.n_overlap
        for mine, theirs in ((self.annotator_prompts, other.annotator_prompts),
                             (self.annotator_overlap_prompts, other.annotator_overlap_prompts),
                             (self.rho_sum, other.rho_sum), (self.rho_count, other.rho_count)):
            for name, value in theirs.items():
                mine[name] = mine[name] + value if name in mine else value
        domain = np.union1d(self.domain, other.domain)
        total = np.zeros((len(domain), len(domain)))
        for part_domain, part in ((self.domain, self.coincidences), (other.domain, other.coincidences)):
            if part.size:
                at = np.searchsorted(domain, part_domain)
                total[np.ix_(at, at)] += part
        self.domain, self.coincidences = domain, total
        self.w_sum += other.w_sum
        self.w_count += other.w_count
        self.agree += other.agree
        self.compared += other.compared
        return self


def measure_agreement(rankings: pa.Table) -> AgreementReport:
    """Agreement metrics of a ``RANKINGS`` table (see the module docstring for definitions)."""
    return agreement_report(agreement_sums(rankings))


def agreement_report(sums: AgreementSums) -> AgreementReport:
    """The metrics of summed prompts (:class:`AgreementSums`)."""
    names = sorted(sums.annotator_prompts)  # reports list annotators sorted by id
    counts = {"annotator_prompts": {n: sums.annotator_prompts[n] for n in names},
              "annotator_overlap_prompts": {n: sums.annotator_overlap_prompts.get(n, 0) for n in names}}
    if sums.n_prompts == 0:
        return AgreementReport(None, None, None, {}, {}, {}, 0, 0, "the rankings table has no usable rows")
    if sums.n_overlap == 0:
        return AgreementReport(None, None, None, dict.fromkeys(names), n_prompts=sums.n_prompts,
                               n_overlap_prompts=0, reason=NO_OVERLAP, annotator_scored_prompts=dict.fromkeys(names, 0),
                               **counts)
    alpha, alpha_reason = _alpha(sums.coincidences)
    reasons = [alpha_reason] if alpha_reason else []
    if sums.compared == 0:
        reasons.append(
            "kendall_w, pairwise_agreement: no overlapping prompt has two responses ranked by all of its annotators"
        )
    elif sums.w_count == 0:
        reasons.append("kendall_w: on every overlapping prompt every annotator tied all responses")
    scored = {n: sums.rho_count.get(n, 0) for n in names}
    return AgreementReport(
        krippendorff_alpha=alpha,
        kendall_w=sums.w_sum / sums.w_count if sums.w_count else None,
        pairwise_agreement=sums.agree / sums.compared if sums.compared else None,
        annotator_agreement={n: (float(np.float64(sums.rho_sum[n]) / scored[n]) if scored[n] else None)
                             for n in names},
        n_prompts=sums.n_prompts,
        n_overlap_prompts=sums.n_overlap,
        reason="; ".join(reasons) or None,
        annotator_scored_prompts=scored,
        **counts,
    )


def agreement_sums(rankings: pa.Table) -> AgreementSums:
    """The additive parts (:class:`AgreementSums`) of the agreement metrics of a ``RANKINGS`` table."""
    columns = ["prompt_id", "annotator_id", "response_id", "rank"]
    if "ranking_id" in rankings.column_names:
        columns.append("ranking_id")
    table = rankings.select(columns).drop_null()
    if table.num_rows == 0:
        return AgreementSums()

    # Rankings = distinct (prompt, annotator) pairs; m_p = distinct annotators of prompt p.
    prompt, _ = _codes(table.column("prompt_id"))
    annotator, annotators = _codes(table.column("annotator_id"))
    n_annot = len(annotators)
    pairs, pair = np.unique(prompt * n_annot + annotator, return_inverse=True)
    if "ranking_id" in columns and pc.count_distinct(table.column("ranking_id")).as_py() > len(pairs):
        keep = _smallest_ranking_mask(table.column("ranking_id"), pair)
        table, prompt, annotator = table.filter(pa.array(keep)), prompt[keep], annotator[keep]
    pair = np.unique(prompt * n_annot + annotator, return_inverse=True)[1]
    prompt = _refine_by_response_set(prompt, pair, table.column("response_id"))
    pairs, pair = np.unique(prompt * n_annot + annotator, return_inverse=True)
    pair_prompt, pair_annot = pairs // n_annot, pairs % n_annot
    m_prompt = np.bincount(pair_prompt)
    names = annotators.to_pylist()

    def per_annotator(values: np.ndarray) -> dict:
        return {names[i]: values[i].item() for i in range(n_annot)}

    sums = AgreementSums(
        n_prompts=int((m_prompt > 0).sum()), n_overlap=int((m_prompt >= 2).sum()),
        annotator_prompts=per_annotator(np.bincount(pair_annot, minlength=n_annot)),
        annotator_overlap_prompts=per_annotator(np.bincount(pair_annot[m_prompt[pair_prompt] >= 2],
                                                            minlength=n_annot)),
    )
    if sums.n_overlap == 0:
        return sums
    prompt, annotator, response, rank = _overlap_rows(table, prompt, annotator, m_prompt)

    # Units = (prompt, response); coders per unit = annotators who ranked it.
    _, unit, coders = np.unique(prompt * (int(response.max()) + 1) + response, return_inverse=True, return_counts=True)
    sums.domain, sums.coincidences = _coincidences(unit, rank)

    # Complete blocks: the responses every annotator of the prompt ranked.
    common = coders[unit] == m_prompt[prompt]
    prompt, annotator, rank = prompt[common], annotator[common], rank[common]
    sums.w_sum, sums.w_count, sums.agree, sums.compared, rho_sum, rho_count = _block_statistics(
        prompt, annotator, rank, m_prompt, n_annot)
    scored = rho_count > 0
    sums.rho_sum = {names[i]: rho_sum[i].item() for i in np.flatnonzero(scored)}
    sums.rho_count = {names[i]: rho_count[i].item() for i in np.flatnonzero(scored)}
    return sums


def annotators_to_exclude(
    report: AgreementReport, min_agreement: float, min_overlap_prompts: int = 5
) -> dict[str, str]:
    """Annotators whose leave-one-out agreement is below ``min_agreement``, with the reason.

    Only annotators with evidence are judged: an agreement of None (no overlap, or rho
    undefined everywhere) or one resting on fewer than ``min_overlap_prompts`` scored
    prompts never excludes anyone ("not enough data" is not "careless").
    """
    excluded = {}
    for name, score in sorted(report.annotator_agreement.items()):
        n = report.annotator_scored_prompts.get(name, report.annotator_overlap_prompts.get(name, 0))
        if score is not None and n >= min_overlap_prompts and score < min_agreement:
            excluded[name] = f"agreement {score:.2f} < {min_agreement:g} over {n} prompts"
    return excluded
