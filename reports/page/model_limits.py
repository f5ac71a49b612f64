"""What the training model does not model: one list, rendered by the report's validation
section and kept in README.md ("What the training model leaves out"; tests/test_report_model.py
compares the two). Plain facts from docs/MODEL.md ("What it does not model", "Where it is
off"); no figure here that docs/MODEL.md does not give.
"""

NOT_MODELLED: tuple[str, ...] = (
    "Mixture-of-experts and expert parallelism, FP8 training, activation offload and optimizer "
    "CPU offload.",
    "Zero-bubble and DualPipe schedules and Llama 3's tunable pipeline schedule; overlapped "
    "pipeline sends are charged as exposed.",
    "Stragglers, data loading, thermal or power capping, and network congestion between jobs; "
    "checkpoints and interruptions enter only through goodput, outside the step.",
    "Switch topology beyond two levels (NVLink inside a node, then each GPU's NIC on a "
    "non-blocking fabric): no rail or spine oversubscription; a fabric's efficiency is an "
    "input, and Llama 3's rows hang on it (its FSDP read as reduce-scattering every "
    "micro-batch, an assumption): -2.8 / -1.5 / -2.7% at an assumed 95% on Meta's RoCE, "
    "-9.9 / -8.9 / -4.3% at 80%.",
    "Idle GPUs inside one job: a job uses every GPU of its pools (a pool can be split into "
    "jobs).",
    "DeepSpeed's per-step costs beyond its pipeline sends and gradient accumulation: MT-NLG "
    "reads +3.6 to +7.7%.",
    "Whatever slows a data-parallel step at scale beyond its buckets' overlap: Nemotron-4 "
    "15B's published time rises 12% from 768 to 2,304 GPUs, the model's 2.5%; it reads +7.8% "
    "at 2,304 GPUs.",
    "Software gains between Megatron-LM releases beyond those it names: Korthikanti et al. "
    "2022's 530B on 280 and 1T on 512 GPUs read -5.0 to -7.4%.",
)

NOT_MODELLED_TITLE = "What the training model does not model (docs/MODEL.md)"
