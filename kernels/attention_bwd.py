"""Flash attention backward kernels (Triton JIT): delta = rowsum(dO * O), dK/dV, dQ.

FlashAttention-2, Algorithm 2 (Dao 2023, arXiv:2307.08691), split in two passes so that no
atomics are needed: dK/dV programs own a kv block and loop over q (and over the q heads of a GQA
group, summing in registers); dQ programs own a q block and loop over kv.
"""

import triton
import triton.language as tl

from kernels.attention_fwd import kv_range, load_tile, mma, rows_desc, store_tile

# Ints that only pick programs, size the q matrix or key the autotuner: not specialised.
DKDV_NOT_SPECIALIZED = ["H", "KV_H", "GROUP", "Q_ROWS"]
DQ_NOT_SPECIALIZED = ["BATCH", "H", "GROUP"]
DELTA_NOT_SPECIALIZED = ["H"]


@triton.jit(do_not_specialize=DELTA_NOT_SPECIALIZED)
def attn_bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_os, stride_db, stride_dh, stride_ds,
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
    q = load_tile(q_base, q_desc, first + start_m, n_rows, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    do = load_tile(do_base, do_desc, first + start_m, n_rows, stride_ds, BLOCK_M, HEAD_DIM,
                    USE_DESC)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    in_q = offs_m < SEQ_Q
    lse = tl.load(lse_ptr + offs_m, mask=in_q, other=float("inf"))
    delta = tl.load(delta_ptr + offs_m, mask=in_q, other=0.0)
    sT = mma(k, tl.trans(q), tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), F32_DOT) * qk_scale
    if MASK:  # causal, bottom-right: key n is seen by row m iff n <= m + SEQ_K - SEQ_Q
        sT = tl.where(offs_n[:, None] <= offs_m[None, :] + (SEQ_K - SEQ_Q), sT, float("-inf"))
    pT = tl.math.exp2(sT - lse[None, :])
    dv = mma(pT.to(do.dtype), do, dv, F32_DOT)
    dpT = mma(v, tl.trans(do), tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), F32_DOT)
    dsT = pT * (dpT - delta[None, :])
    dk = mma(dsT.to(q.dtype), q, dk, F32_DOT)
    return dk, dv



@triton.jit(do_not_specialize=DKDV_NOT_SPECIALIZED)
def attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale,
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
    k_desc = rows_desc(k_base, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v_desc = rows_desc(v_base, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    dk_desc = rows_desc(dk_base, SEQ_K, stride_dks, BLOCK_N, HEAD_DIM, USE_DESC)
    dv_desc = rows_desc(dv_base, SEQ_K, stride_dvs, BLOCK_N, HEAD_DIM, USE_DESC)

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k = load_tile(k_base, k_desc, start_n, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v = load_tile(v_base, v_desc, start_n, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
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
    q_desc = rows_desc(Q, Q_ROWS, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    do_desc = rows_desc(DO, Q_ROWS, stride_ds, BLOCK_M, HEAD_DIM, USE_DESC)

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
    store_tile(dk_base, dk_desc, start_n, SEQ_K, stride_dks, dk, BLOCK_N, HEAD_DIM, USE_DESC)
    store_tile(dv_base, dv_desc, start_n, SEQ_K, stride_dvs, dv.to(DV.dtype.element_ty),
                BLOCK_N, HEAD_DIM, USE_DESC)


@triton.jit
def _dq_step(dq, q, do, lse, delta, k_base, k_desc, v_base, v_desc, start_n, offs_m, qk_scale,
             stride_ks, stride_vs, SEQ_Q, SEQ_K,
             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             CAUSAL: tl.constexpr, MASK: tl.constexpr, USE_DESC: tl.constexpr,
             F32_DOT: tl.constexpr):
    """One kv block's contribution to a q block's dQ: dS = P * (dO V^T - delta); dQ += dS K."""
    k = load_tile(k_base, k_desc, start_n, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v = load_tile(v_base, v_desc, start_n, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    s = mma(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32_DOT) * qk_scale
    if MASK:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = offs_n[None, :] < SEQ_K
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None] + (SEQ_K - SEQ_Q))
        s = tl.where(keep, s, float("-inf"))
    p = tl.math.exp2(s - lse[:, None])
    dp = mma(do, tl.trans(v), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32_DOT)
    ds = p * (dp - delta[:, None])
    dq = mma(ds.to(k.dtype), k, dq, F32_DOT)
    return dq



@triton.jit(do_not_specialize=DQ_NOT_SPECIALIZED)
def attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, sm_scale,
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
    q_desc = rows_desc(q_base, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    k_desc = rows_desc(k_base, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v_desc = rows_desc(v_base, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    do_desc = rows_desc(do_base, SEQ_Q, stride_ds, BLOCK_M, HEAD_DIM, USE_DESC)
    dq_desc = rows_desc(dq_base, SEQ_Q, stride_dqs, BLOCK_M, HEAD_DIM, USE_DESC)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    in_q = offs_m < SEQ_Q
    q = load_tile(q_base, q_desc, start_m, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    do = load_tile(do_base, do_desc, start_m, SEQ_Q, stride_ds, BLOCK_M, HEAD_DIM, USE_DESC)
    row = pid_bh.to(tl.int64) * SEQ_Q
    lse = tl.load(LSE + row + offs_m, mask=in_q, other=float("inf"))
    delta = tl.load(DELTA + row + offs_m, mask=in_q, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # LOG2E

    full_end, end = kv_range(start_m, SEQ_Q, SEQ_K, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, full_end, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, k_desc, v_base, v_desc, start_n, offs_m,
                      qk_scale, stride_ks, stride_vs, SEQ_Q, SEQ_K,
                      HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, False, USE_DESC, F32_DOT)
    for start_n in range(full_end, end, BLOCK_N):
        dq = _dq_step(dq, q, do, lse, delta, k_base, k_desc, v_base, v_desc, start_n, offs_m,
                      qk_scale, stride_ks, stride_vs, SEQ_Q, SEQ_K,
                      HEAD_DIM, BLOCK_M, BLOCK_N, CAUSAL, True, USE_DESC, F32_DOT)

    dq = (dq * sm_scale).to(DQ.dtype.element_ty)
    store_tile(dq_base, dq_desc, start_m, SEQ_Q, stride_dqs, dq, BLOCK_M, HEAD_DIM, USE_DESC)

