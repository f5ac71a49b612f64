"""Collectives with nccl-tests semantics, through torch.distributed (NCCL on GPUs, gloo on CPU).

One file per unit of work:
  config.py    what a run is asked (nccl-tests' options and names) and the rank's World
  sizes.py     size parsing (1K, 16M, 1G) and the -b/-e/-f/-i sweep
  formulas.py  per-op element counts, algbw = S/t and the bus-bandwidth factors
  verify.py    verifiable data and the #wrong count of the check iterations
  faults.py    fault injection for tests (COLOSSUS_BENCH_FAULT)
  status.py    per-rank status files and the diagnosis of a failed or hung run
  report.py    the nccl-tests-style table and per-iteration statistics
  backend.py   what differs between NCCL and gloo: device, process group, one call
  worker.py    one rank's sweep: warm-up, timed iterations, check, aggregate row on rank 0
  rank.py      one rank's life: signals, final status, exit code
  launch.py    local ranks through torchrun, watchdog, signals, process-tree teardown
  cli.py       the `colossus-bench allreduce` verb

Records are built by bench/record.py and refused ones spooled by bench/spool.py, as the
runner's. The multi-GPU NCCL path and the CPU gloo path are the same code: only the backend
string and the device the buffers live on differ (backend.py).
"""
