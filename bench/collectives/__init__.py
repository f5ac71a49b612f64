"""Collectives with nccl-tests semantics, through torch.distributed (NCCL on GPUs, gloo on CPU).

One file per unit of work:
  sizes.py     size parsing (1K, 16M, 1G) and the -b/-e/-f/-i sweep
  formulas.py  per-op element counts, algbw = S/t and the bus-bandwidth factors
  verify.py    verifiable data and the #wrong count of the check iterations
  faults.py    fault injection for tests (COLOSSUS_BENCH_FAULT)
  status.py    per-rank status files and the diagnosis of a failed or hung run
  report.py    the nccl-tests-style table and per-iteration statistics
  worker.py    one rank: warm-up, timed iterations, check, aggregate row on rank 0
  launch.py    local ranks through torchrun, watchdog, process-tree teardown
  cli.py       the `colossus-bench allreduce` verb

The multi-GPU NCCL path and the CPU gloo path are the same code: only the backend string and
the device the buffers live on differ.
"""
