"""Flash attention forward and backward in Triton (FlashAttention-2 algorithm).

`attention(q, k, v, *, causal=False, sm_scale=None)` takes (batch, heads, seq, head_dim) tensors in
bf16, fp16 or fp32, head_dim 64, 128 or 256, any sequence lengths (q and kv may differ), and
grouped-query attention (k and v with kv_heads dividing q's heads). It is differentiable.

Design (FlashAttention-2, Dao 2023, arXiv:2307.08691; layout after Triton tutorial 06):
- forward: one program per (q block, batch*head); online softmax in base 2 over kv blocks; saves
  the log-sum-exp (base 2) per query row for the backward.
- backward: a preprocess kernel for delta = rowsum(dO * O); a dK/dV kernel with one program per
  (kv block, batch*kv_head) that loops over the q heads sharing that kv head and over q blocks,
  recomputing P from the saved log-sum-exp (so GQA's dK/dV sums happen in registers: no atomics,
  deterministic); a dQ kernel with one program per (q block, batch*head) looping over kv blocks.
- causal masking is aligned bottom-right, as in FlashAttention >= 2.1: query i sees key j iff
  j <= i + (seq_k - seq_q). With equal lengths this is the usual lower triangle. When seq_q >
  seq_k the first seq_q - seq_k query rows see no key: their output and gradients are zero.
- tiles move by tensor descriptors (TMA) on Hopper and by masked pointer loads elsewhere; both
  are one kernel with a constexpr switch, and both run in the interpreter (the tests use both).
- bf16 under the Triton interpreter: operands are upcast to fp32 before tl.dot (the interpreter's
  bf16 dot is wrong, triton-lang/triton#11584); on a GPU the dots take bf16 directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# the package __init__ (run before this module) sets TRITON_INTERPRET when there is no GPU
from kernels import interpreted

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
HEAD_DIMS = (64, 128, 256)
LOG2E = 1.4426950408889634  # 1/ln(2): softmax runs in base 2 because exp2 is the fast hardware op


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _mma(a, b, acc, F32_DOT: tl.constexpr):
    """acc + a @ b; F32_DOT: upcast to fp32 and multiply in IEEE fp32 (fp32 inputs, or bf16 in
    the interpreter, whose bf16 dot is wrong)."""
    if F32_DOT:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _rows_desc(base, n_rows, stride_row, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
               USE_DESC: tl.constexpr):
    """A TMA descriptor over one (n_rows, HEAD_DIM) head matrix, or the base pointer itself.

    One descriptor per head (not one over all heads) so that rows past the sequence end read as
    zeros and stores there are dropped: any sequence length works without masks.
    """
    if USE_DESC:
        d = tl.make_tensor_descriptor(base, shape=[n_rows, HEAD_DIM], strides=[stride_row, 1],
                                      block_shape=[BLOCK, HEAD_DIM])
    else:
        d = base
    return d


@triton.jit
def _load_tile(base, desc, row0, n_rows, stride_row, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
               USE_DESC: tl.constexpr):
    """Rows [row0, row0 + BLOCK) of a head matrix; rows past n_rows read as zeros."""
    if USE_DESC:
        tile = desc.load([row0, 0])
    else:
        rows = row0 + tl.arange(0, BLOCK)
        cols = tl.arange(0, HEAD_DIM)
        tile = tl.load(base + rows[:, None] * stride_row + cols[None, :],
                       mask=rows[:, None] < n_rows, other=0.0)
    return tile


@triton.jit
def _store_tile(base, desc, row0, n_rows, stride_row, tile, BLOCK: tl.constexpr,
                HEAD_DIM: tl.constexpr, USE_DESC: tl.constexpr):
    """Store rows [row0, row0 + BLOCK) of a head matrix, dropping rows past n_rows."""
    if USE_DESC:
        desc.store([row0, 0], tile)
    else:
        rows = row0 + tl.arange(0, BLOCK)
        cols = tl.arange(0, HEAD_DIM)
        tl.store(base + rows[:, None] * stride_row + cols[None, :], tile,
                 mask=rows[:, None] < n_rows)


@triton.jit
def _kv_range(start_m, SEQ_Q, SEQ_K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr):
    """For the q block at start_m: kv blocks [0, full_end) need no mask, [full_end, end) do.

    Causal, bottom-right: row i sees keys <= i + SEQ_K - SEQ_Q. Every row of the block sees the
    keys below start_m + diag + 1; no row sees keys at or past start_m + BLOCK_M + diag.
    A partial last kv block (SEQ_K not a multiple of BLOCK_N) always goes to the masked part.
    """
    if CAUSAL:
        diag = SEQ_K - SEQ_Q
        seen_by_all = tl.minimum(tl.maximum(start_m + diag + 1, 0), SEQ_K)
        end = tl.minimum(tl.maximum(start_m + BLOCK_M + diag, 0), SEQ_K)
    else:
        seen_by_all = SEQ_K
        end = SEQ_K
    full_end = (seen_by_all // BLOCK_N) * BLOCK_N
    return full_end, end


@triton.jit
def _fwd_step(acc, l_i, m_i, q, k_base, k_desc, v_base, v_desc, start_n, offs_m, qk_scale,
              stride_ks, stride_vs, SEQ_Q, SEQ_K,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr, MASK: tl.constexpr, USE_DESC: tl.constexpr,
              F32_DOT: tl.constexpr):
    """One kv block of the online softmax (FlashAttention-2, Algorithm 1)."""
    k = _load_tile(k_base, k_desc, start_n, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    s = _mma(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32_DOT) * qk_scale
    if MASK:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = offs_n[None, :] < SEQ_K
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None] + (SEQ_K - SEQ_Q))
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_sub = m_new
    if MASK:
        # a row that has seen only masked keys keeps max -inf; subtracting it would give NaN
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_sub[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = _load_tile(v_base, v_desc, start_n, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    acc = _mma(p.to(v.dtype), v, acc * alpha[:, None], F32_DOT)
    return acc, l_i, m_new


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, sm_scale,
              stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
              stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
              BATCH, H, GROUP, SEQ_Q, SEQ_K,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr, USE_DESC: tl.constexpr, F32_DOT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    kvh = h // GROUP
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    o_base = O + b * stride_ob + h * stride_oh
    q_desc = _rows_desc(q_base, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    k_desc = _rows_desc(k_base, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v_desc = _rows_desc(v_base, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    o_desc = _rows_desc(o_base, SEQ_Q, stride_os, BLOCK_M, HEAD_DIM, USE_DESC)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # LOG2E
    q = _load_tile(q_base, q_desc, start_m, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)

    full_end, end = _kv_range(start_m, SEQ_Q, SEQ_K, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, full_end, BLOCK_N):
        acc, l_i, m_i = _fwd_step(acc, l_i, m_i, q, k_base, k_desc, v_base, v_desc, start_n,
                                  offs_m, qk_scale, stride_ks, stride_vs, SEQ_Q, SEQ_K,
                                  HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, False, USE_DESC, F32_DOT)
    for start_n in range(full_end, end, BLOCK_N):
        acc, l_i, m_i = _fwd_step(acc, l_i, m_i, q, k_base, k_desc, v_base, v_desc, start_n,
                                  offs_m, qk_scale, stride_ks, stride_vs, SEQ_Q, SEQ_K,
                                  HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, True, USE_DESC, F32_DOT)

    # rows that saw no key (causal with seq_q > seq_k) give 0 and log-sum-exp +inf, so that the
    # backward's P = exp2(s - lse) is exactly 0 for them
    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    lse = tl.where(seen, m_i + tl.math.log2(l_safe), float("inf"))
    tl.store(LSE + pid_bh.to(tl.int64) * SEQ_Q + offs_m, lse, mask=offs_m < SEQ_Q)
    o = (acc / l_safe[:, None]).to(O.dtype.element_ty)
    _store_tile(o_base, o_desc, start_m, SEQ_Q, stride_os, o, BLOCK_M, HEAD_DIM, USE_DESC)


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_os, stride_db, stride_dh, stride_ds,
                    H, SEQ_Q, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d dO_id * O_id (FlashAttention-2, Algorithm 2, line 4), in fp32."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HEAD_DIM)
    mask = rows[:, None] < SEQ_Q
    o = tl.load(O + b * stride_ob + h * stride_oh + rows[:, None] * stride_os + cols[None, :],
                mask=mask, other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + rows[:, None] * stride_ds + cols[None, :],
                 mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + pid_bh.to(tl.int64) * SEQ_Q + rows, delta, mask=rows < SEQ_Q)


@triton.jit
def _dkdv_step(dk, dv, k, v, q_base, q_desc, do_base, do_desc, first, n_rows, lse_ptr, delta_ptr,
               start_m, offs_n, qk_scale, stride_qs, stride_ds, SEQ_Q, SEQ_K,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               MASK: tl.constexpr, USE_DESC: tl.constexpr, F32_DOT: tl.constexpr):
    """One q block's contribution to a kv block's dK, dV, in transposed form (kv rows first).

    dV += P^T dO;  dS = P * (dO V^T - delta);  dK += dS^T Q  (scale applied once at the end).
    q and dO rows are first + start_m + i of a matrix with n_rows rows. Rows past SEQ_Q (zeros,
    or the next head's rows on the descriptor path) read lse = +inf, so their P is exactly 0.
    """
    q = _load_tile(q_base, q_desc, first + start_m, n_rows, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    do = _load_tile(do_base, do_desc, first + start_m, n_rows, stride_ds, BLOCK_M, HEAD_DIM,
                    USE_DESC)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    in_q = offs_m < SEQ_Q
    lse = tl.load(lse_ptr + offs_m, mask=in_q, other=float("inf"))
    delta = tl.load(delta_ptr + offs_m, mask=in_q, other=0.0)
    sT = _mma(k, tl.trans(q), tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), F32_DOT) * qk_scale
    if MASK:  # causal, bottom-right: key n is seen by row m iff n <= m + SEQ_K - SEQ_Q
        sT = tl.where(offs_n[:, None] <= offs_m[None, :] + (SEQ_K - SEQ_Q), sT, float("-inf"))
    pT = tl.math.exp2(sT - lse[None, :])
    dv = _mma(pT.to(do.dtype), do, dv, F32_DOT)
    dpT = _mma(v, tl.trans(do), tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), F32_DOT)
    dsT = pT * (dpT - delta[None, :])
    dk = _mma(dsT.to(q.dtype), q, dk, F32_DOT)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale,
                   stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                   stride_vb, stride_vh, stride_vs, stride_db, stride_dh, stride_ds,
                   stride_dkb, stride_dkh, stride_dks, stride_dvb, stride_dvh, stride_dvs,
                   H, KV_H, GROUP, SEQ_Q, SEQ_K, Q_ROWS,
                   HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   CAUSAL: tl.constexpr, USE_DESC: tl.constexpr, F32_DOT: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bkv = tl.program_id(1)
    b = (pid_bkv // KV_H).to(tl.int64)
    kvh = (pid_bkv % KV_H).to(tl.int64)
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    dk_base = DK + b * stride_dkb + kvh * stride_dkh
    dv_base = DV + b * stride_dvb + kvh * stride_dvh
    k_desc = _rows_desc(k_base, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v_desc = _rows_desc(v_base, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    dk_desc = _rows_desc(dk_base, SEQ_K, stride_dks, BLOCK_N, HEAD_DIM, USE_DESC)
    dv_desc = _rows_desc(dv_base, SEQ_K, stride_dvs, BLOCK_N, HEAD_DIM, USE_DESC)

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k = _load_tile(k_base, k_desc, start_n, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v = _load_tile(v_base, v_desc, start_n, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # LOG2E

    # q blocks [lo, mid) see this kv block partly (mask), [mid, SEQ_Q) see all of it
    if CAUSAL:
        diag = SEQ_K - SEQ_Q
        lo = (tl.maximum(start_n - diag, 0) // BLOCK_M) * BLOCK_M
        mid = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - diag, 0), BLOCK_M) * BLOCK_M
    else:
        lo = 0
        mid = 0

    # Descriptor path: q and dO are dense (batch*heads*SEQ_Q, HEAD_DIM) matrices (the host makes
    # sure), so one descriptor each, made once here rather than per head inside the loop below.
    q_desc = _rows_desc(Q, Q_ROWS, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    do_desc = _rows_desc(DO, Q_ROWS, stride_ds, BLOCK_M, HEAD_DIM, USE_DESC)

    # GQA: the q heads kvh*GROUP .. kvh*GROUP + GROUP - 1 share this kv head; their dK, dV sum
    for g in range(GROUP):
        h = kvh * GROUP + g
        row = (b * H + h) * SEQ_Q
        if USE_DESC:
            q_base = Q
            do_base = DO
            first = row.to(tl.int32)
            n_rows = Q_ROWS
        else:
            q_base = Q + b * stride_qb + h * stride_qh
            do_base = DO + b * stride_db + h * stride_dh
            first = 0
            n_rows = SEQ_Q
        lse_ptr = LSE + row
        delta_ptr = DELTA + row
        for start_m in range(lo, mid, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_base, q_desc, do_base, do_desc, first, n_rows,
                                lse_ptr, delta_ptr, start_m, offs_n, qk_scale, stride_qs,
                                stride_ds, SEQ_Q, SEQ_K,
                                HEAD_DIM, BLOCK_M, BLOCK_N, True, USE_DESC, F32_DOT)
        for start_m in range(mid, SEQ_Q, BLOCK_M):
            dk, dv = _dkdv_step(dk, dv, k, v, q_base, q_desc, do_base, do_desc, first, n_rows,
                                lse_ptr, delta_ptr, start_m, offs_n, qk_scale, stride_qs,
                                stride_ds, SEQ_Q, SEQ_K,
                                HEAD_DIM, BLOCK_M, BLOCK_N, False, USE_DESC, F32_DOT)

    dk = (dk * sm_scale).to(DK.dtype.element_ty)
    _store_tile(dk_base, dk_desc, start_n, SEQ_K, stride_dks, dk, BLOCK_N, HEAD_DIM, USE_DESC)
    _store_tile(dv_base, dv_desc, start_n, SEQ_K, stride_dvs, dv.to(DV.dtype.element_ty),
                BLOCK_N, HEAD_DIM, USE_DESC)


@triton.jit
def _dq_step(dq, q, do, lse, delta, k_base, k_desc, v_base, v_desc, start_n, offs_m, qk_scale,
             stride_ks, stride_vs, SEQ_Q, SEQ_K,
             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             CAUSAL: tl.constexpr, MASK: tl.constexpr, USE_DESC: tl.constexpr,
             F32_DOT: tl.constexpr):
    """One kv block's contribution to a q block's dQ: dS = P * (dO V^T - delta); dQ += dS K."""
    k = _load_tile(k_base, k_desc, start_n, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v = _load_tile(v_base, v_desc, start_n, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    s = _mma(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32_DOT) * qk_scale
    if MASK:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = offs_n[None, :] < SEQ_K
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None] + (SEQ_K - SEQ_Q))
        s = tl.where(keep, s, float("-inf"))
    p = tl.math.exp2(s - lse[:, None])
    dp = _mma(do, tl.trans(v), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32_DOT)
    ds = p * (dp - delta[:, None])
    dq = _mma(ds.to(k.dtype), k, dq, F32_DOT)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, sm_scale,
                 stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                 stride_vb, stride_vh, stride_vs, stride_db, stride_dh, stride_ds,
                 stride_dqb, stride_dqh, stride_dqs,
                 BATCH, H, GROUP, SEQ_Q, SEQ_K,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, USE_DESC: tl.constexpr, F32_DOT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    kvh = h // GROUP
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    do_base = DO + b * stride_db + h * stride_dh
    dq_base = DQ + b * stride_dqb + h * stride_dqh
    q_desc = _rows_desc(q_base, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    k_desc = _rows_desc(k_base, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v_desc = _rows_desc(v_base, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    do_desc = _rows_desc(do_base, SEQ_Q, stride_ds, BLOCK_M, HEAD_DIM, USE_DESC)
    dq_desc = _rows_desc(dq_base, SEQ_Q, stride_dqs, BLOCK_M, HEAD_DIM, USE_DESC)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    in_q = offs_m < SEQ_Q
    q = _load_tile(q_base, q_desc, start_m, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    do = _load_tile(do_base, do_desc, start_m, SEQ_Q, stride_ds, BLOCK_M, HEAD_DIM, USE_DESC)
    row = pid_bh.to(tl.int64) * SEQ_Q
    lse = tl.load(LSE + row + offs_m, mask=in_q, other=float("inf"))
    delta = tl.load(DELTA + row + offs_m, mask=in_q, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # LOG2E

    full_end, end = _kv_range(start_m, SEQ_Q, SEQ_K, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, full_end, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, k_desc, v_base, v_desc, start_n, offs_m,
                      qk_scale, stride_ks, stride_vs, SEQ_Q, SEQ_K,
                      HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, False, USE_DESC, F32_DOT)
    for start_n in range(full_end, end, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, k_desc, v_base, v_desc, start_n, offs_m,
                      qk_scale, stride_ks, stride_vs, SEQ_Q, SEQ_K,
                      HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, True, USE_DESC, F32_DOT)

    dq = (dq * sm_scale).to(DQ.dtype.element_ty)
    _store_tile(dq_base, dq_desc, start_m, SEQ_Q, stride_dqs, dq, BLOCK_M, HEAD_DIM, USE_DESC)


# ----------------------------------------------------------------------------------------------
# Configurations (plain data) and launching
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockConfig:
    """Tile sizes and launch shape of one kernel.

    block_m: query rows per tile; block_n: key/value rows per tile. The forward and dQ kernels
    own a q block and loop over kv blocks; the dK/dV kernel owns a kv block and loops over q.
    """

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


def _grid(ms, ns, warps, stages) -> list[BlockConfig]:
    return [BlockConfig(m, n, w, s) for m in ms for n in ns for w in warps for s in stages]


# Search spaces for the GPU autotuner. sm90: BLOCK_M 128 with BLOCK_N 64/128, 4-8 warps, 2-3
# stages (the shapes of FlashAttention-2/3 and Triton tutorial 06 on Hopper; 64-row blocks kept
# for head_dim 256, whose 128-row tiles overflow registers). "portable": any other CUDA GPU,
# smaller tiles for the smaller shared memory of sm80/sm86/sm89. The backward spaces follow
# tutorial 06 (kv block 64-128 owned, q steps of 32-64) and FlashAttention-2's sm80 backward.
CONFIGS: dict[str, dict[str, list[BlockConfig]]] = {
    "sm90": {
        "fwd": _grid((128,), (64, 128), (4, 8), (2, 3)) + _grid((64,), (64,), (4,), (2, 3)),
        "dkdv": _grid((32, 64), (64, 128), (4, 8), (2, 3)),
        "dq": _grid((64, 128), (32, 64), (4, 8), (2, 3)),
    },
    "portable": {
        "fwd": _grid((64, 128), (32, 64), (4, 8), (2, 3, 4)),
        "dkdv": _grid((16, 32), (64, 128), (4, 8), (2, 3)),
        "dq": _grid((32, 64, 128), (32, 64), (4, 8), (2, 3)),  # 32 rows: hd256 in 99 KiB
    },
}

# Used only when no config above fits: fp32 at head_dim 256 (4-byte tiles of 256 columns). One
# stage and 32-row tiles (16-row q steps in 99 KiB). Compiled here without a GPU (Triton 3.8,
# fp32, causal), shared memory: sm90 with descriptors fwd 37 KB, dkdv 98 KB, dq 66 KB; sm86 with
# pointers fwd 70 KB, dkdv 100 KB, dq 98 KB (limit 99 KiB). Not measured on a GPU yet.
FALLBACK_CONFIGS: dict[str, dict[str, BlockConfig]] = {
    "sm90": {k: BlockConfig(32, 32, 4, 1) for k in ("fwd", "dkdv", "dq")},
    "portable": {"fwd": BlockConfig(32, 32, 4, 1), "dkdv": BlockConfig(16, 32, 4, 1),
                 "dq": BlockConfig(16, 32, 4, 1)},
}

# The interpreter runs one config (autotune needs a GPU). block_m != block_n on purpose, so the
# tests exercise the causal block arithmetic with unequal tiles; small tiles keep it quick.
CPU_CONFIGS: dict[str, BlockConfig] = {
    "fwd": BlockConfig(32, 16, 4, 1),
    "dkdv": BlockConfig(16, 32, 4, 1),
    "dq": BlockConfig(32, 16, 4, 1),
}

DELTA_BLOCK_M = 64  # rows per program of the delta preprocess (memory-bound; any size works)
REGS_PER_THREAD_FOR_ACC = 128  # heuristic: fp32 accumulators above this per thread spill


def config_fits(kind: str, cfg: BlockConfig, head_dim: int, elem_bytes: int,
                smem_bytes: int) -> bool:
    """Prune configs that cannot fit (estimates; the autotuner also skips compile failures).

    Shared memory: the tile held for the whole program once, plus the two streamed tiles per
    pipeline stage (fwd: q + stages*(k, v); dkdv: k, v + stages*(q, dO); dq: q, dO +
    stages*(k, v)). Registers: the fp32 accumulators (fwd, dq: block_m x d; dkdv: dK and dV,
    2 x block_n x d) must stay under REGS_PER_THREAD_FOR_ACC per thread.
    """
    m, n, d = cfg.block_m, cfg.block_n, head_dim
    if kind == "fwd":
        smem, acc = m * d + cfg.num_stages * 2 * n * d, m * d
    elif kind == "dkdv":
        smem, acc = 2 * n * d + cfg.num_stages * 2 * m * d, 2 * n * d
    elif kind == "dq":
        smem, acc = 2 * m * d + cfg.num_stages * 2 * n * d, m * d
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    threads = 32 * cfg.num_warps
    return smem * elem_bytes <= smem_bytes and acc <= REGS_PER_THREAD_FOR_ACC * threads


def gpu_configs(kind: str, arch: str, head_dim: int, elem_bytes: int,
                smem_bytes: int) -> list[BlockConfig]:
    """The configs the GPU autotuner tries: those of CONFIGS[arch][kind] that fit, else the
    small FALLBACK_CONFIGS one (fp32 at head_dim 256), else a ValueError saying why."""
    space = CONFIGS[arch][kind]
    fits = [c for c in space if config_fits(kind, c, head_dim, elem_bytes, smem_bytes)]
    if fits:
        return fits
    fallback = FALLBACK_CONFIGS[arch][kind]
    if config_fits(kind, fallback, head_dim, elem_bytes, smem_bytes):
        return [fallback]
    raise ValueError(f"attention: no {kind} tile fits head_dim {head_dim} with {elem_bytes}-byte "
                     f"elements in {smem_bytes} bytes of shared memory; use bf16/fp16 or a "
                     "smaller head_dim")


def _arch(device: torch.device) -> str:
    major, _ = torch.cuda.get_device_capability(device)
    return "sm90" if major == 9 else "portable"


# Opt-in shared memory per block when torch does not report it (CUDA C Programming Guide,
# "Technical Specifications per Compute Capability": 227 KiB sm90, 163 KiB sm80, 99 KiB sm86/89).
SMEM_BY_MAJOR = {9: 232448, 8: 166912}
SMEM_DEFAULT = 101376


def _smem_bytes(device: torch.device) -> int:
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_block_optin", 0)
    if smem:
        return smem
    if props.major == 8 and props.minor != 0:
        return SMEM_DEFAULT
    return SMEM_BY_MAJOR.get(props.major, SMEM_DEFAULT)


_TUNERS: dict[tuple, object] = {}
_KERNELS = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}
_TUNE_KEY = ["SEQ_Q", "SEQ_K", "HEAD_DIM", "CAUSAL", "USE_DESC", "F32_DOT"]
# The best tile also depends on how many programs run (batch x heads) and on GQA sharing, so
# shapes differing only in batch, heads or group must not share a tuned config. fwd and dq take
# BATCH for this key alone; dkdv runs batch x KV_H programs and its Q_ROWS (b*h*seq_q) fixes batch.
TUNE_KEYS = {
    "fwd": _TUNE_KEY + ["BATCH", "H", "GROUP"],
    "dkdv": _TUNE_KEY + ["H", "KV_H", "GROUP", "Q_ROWS"],
    "dq": _TUNE_KEY + ["BATCH", "H", "GROUP"],
}


def _tuner(kind: str, device: torch.device, head_dim: int, elem_bytes: int):
    """GPU only: an autotuned launcher for one kernel, configs pruned for this head_dim/dtype."""
    arch = _arch(device)
    smem = _smem_bytes(device)
    key = (kind, arch, smem, head_dim, elem_bytes)
    if key not in _TUNERS:
        fits = gpu_configs(kind, arch, head_dim, elem_bytes, smem)
        configs = [triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n},
                                 num_warps=c.num_warps, num_stages=c.num_stages) for c in fits]
        _TUNERS[key] = triton.autotune(configs=configs, key=TUNE_KEYS[kind])(_KERNELS[kind])
    return _TUNERS[key]


def _cuda_alloc(size: int, alignment: int, stream):
    """Scratch for device-side tensor descriptors (Triton asks the host for global memory)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _launch(kind: str, grid_rows: int, grid_y: int, args: tuple, *, head_dim: int,
            elem_bytes: int, device: torch.device, use_desc: bool, **meta) -> None:
    """Launch one kernel: one fixed config in the interpreter, the autotuner on a GPU.

    grid_rows is the sequence length the program axis 0 tiles (q for fwd/dq, kv for dkdv).
    """
    tile = "BLOCK_N" if kind == "dkdv" else "BLOCK_M"
    if interpreted():
        cfg = CPU_CONFIGS[kind]
        grid = (triton.cdiv(grid_rows, cfg.block_m if tile == "BLOCK_M" else cfg.block_n), grid_y)
        _KERNELS[kind][grid](*args, HEAD_DIM=head_dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                             USE_DESC=use_desc, **meta)
        return
    # GPU path (not exercised on CPU machines)
    if use_desc:
        triton.set_allocator(_cuda_alloc)  # per-thread setting in Triton >= 3.4; cheap to repeat
    grid = lambda META: (triton.cdiv(grid_rows, META[tile]), grid_y)
    with torch.cuda.device(device):
        _tuner(kind, device, head_dim, elem_bytes)[grid](*args, HEAD_DIM=head_dim,
                                                         USE_DESC=use_desc, **meta)


# ----------------------------------------------------------------------------------------------
# Host side: validation, path choice, autograd
# ----------------------------------------------------------------------------------------------


def default_scale(head_dim: int) -> float:
    """Softmax scale 1/sqrt(d) (Vaswani et al. 2017, "Attention is all you need", 3.2.1)."""
    return 1.0 / math.sqrt(head_dim)


def _validate(q, k, v, causal, sm_scale, for_kernel: bool = True) -> float:
    """Check the inputs; return the softmax scale. for_kernel: also check Triton can run here."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, seq, head_dim), "
                             f"got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; supported: bfloat16, float16, float32")
        if 0 in t.shape:
            raise ValueError(f"{name} has an empty dimension: shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v are on different devices: {q.device}, {k.device}, {v.device}")
    if for_kernel and q.device.type == "cpu" and not interpreted():
        raise ValueError("tensors are on the CPU but Triton kernels run on the GPU "
                         "(TRITON_INTERPRET is not set): move q, k, v to CUDA")
    if for_kernel and q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {q.device}; use CUDA (or CPU via the interpreter)")
    b, h, _, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if k.shape[0] != b:
        raise ValueError(f"batch sizes differ: q has {b}, k/v have {k.shape[0]}")
    if k.shape[3] != d:
        raise ValueError(f"head_dim differs: q has {d}, k/v have {k.shape[3]}")
    if d not in HEAD_DIMS:
        raise ValueError(f"head_dim {d} is not supported; supported: {HEAD_DIMS}")
    if h % k.shape[1]:
        raise ValueError(f"kv heads ({k.shape[1]}) must divide q heads ({h}) for grouped-query "
                         "attention")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if sm_scale is None:
        return default_scale(d)
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)):
        raise TypeError(f"sm_scale must be a number or None, got {type(sm_scale).__name__}")
    if not (math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"sm_scale must be finite and > 0, got {sm_scale}")
    return float(sm_scale)


def _rowmajor(t: torch.Tensor) -> torch.Tensor:
    """Head rows must be contiguous (stride 1 along head_dim) for both load paths."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _dense_rows(t: torch.Tensor) -> torch.Tensor:
    """t if its (batch, head, seq) rows follow each other at one stride, else a contiguous copy."""
    b, h, s, _ = t.shape
    rs = t.stride(2)
    dense = t.stride(-1) == 1 and t.stride(1) == s * rs and t.stride(0) == h * s * rs
    return t if dense else t.contiguous()


def _desc_ok(*ts: torch.Tensor) -> bool:
    """TMA needs 16-byte aligned base addresses and 16-byte multiple strides."""
    for t in ts:
        e = t.element_size()
        if t.data_ptr() % 16 or any((s * e) % 16 for s in t.stride()[:-1]) or t.stride(-1) != 1:
            return False
    return True


def _choose_desc(use_desc: bool | None, *ts: torch.Tensor) -> bool:
    """Tensor descriptors on Hopper (sm90) when alignment allows; pointers elsewhere.

    Auto (None) picks pointers in the interpreter: the portable path is the default on CPU; the
    tests force the descriptor path too.
    """
    aligned = _desc_ok(*ts)
    if use_desc is None:
        return ts[0].is_cuda and not interpreted() and _arch(ts[0].device) == "sm90" and aligned
    if use_desc and not aligned:
        raise ValueError("tensor descriptors need 16-byte aligned data and strides")
    return bool(use_desc)


def _f32_dot(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreted())


def _forward(q, k, v, causal: bool, sm_scale: float, use_desc: bool | None):
    b, h, sq, d = q.shape
    kv_h, sk = k.shape[1], k.shape[2]
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((b, h, sq), device=q.device, dtype=torch.float32)
    desc = _choose_desc(use_desc, q, k, v, o)
    args = (q, k, v, o, lse, sm_scale, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            *o.stride()[:3], b, h, h // kv_h, sq, sk)
    _launch("fwd", sq, b * h, args, head_dim=d, elem_bytes=q.element_size(), device=q.device,
            use_desc=desc, CAUSAL=causal, F32_DOT=_f32_dot(q.dtype))
    return o, lse


def _backward(do, q, k, v, o, lse, causal: bool, sm_scale: float, use_desc: bool | None):
    b, h, sq, d = q.shape
    kv_h, sk = k.shape[1], k.shape[2]
    do = _rowmajor(do)
    delta = torch.empty_like(lse)
    _attn_bwd_delta[(triton.cdiv(sq, DELTA_BLOCK_M), b * h)](
        o, do, delta, *o.stride()[:3], *do.stride()[:3], h, sq,
        HEAD_DIM=d, BLOCK_M=DELTA_BLOCK_M)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    desc = _choose_desc(use_desc, q, k, v, do, dq, dk, dv)
    if desc:  # the dK/dV kernel reads q and dO as one (b*h*seq_q, d) matrix each
        q, do = _dense_rows(q), _dense_rows(do)
    common = dict(head_dim=d, elem_bytes=q.element_size(), device=q.device, use_desc=desc,
                  CAUSAL=causal, F32_DOT=_f32_dot(q.dtype))
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    _launch("dkdv", sk, b * kv_h,
            (q, k, v, do, lse, delta, dk, dv, sm_scale, *strides, *dk.stride()[:3],
             *dv.stride()[:3], h, kv_h, h // kv_h, sq, sk, b * h * sq), **common)
    _launch("dq", sq, b * h,
            (q, k, v, do, lse, delta, dq, sm_scale, *strides, *dq.stride()[:3],
             b, h, h // kv_h, sq, sk), **common)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, use_desc):
        o, lse = _forward(q, k, v, causal, sm_scale, use_desc)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale, ctx.use_desc = causal, sm_scale, use_desc
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale, ctx.use_desc)
        return dq, dk, dv, None, None, None


def attention_impl(q, k, v, *, causal: bool = False, sm_scale: float | None = None,
                   use_desc: bool | None = None) -> torch.Tensor:
    """`attention` with the tile-movement path exposed: use_desc True (tensor descriptors),
    False (pointers) or None (auto: descriptors on Hopper, pointers elsewhere)."""
    scale = _validate(q, k, v, causal, sm_scale)
    q, k, v = _rowmajor(q), _rowmajor(k), _rowmajor(v)
    return _FlashAttention.apply(q, k, v, causal, scale, use_desc)


def attention(q, k, v, *, causal: bool = False, sm_scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * sm_scale [+ causal mask]) v over (batch, heads, seq, head_dim) tensors.

    k and v may have fewer heads than q (grouped-query attention; they must divide q's heads)
    and a different sequence length. Causal masking is bottom-right aligned (query i sees keys
    j <= i + seq_k - seq_q). sm_scale defaults to 1/sqrt(head_dim). Differentiable.
    """
    return attention_impl(q, k, v, causal=causal, sm_scale=sm_scale)


# ----------------------------------------------------------------------------------------------
# fp32 reference (torch math), memory-bounded, with the analytic backward
# ----------------------------------------------------------------------------------------------


def causal_mask(seq_q: int, seq_k: int, device) -> torch.Tensor:
    """Boolean (seq_q, seq_k) mask, True where query i may see key j: j <= i + seq_k - seq_q."""
    i = torch.arange(seq_q, device=device)[:, None]
    j = torch.arange(seq_k, device=device)[None, :]
    return j <= i + (seq_k - seq_q)


def reference_attention(q, k, v, *, causal: bool = False, sm_scale: float | None = None,
                        do: torch.Tensor | None = None, budget_bytes: int = 1 << 30):
    """fp32 math attention; returns (o, dq, dk, dv) in fp32 (grads None when `do` is None).

    Works in chunks of (batch*head) rows so that the (rows, seq_q, seq_k) score matrices stay
    within about budget_bytes (four such fp32 matrices live at once), which keeps the reference
    for seq 16k on the GPU. The backward is the textbook one: dV = P^T dO, dP = dO V^T,
    dS = P * (dP - rowsum(dO * O)), dQ = scale dS K, dK = scale dS^T Q; GQA sums dK, dV over
    the q heads of each kv head. Rows that see no key (causal, seq_q > seq_k) give zeros.
    """
    scale = _validate(q, k, v, causal, sm_scale, for_kernel=False)
    b, h, sq, d = q.shape
    kv_h, sk = k.shape[1], k.shape[2]
    group = h // kv_h
    qf, kf, vf = q.reshape(b * h, sq, d), k.reshape(b * kv_h, sk, d), v.reshape(b * kv_h, sk, d)
    dof = do.reshape(b * h, sq, d) if do is not None else None
    mask = causal_mask(sq, sk, q.device) if causal else None
    rows = max(1, budget_bytes // (4 * 4 * sq * sk))
    f32 = dict(device=q.device, dtype=torch.float32)
    o = torch.empty(b * h, sq, d, **f32)
    dq = torch.empty(b * h, sq, d, **f32) if do is not None else None
    dk = torch.zeros(b * kv_h, sk, d, **f32) if do is not None else None
    dv = torch.zeros(b * kv_h, sk, d, **f32) if do is not None else None
    for r0 in range(0, b * h, rows):
        r1 = min(r0 + rows, b * h)
        # q row r is (batch r // h, head r % h); its kv row is batch * kv_h + head // group
        kv_idx = torch.arange(r0, r1, device=q.device)
        kv_idx = (kv_idx // h) * kv_h + (kv_idx % h) // group
        qc = qf[r0:r1].float()
        kc, vc = kf[kv_idx].float(), vf[kv_idx].float()
        s = torch.matmul(qc, kc.transpose(-1, -2)) * scale
        if mask is not None:
            s.masked_fill_(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num_(0.0)  # all-masked rows: NaN -> 0
        del s
        oc = torch.matmul(p, vc)
        o[r0:r1] = oc
        if do is None:
            continue
        doc = dof[r0:r1].float()
        dv.index_add_(0, kv_idx, torch.matmul(p.transpose(-1, -2), doc))
        ds = torch.matmul(doc, vc.transpose(-1, -2))
        ds.sub_((doc * oc).sum(-1, keepdim=True)).mul_(p)
        del p
        dq[r0:r1] = torch.matmul(ds, kc) * scale
        dk.index_add_(0, kv_idx, torch.matmul(ds.transpose(-1, -2), qc) * scale)
    o = o.reshape(b, h, sq, d)
    if do is None:
        return o, None, None, None
    return (o, dq.reshape(b, h, sq, d), dk.reshape(b, kv_h, sk, d), dv.reshape(b, kv_h, sk, d))
