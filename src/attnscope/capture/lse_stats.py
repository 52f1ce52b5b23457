"""Statistics mode on any device: one attention call that also returns each row's log-sum-exp.

Flash-attention kernels keep each query row's log-sum-exp ``lse_i = log Σ_j exp(s_ij)`` (Dao et al.
2022, "FlashAttention"; the online softmax of Milakov & Gimelshein 2018). With ``s_ij = scale q_i·k_j``
and ``p_ij = exp(s_ij - lse_i)``, a single attention call whose value rows are
``[v_j | k_j | j | [j = 0] | 0…]`` returns, for every query row, the layer's output ``Σ p v`` and

- entropy ``-Σ p log p = lse_i - Σ_j p_ij s_ij = lse_i - scale q_i·(Σ_j p_ij k_j)``;
- the mean attended key column ``Σ_j p_ij j``, hence the mean distance ``i - Σ p j`` whenever no
  allowed key lies after its query (causal masks, sliding windows, generation steps);
- the first-token mass ``p_i0``;

and the number of allowed keys comes from the mask. No (Nq, Nk) map is ever formed for these
(:data:`LSE_STATS`). The other statistics need the scores themselves: with ``lse`` known they take one
pass over score blocks without any exponential (``statistics.row_statistics_from_lse``: the largest
weight is ``exp(max_j s_ij - lse_i)``, the threshold counts compare ``s_ij`` with ``lse_i + log t``);
Gini and the mean distance of a row that attends ahead of itself need the probabilities of the block.

Which route statistics mode takes (``capture/fused.py``) was decided by measurement on a CPU
(docs/benchmarks.md): where the compiled row kernel runs (a CPU with a C compiler) it is faster for
every statistic, this route included, because the CPU flash kernel needs q and k zero-padded to the
value's width (about twice the work of a plain SDPA call). This route serves every other device (CUDA)
and a CPU without the kernel. Everything here is device-agnostic torch code except
:func:`attention_with_lse`, which picks the op that returns ``lse`` on the device: the CPU flash kernel
(``_scaled_dot_product_flash_attention_for_cpu``) or, on CUDA, the memory-efficient kernel
(``_scaled_dot_product_efficient_attention``, which takes an additive mask, float32 and a value head size
other than the query's). Inputs of any dtype are cast to float32 first: statistics and probabilities
are always float32.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..statistics import row_statistics_from_lse

# What the one attention call gives (mean_distance: only when no allowed key lies after its query).
LSE_STATS = ("entropy", "first_token_mass", "mean_distance", "allowed_keys")
DEVICES = ("cpu", "cuda")
# Width of the augmented value rounded up to this many columns (kernels prefer aligned head sizes).
_ALIGN = 8
# Scores per block of the pass that needs them: 4M float32 (16 MB) on a CPU; 64M (256 MB) on a GPU, where
# small blocks would mean thousands of kernel launches per layer at 32k tokens.
SCORE_BLOCK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}
_warned: set[str] = set()


def applies(query: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float, training: bool,
            extra: dict) -> bool:
    """Whether :func:`lse_attention` can stand in for SDPA at this call (same conditions as the kernel
    route, on any device with an attention op that returns ``lse``)."""
    if query.device.type not in DEVICES or (torch.is_grad_enabled() and query.requires_grad):
        return False
    if dropout and training:
        return False
    if any(extra.get(k) is not None for k in ("position_bias", "softcap", "sinks")):
        return False
    return attention_mask is None or attention_mask.dtype == torch.bool


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                       scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale q kᵀ + bias) v and each row's log-sum-exp, float32, on q's device.

    q, k: (B, H, N, D); v: (B, H, Nk, W); bias: additive float32 (B|1, H|1, Nq, Nk) (0 or -inf) or None;
    causal: top-left causal masking (only without bias). Returns (B, H, Nq, W) and (B, H, Nq).
    """
    nq, d, w = q.shape[2], q.shape[-1], v.shape[-1]
    if q.device.type == "cuda":
        try:
            b = bias
            if b is not None:  # the kernel reads the bias with aligned rows: pad the key dimension, then view
                nk = b.shape[-1]
                b = F.pad(b, (0, -nk % 16))[..., :nk].expand(q.shape[0], q.shape[1], nq, nk)
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, b, True, 0.0, causal, scale=scale)[:2]
            return out, lse[..., :nq]  # lse is padded to a multiple of the kernel's query block
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:  # an op this torch build or GPU lacks: the same numbers, block by block
            if "cuda" not in _warned:
                _warned.add("cuda")
                warnings.warn(f"attnscope: the memory-efficient attention kernel refused the statistics call "
                              f"({str(exc)[:200]}); computing it block by block instead (slower, same numbers)",
                              RuntimeWarning, stacklevel=2)
            return math_attention_with_lse(q, k, v, bias, scale, causal)
    # the CPU flash kernel takes one head size for q, k and v: zero columns leave q·k unchanged
    qp, kp = F.pad(q, (0, w - d)), F.pad(k, (0, w - d))  # (B, H, N, W)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        qp, kp, v, 0.0, causal, attn_mask=bias, scale=scale)
    return out, lse


def math_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                            scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attention_with_lse` with plain torch operations over blocks of query rows (any device)."""
    B, H, nq, _ = q.shape
    nk = k.shape[2]
    out = torch.empty(B, H, nq, v.shape[-1], device=q.device)
    lse = torch.empty(B, H, nq, device=q.device)
    step = max(1, SCORE_BLOCK_ELEMENTS.get(q.device.type, 1 << 22) // max(1, B * H * nk))
    cols = torch.arange(nk, device=q.device)
    for r0 in range(0, nq, step):
        qs = slice(r0, min(r0 + step, nq))
        s = torch.matmul(q[:, :, qs], k.transpose(2, 3)).mul_(scale)  # (B, H, bq, Nk)
        if bias is not None:
            s = s + bias[:, :, qs]
        elif causal:
            s.masked_fill_(cols[None, :] > torch.arange(qs.start, qs.stop, device=q.device)[:, None], float("-inf"))
        lse[:, :, qs] = torch.logsumexp(s, -1)  # (B, H, bq); -inf for a row with no allowed key
        out[:, :, qs] = torch.matmul(torch.softmax(s, -1).nan_to_num_(0.0), v)  # (B, H, bq, W)
    return out, lse


def _no_future(allowed: torch.Tensor | None, causal: bool, rel_pos: torch.Tensor, nk: int) -> bool:
    """Whether no query row may attend to a key after its own position (then |i - j| = i - j)."""
    if causal:  # row r sees keys <= r, at relative position r + rel_pos[0]
        return bool(rel_pos[0] >= 0)
    cols = torch.arange(nk, device=rel_pos.device, dtype=torch.float32)
    if allowed is None:
        return bool(nk - 1 <= rel_pos.min())
    return not bool((allowed & (cols[None, :] > rel_pos[:, None])).any())  # (B|1, 1|H, Nq, Nk)


@torch.no_grad()
def lse_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float, causal: bool, qpos0: int,
                  key_offset: int, names: tuple[str, ...],
                  block_elements: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attention output and per-row statistics of every head, from attention calls that return ``lse``.

    Arguments and results as ``fused.stats_attention``: query (B, H, Nq, D); key (B, Hkv, Nk, D); value
    (B, Hkv, Nk, Dv); attention_mask bool (B|1, 1|H, Nq, Nk), True = attend, or None; causal: implicit
    top-left causal masking; qpos0 / key_offset: absolute positions of query row 0 / key column 0.
    block_elements: scores per block of the pass that needs scores (default :data:`SCORE_BLOCK_ELEMENTS`).
    Returns the output (B, Nq, H, Dv) in the query's dtype and name -> (B, H, Nq) statistics.
    """
    B, H, nq, d = query.shape
    hkv, nk, dv = key.shape[1], key.shape[2], value.shape[-1]
    dev = query.device
    groups = H // hkv
    q = query.float()  # (B, H, Nq, D)
    k, v = key.float(), value.float()  # (B, Hkv, Nk, ·)
    if groups > 1:  # grouped-query attention: head h reads kv head h // groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, Nk, ·)
    allowed = None if attention_mask is None else attention_mask[..., :nk]  # (B|1, 1|H, Nq, Nk)
    rows = torch.arange(nq, device=dev)
    rel_pos = (rows + (qpos0 - key_offset)).float()  # (Nq,): query position minus key column 0's
    if causal:
        n_allowed = (rows + 1).clamp(max=nk).float().expand(B, H, nq)
    elif allowed is None:
        n_allowed = torch.full((B, H, nq), float(nk), device=dev)
    else:
        n_allowed = allowed.sum(-1, dtype=torch.float32).expand(B, H, nq)  # (B, H, Nq)

    # one attention call: value rows [v_j | k_j | j | [j = 0] | zero padding]
    width = -(-(dv + d + 2) // _ALIGN) * _ALIGN
    tail = torch.zeros(B, H, nk, width - dv - d, device=dev)  # (B, H, Nk, W - Dv - D)
    tail[..., 0] = torch.arange(nk, device=dev, dtype=torch.float32)
    tail[..., 0, 1] = 1.0
    v_aug = torch.cat([v, k, tail], dim=-1)  # (B, H, Nk, W)
    bias = None
    if allowed is not None:
        bias = torch.zeros(allowed.shape, device=dev).masked_fill_(~allowed, float("-inf"))  # (B|1, 1|H, Nq, Nk)
    out_aug, lse = attention_with_lse(q, k, v_aug, bias, scaling, causal)  # (B, H, Nq, W), (B, H, Nq)

    stats: dict[str, torch.Tensor] = {}
    if "entropy" in names:  # lse - Σ p s; >= 0 up to rounding (a single allowed key gives 0)
        sum_pk = out_aug[..., dv:dv + d]  # (B, H, Nq, D)
        stats["entropy"] = (lse - scaling * (q * sum_pk).sum(-1)).clamp_(min=0.0)
    if "first_token_mass" in names:  # key column 0 is position 0 only without a cache offset
        p0 = out_aug[..., dv + d + 1]
        stats["first_token_mass"] = p0.clone() if key_offset == 0 else torch.zeros_like(p0)
    if "mean_distance" in names and _no_future(allowed, causal, rel_pos, nk):
        stats["mean_distance"] = (rel_pos - out_aug[..., dv + d]).clamp_(min=0.0)  # i - Σ p j
    if "allowed_keys" in names:
        stats["allowed_keys"] = n_allowed.long()

    rest = tuple(n for n in names if n not in stats)
    if rest:  # the statistics that need scores: query-row blocks of every head, lse known
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in rest}
        k_t = k.transpose(2, 3)  # (B, H, D, Nk)
        budget = block_elements or SCORE_BLOCK_ELEMENTS.get(dev.type, 1 << 22)
        step = max(1, budget // max(1, B * H * nk))
        for r0 in range(0, nq, step):
            qs = slice(r0, min(r0 + step, nq))
            scores = torch.matmul(q[:, :, qs], k_t).mul_(scaling)  # (B, H, bq, Nk)
            blk_allowed = None
            if allowed is not None:
                blk_allowed = allowed[:, :, qs]  # (B|1, 1|H, bq, Nk)
            elif causal:
                blk_allowed = (rows[qs, None] >= torch.arange(nk, device=dev)[None, :])[None, None]  # (1, 1, bq, Nk)
            if blk_allowed is not None:
                scores.masked_fill_(~blk_allowed, float("-inf"))
            got = row_statistics_from_lse(scores, lse[:, :, qs], n_allowed[:, :, qs], rel_pos[qs] + key_offset,
                                          key_offset, rest)
            for n in rest:
                parts[n].append(got[n])
        stats.update({n: torch.cat(parts[n], dim=-1) for n in rest})

    empty = n_allowed == 0  # (B, H, Nq): no allowed key; statistics 0 as row_statistics gives them
    if bool(empty.any()):
        for n in stats:
            if n not in ("argmax", "allowed_keys"):
                stats[n] = stats[n].masked_fill(empty, 0)
    output = out_aug[..., :dv].nan_to_num(0.0).transpose(1, 2).to(query.dtype).contiguous()  # (B, Nq, H, Dv)
    return output, {n: stats[n] for n in names}
