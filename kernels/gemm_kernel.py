"""The GEMM kernels (Triton JIT functions, no autotuning: kernels/gemm.py wraps and launches them).

- `matmul_tma_kernel`: persistent, TMA loads through device-side tensor descriptors, for Hopper
  (Triton tutorial 09-persistent-matmul, triton-lang/triton python/tutorials).
- `matmul_portable_kernel`: tiled, pointer loads with masks (tutorial 03), for other GPUs.

The INTERPRET constexpr switches the two interpreter workarounds (bf16 dot upcast, bf16 rounding;
triton-lang/triton#11584); compiled kernels never do either.
"""

import triton
import triton.language as tl

# Ints of the TMA kernel that only shape descriptors, loop bounds and the autotune key: no
# ==1 / %16 specialisation, so every shape of one dtype and layout shares one binary per config
# (M = 1 decode included). The descriptors do not need the divisibility hints.
TMA_NOT_SPECIALIZED = ["M", "N", "K", "stride_a", "stride_b", "stride_c"]


@triton.jit
def _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    # Grouped ordering (tutorial 03): walk GROUP_M row-tiles down a column of tiles before moving
    # right, so consecutive tiles reuse the same B tiles while they are still in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _apply_scales(acc, scale_a_ptr, scale_b_ptr, off_m, off_n, M, N,
                  ROW_SCALE_A: tl.constexpr, COL_SCALE_B: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # C = diag(sa) (A B) diag(sb): the scales commute with the K sum, so apply them once, here.
    if ROW_SCALE_A:
        rows = off_m + tl.arange(0, BLOCK_M)
        acc = acc * tl.load(scale_a_ptr + rows, mask=rows < M, other=0.0)[:, None]
    else:
        acc = acc * tl.load(scale_a_ptr)
    if COL_SCALE_B:
        cols = off_n + tl.arange(0, BLOCK_N)
        acc = acc * tl.load(scale_b_ptr + cols, mask=cols < N, other=0.0)[None, :]
    else:
        acc = acc * tl.load(scale_b_ptr)
    return acc


@triton.jit
def _downcast(acc, out_ty: tl.constexpr, INTERPRET: tl.constexpr):
    # The interpreter truncates fp32 -> bf16 (GPUs round to nearest even), which doubles the
    # output error; there, round by hand: add half an ulp (ties to even) and drop 16 bits.
    if INTERPRET:
        if out_ty == tl.bfloat16:
            bits = acc.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return acc.to(out_ty)


@triton.jit
def _store_tile(c_out, acc, off_m, off_n, M, N, stride_cm, C_TMA: tl.constexpr,
                INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # c_out is the C descriptor when C_TMA, else the C pointer (rows of stride_cm, unit columns).
    if C_TMA:
        c_out.store([off_m, off_n], _downcast(acc, c_out.dtype, INTERPRET))
    else:
        rows = (off_m + tl.arange(0, BLOCK_M)).to(tl.int64)
        cols = off_n + tl.arange(0, BLOCK_N)
        ptrs = c_out + rows[:, None] * stride_cm + cols[None, :]
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        tl.store(ptrs, _downcast(acc, c_out.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr, FP8_PRECISE: tl.constexpr,
         INTERPRET: tl.constexpr):
    # The interpreter's bf16 dot multiplies raw bit patterns (triton-lang/triton#11584): there,
    # and only there, upcast bf16 operands to fp32 (exact: every bf16 is an fp32).
    if INTERPRET:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    if FP8_PRECISE:
        # sm90 fp8 wgmma accumulates with reduced precision (DeepGEMM README: ~14 bits); Triton
        # then adds into the fp32 accumulator once per BLOCK_K instead of never (its sm90
        # default, max_num_imprecise_acc = 2**30), as cuBLAS does without fast accumulation.
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION,
                      max_num_imprecise_acc=a.shape[1])
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit(do_not_specialize=TMA_NOT_SPECIALIZED)
def matmul_tma_kernel(a_ptr, b_ptr, c_ptr, scale_a_ptr, scale_b_ptr, M, N, K,
                       stride_a, stride_b, stride_c,
                       A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr, C_TMA: tl.constexpr,
                       HAS_SCALE: tl.constexpr, ROW_SCALE_A: tl.constexpr,
                       COL_SCALE_B: tl.constexpr, INTERPRET: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, FP8_PRECISE: tl.constexpr,
                       NUM_SMS: tl.constexpr,
                       WARP_SPECIALIZE: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, EPILOGUE_SUBTILE: tl.constexpr):
    # A is (M, K): K-major means rows of K contiguous; otherwise A is stored as its transpose
    # (K, M) and each tile is transposed after the load. B (K, N) likewise, K-major = stored (N, K).
    # stride_a/b/c: the one non-unit stride of each operand as stored.
    if A_KMAJOR:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_a, 1],
                                           block_shape=[BLOCK_M, BLOCK_K])
    else:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[K, M], strides=[stride_a, 1],
                                           block_shape=[BLOCK_K, BLOCK_M])
    if B_KMAJOR:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[stride_b, 1],
                                           block_shape=[BLOCK_N, BLOCK_K])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[stride_b, 1],
                                           block_shape=[BLOCK_K, BLOCK_N])
    C_BLOCK_N: tl.constexpr = BLOCK_N // 2 if EPILOGUE_SUBTILE else BLOCK_N
    if C_TMA:
        c_out = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[stride_c, 1],
                                          block_shape=[BLOCK_M, C_BLOCK_N])
    else:
        c_out = c_ptr

    start_pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    # A separate epilogue tile counter, as in tutorial 09: it keeps the prologue and the
    # epilogue of the flattened loop independent for the software pipeliner.
    tile_id_c = start_pid - NUM_SMS

    # Warp specialisation is only enabled on Hopper (TMA) and Hopper warpspec does not work with
    # a flattened loop (Triton tutorial 09: `flatten = False if (warp_specialize and
    # is_hopper()) else True`), so flatten exactly when not warp-specialising.
    for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=not WARP_SPECIALIZE,
                            warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            off_k = ki * BLOCK_K
            # Out-of-bounds parts of a tile (M, N, K not multiples of the block) load as zeros.
            if A_KMAJOR:
                a = a_desc.load([off_m, off_k])
            else:
                a = a_desc.load([off_k, off_m]).T
            if B_KMAJOR:
                b = b_desc.load([off_n, off_k]).T
            else:
                b = b_desc.load([off_k, off_n])
            acc = _dot(a, b, acc, DOT_PRECISION, FP8_PRECISE, INTERPRET)

        tile_id_c += NUM_SMS
        pid_m, pid_n = _tile_coords(tile_id_c, num_pid_m, num_pid_n, GROUP_M)
        off_cm = pid_m * BLOCK_M
        off_cn = pid_n * BLOCK_N
        if HAS_SCALE:
            acc = _apply_scales(acc, scale_a_ptr, scale_b_ptr, off_cm, off_cn, M, N,
                                ROW_SCALE_A, COL_SCALE_B, BLOCK_M, BLOCK_N)
        if EPILOGUE_SUBTILE:
            # Two BLOCK_M x BLOCK_N/2 stores: half the smem for the C staging buffer.
            acc3 = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            acc0, acc1 = tl.split(acc3)
            _store_tile(c_out, acc0, off_cm, off_cn, M, N, stride_c, C_TMA, INTERPRET,
                        BLOCK_M, C_BLOCK_N)
            _store_tile(c_out, acc1, off_cm, off_cn + C_BLOCK_N, M, N, stride_c, C_TMA,
                        INTERPRET, BLOCK_M, C_BLOCK_N)
        else:
            _store_tile(c_out, acc, off_cm, off_cn, M, N, stride_c, C_TMA, INTERPRET, BLOCK_M,
                        BLOCK_N)


@triton.jit
def matmul_portable_kernel(a_ptr, b_ptr, c_ptr, scale_a_ptr, scale_b_ptr, M, N, K,
                            stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
                            A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr, C_TMA: tl.constexpr,
                            HAS_SCALE: tl.constexpr, ROW_SCALE_A: tl.constexpr,
                            COL_SCALE_B: tl.constexpr, INTERPRET: tl.constexpr,
                            DOT_PRECISION: tl.constexpr, FP8_PRECISE: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GROUP_M: tl.constexpr):
    # Any strides. A_KMAJOR/B_KMAJOR/C_TMA are unused here; they only keep the autotune key
    # (shared with the TMA kernel) meaningful.
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = _tile_coords(pid, num_pid_m, num_pid_n, GROUP_M)
    off_m = pid_m * BLOCK_M
    off_n = pid_n * BLOCK_N
    # Rows/columns past the edge read row/column 0 (always valid) and are masked at the store,
    # so the loads need only a K mask. int64: large operands overflow 32-bit offsets.
    rows = off_m + tl.arange(0, BLOCK_M)
    cols = off_n + tl.arange(0, BLOCK_N)
    rows = tl.where(rows < M, rows, 0).to(tl.int64)
    cols = tl.where(cols < N, cols, 0).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for ki in range(tl.cdiv(K, BLOCK_K)):
        k_left = K - ki * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = _dot(a, b, acc, DOT_PRECISION, FP8_PRECISE, INTERPRET)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if HAS_SCALE:
        acc = _apply_scales(acc, scale_a_ptr, scale_b_ptr, off_m, off_n, M, N,
                            ROW_SCALE_A, COL_SCALE_B, BLOCK_M, BLOCK_N)
    _store_tile(c_ptr, acc, off_m, off_n, M, N, stride_cm, False, INTERPRET, BLOCK_M, BLOCK_N)

