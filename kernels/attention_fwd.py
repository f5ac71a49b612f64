"""Flash attention forward kernel and the tile helpers both directions share (Triton JIT).

FlashAttention-2 (Dao 2023, arXiv:2307.08691), laid out after Triton tutorial 06. Tiles move by
tensor descriptors (TMA) when USE_DESC, by masked pointer loads otherwise; one kernel, both
paths, both run in the interpreter.
"""

import triton
import triton.language as tl

# Ints that only pick programs or key the autotuner: never specialised (==1, %16), so batch,
# head count and GQA group do not multiply compiles.
NOT_SPECIALIZED = ["BATCH", "H", "GROUP"]


@triton.jit
def mma(a, b, acc, F32_DOT: tl.constexpr):
    """acc + a @ b; F32_DOT: upcast to fp32 and multiply in IEEE fp32 (fp32 inputs, or bf16 in
    the interpreter, whose bf16 dot is wrong)."""
    if F32_DOT:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def rows_desc(base, n_rows, stride_row, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
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
def load_tile(base, desc, row0, n_rows, stride_row, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
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
def store_tile(base, desc, row0, n_rows, stride_row, tile, BLOCK: tl.constexpr,
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
def kv_range(start_m, SEQ_Q, SEQ_K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
    k = load_tile(k_base, k_desc, start_n, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    s = mma(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), F32_DOT) * qk_scale
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
    v = load_tile(v_base, v_desc, start_n, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    acc = mma(p.to(v.dtype), v, acc * alpha[:, None], F32_DOT)
    return acc, l_i, m_new



@triton.jit(do_not_specialize=NOT_SPECIALIZED)
def attn_fwd(Q, K, V, O, LSE, sm_scale,
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
    q_desc = rows_desc(q_base, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)
    k_desc = rows_desc(k_base, SEQ_K, stride_ks, BLOCK_N, HEAD_DIM, USE_DESC)
    v_desc = rows_desc(v_base, SEQ_K, stride_vs, BLOCK_N, HEAD_DIM, USE_DESC)
    o_desc = rows_desc(o_base, SEQ_Q, stride_os, BLOCK_M, HEAD_DIM, USE_DESC)

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # LOG2E
    q = load_tile(q_base, q_desc, start_m, SEQ_Q, stride_qs, BLOCK_M, HEAD_DIM, USE_DESC)

    full_end, end = kv_range(start_m, SEQ_Q, SEQ_K, BLOCK_M, BLOCK_N, CAUSAL)
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
    store_tile(o_base, o_desc, start_m, SEQ_Q, stride_os, o, BLOCK_M, HEAD_DIM, USE_DESC)

