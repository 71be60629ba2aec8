"""Start a training run in this process, or under torchrun as several data-parallel processes (and nodes).

`lmf train` re-launches itself as `python -m torch.distributed.run ... -m llamafactory.launcher <args>` when
FORCE_TORCHRUN=1 or more than one CUDA device is visible; each worker then trains through `worker_main`. The
launch settings (NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR, MASTER_PORT, RDZV_ID, MIN_NNODES,
MAX_NNODES, MAX_RESTARTS) are read through extras/envs.py, and only here. See docs/distributed.md.
"""

import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .extras import envs
from .extras.errors import ConfigError, UserError

DRY_RUN_FLAGS = ("--dry-run", "--dry_run")
STATIC_PORT = 29500  # torchrun's own default, used when several nodes must agree on a port nobody set
ELASTIC_RESTARTS = 3  # elastic jobs exist to survive a lost worker; a static job fails fast by default


@dataclass
class LaunchPlan:
    """How torchrun is asked to start this node's workers."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int
    max_restarts: int
    elastic: tuple[int, int] | None = None  # (min, max) nodes when MIN_NNODES / MAX_NNODES are set
    rdzv_id: str = "llamafactory"

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def command(self, argv: list[str], entry: list[str] | None = None) -> list[str]:
        """torchrun's command line; the workers re-enter this module (or `entry`), so nothing depends on PATH."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(self.nproc_per_node),
               "--max-restarts", str(self.max_restarts)]
        if self.elastic:
            low, high = self.elastic
            cmd += ["--nnodes", f"{low}:{high}", "--rdzv-backend", "c10d", "--rdzv-id", self.rdzv_id,
                    "--rdzv-endpoint", f"{self.master_addr}:{self.master_port}"]
        else:
            cmd += ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank), "--master-addr",
                    self.master_addr, "--master-port", str(self.master_port)]
        return [*cmd, *(entry or ["-m", "llamafactory.launcher"]), *argv]


def _cuda_device_count() -> int:
    """Visible CUDA devices; 0 where torch is missing or has no CUDA, so a CPU box only launches when asked."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def _free_port() -> int:
    """A port free right now on this machine; only used when one node launches and nobody chose a port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _int_setting(settings: dict[str, str], name: str, default: int, minimum: int) -> int:
    if name not in settings:
        return default
    try:
        value = int(settings[name])
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a whole number, got {settings[name]!r}") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name} must be at least {minimum}, got {value}")
    return value


def plan_launch() -> LaunchPlan | None:
    """The torchrun launch this `lmf train` should make, or None to train in this very process.

    NPROC_PER_NODE defaults to the number of visible GPUs; on a CPU it defaults to 1 (FORCE_TORCHRUN alone then
    runs one worker under torchrun, which is how a multi-node CPU job or a launch test starts), so several CPU
    processes are always an explicit choice: each one holds a full copy of the model.
    """
    if envs.is_torchrun_worker():  # already a worker (for instance started by `torchrun` by hand)
        return None
    gpus = _cuda_device_count()
    if not (envs.force_torchrun() or gpus > 1):
        return None
    s = envs.torchrun_settings()
    nnodes = _int_setting(s, "NNODES", 1, minimum=1)
    node_rank = _int_setting(s, "NODE_RANK", 0, minimum=0)
    if node_rank >= nnodes and "MAX_NNODES" not in s:
        raise ConfigError(f"NODE_RANK={node_rank} must be smaller than NNODES={nnodes}")
    nproc = _int_setting(s, "NPROC_PER_NODE", max(gpus, 1), minimum=1)
    elastic = None
    if "MIN_NNODES" in s or "MAX_NNODES" in s:
        low = _int_setting(s, "MIN_NNODES", nnodes, minimum=1)
        high = _int_setting(s, "MAX_NNODES", max(nnodes, low), minimum=1)
        if low > high:
            raise ConfigError(f"MIN_NNODES={low} is larger than MAX_NNODES={high}")
        elastic = (low, high)
    multi_node = nnodes > 1 or elastic is not None
    if multi_node and "MASTER_ADDR" not in s:
        raise ConfigError("several nodes need MASTER_ADDR: the address of node 0 (the same on every node)")
    port = _int_setting(s, "MASTER_PORT", STATIC_PORT if multi_node else 0, minimum=0) or _free_port()
    restarts = _int_setting(s, "MAX_RESTARTS", ELASTIC_RESTARTS if elastic else 0, minimum=0)
    return LaunchPlan(nnodes=nnodes, node_rank=node_rank, nproc_per_node=nproc,
                      master_addr=s.get("MASTER_ADDR", "127.0.0.1"), master_port=port, max_restarts=restarts,
                      elastic=elastic, rdzv_id=s.get("RDZV_ID", "llamafactory"))


def _run_torchrun(cmd: list[str]) -> int:
    """Run torchrun to its end; forward SIGTERM/Ctrl-C so that no worker outlives `lmf train`."""
    proc = subprocess.Popen(cmd)
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        proc.terminate()  # torchrun stops its workers on SIGTERM, then exits

    signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_mca() -> None:
    """USE_MCA=1 (Megatron-core tensor/pipeline parallelism) is not wired in: say what it needs, never ignore it."""
    if not envs.use_mca():
        return
    import importlib.util

    if importlib.util.find_spec("mcore_adapter") is None:
        raise UserError("USE_MCA=1 needs the mcore_adapter package (Megatron-core), which is not installed: "
                        "install it, or unset USE_MCA to train with torchrun, DeepSpeed or FSDP")
    raise UserError("USE_MCA=1: training through mcore_adapter is not built yet in llamafactory (its design is in "
                    "docs/distributed.md); unset USE_MCA to train with torchrun, DeepSpeed or FSDP")


def launch(argv: list[str]) -> int:
    """`lmf train`: train here, or validate the config once and start torchrun; return the exit status."""
    dry_run = any(flag in argv for flag in DRY_RUN_FLAGS)
    argv = [a for a in argv if a not in DRY_RUN_FLAGS]
    check_mca()
    plan = plan_launch()
    if plan is None or dry_run:
        from .train.tuner import run_exp

        run_exp(argv, dry_run=dry_run)
        if plan is not None:
            print(f"A real run launches {plan.world_size} process(es) in all ({plan.nproc_per_node} on this node): "
                  f"{shlex.join(plan.command(argv))}")
        return 0
    from .extras.logging import get_logger
    from .hparams.parser import get_train_args

    get_train_args(argv, dry_run=True)  # a config mistake is reported once here, not once per worker
    get_logger(__name__).info("Launching %d process(es) on this node (%d node(s)): %s", plan.nproc_per_node,
                              plan.nnodes, shlex.join(plan.command(argv)))
    return _run_torchrun(plan.command(argv))


def worker_main(argv: list[str]) -> int:
    """One torchrun worker: train, and say which rank failed; an unexpected error keeps its traceback."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from .train.tuner import run_exp

    try:
        record(run_exp)(argv)
    except UserError as err:
        if envs.debug():
            raise
        print(f"error (rank {envs.global_rank()}): {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # a torchrun worker: python -m llamafactory.launcher cfg.yaml [key=value ...]
    sys.exit(worker_main(sys.argv[1:]))
