"""What every step of a run reads: the config, the folder's paths, the ledger and the keys so far.

The context also answers the questions several steps ask (where the pool is, which policy an arm
ends with, the stage config of an arm's training or eval), so each is answered once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvar.errors import ConfigError
from pvar.experiment.config import ArmConfig, RunConfig
from pvar.experiment.state import Ledger
from pvar.io.writers import atomic_write_text
from pvar.pipeline.scoring import ScoredPaths

CONFIG_FILE = "config.yaml"
BASE_EVAL = Path("base") / "eval"
AA_EVAL = Path("base") / "eval-aa"
HELDOUT_PAIRS = Path("heldout") / "pairs.jsonl"
UNTRAINED = "untrained.json"  # marks an arm with no pairs: its policy is the base policy
SHARED = "shared.json"  # marks an arm whose pairs and training equal an earlier arm's: its model is that one's


@dataclass(frozen=True)
class RunPaths:
    """Where each step of a run folder writes."""

    root: Path

    @property
    def pool(self) -> Path:
        return self.root / "prompts" / "pool.jsonl"

    @property
    def eval_prompts(self) -> Path:
        return self.root / "prompts" / "eval.jsonl"

    @property
    def scoring(self) -> ScoredPaths:
        """The pool's scoring: generate/ and reward/ shards and measured.parquet."""
        return ScoredPaths(self.root / "scoring")

    @property
    def generated(self) -> Path:
        return self.scoring.generated

    @property
    def rewarded(self) -> Path:
        return self.scoring.rewarded

    @property
    def adaptive(self) -> Path:
        return self.root / "scoring" / "adaptive"

    @property
    def measured(self) -> Path:
        return self.scoring.measured

    @property
    def potential(self) -> Path:
        return self.root / "scoring" / "potential.parquet"

    @property
    def ref_cache(self) -> Path:
        return self.root / "ref_cache"

    def arm(self, name: str) -> Path:
        return self.root / "arms" / name

    def round(self, name: str, r: int) -> Path:
        """Round ``r`` of an arm: the arm's folder for the first, a subfolder for later ones."""
        return self.arm(name) if r == 1 else self.arm(name) / f"round-{r}"


@dataclass
class RunContext:
    """One run folder under one config, and the ledger keys of the steps met so far."""

    cfg: RunConfig
    paths: RunPaths
    log: Callable[[str], None]
    force: bool = False
    ledger: Ledger | None = None
    keys: dict[str, str] = field(default_factory=dict)

    # -- inputs -----------------------------------------------------------------------------------

    def pool_source(self) -> str:
        return str(self.paths.pool) if self.cfg.prompts.source == "sharegpt" else self.cfg.prompts.source

    def eval_source(self) -> str:
        src = self.cfg.prompts.eval_source
        return str(self.paths.eval_prompts) if src == "sharegpt" else src

    def pool_size(self) -> int:
        """Prompts in the measured pool (the base of fractional budgets)."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.paths.measured).metadata.num_rows

    # -- stage configs ------------------------------------------------------------------------------

    def engine_opts(self) -> dict[str, Any]:
        """Where the sharded stages run: the engine, its shard size and, for Ray, the address and resources."""
        from pvar.engines.config import EngineConfig

        return self.cfg.stage(EngineConfig, self.cfg, shard_size=self.cfg.scoring.shard_size).options()

    def sampling(self, policy: str, seed: int) -> tuple[Any, Any]:
        """The generate and reward settings of the pool's scoring, for ``policy`` at ``seed``."""
        from pvar.pipeline import sharded

        c, s = self.cfg, self.cfg.scoring
        return c.stage(sharded.GenerateConfig, s, model=policy, seed=seed), c.stage(sharded.RewardConfig, s)

    def train_config(self, name: str, arm: ArmConfig) -> Any:
        from pvar.pipeline.train import TrainConfig

        own = {} if arm.max_steps is None else {"max_steps": arm.max_steps}  # a label-budget arm: one pass
        return self.cfg.stage(TrainConfig, self.cfg.train, seed=self.cfg.train_seed(name), weight_by=arm.weight_by,
                              **own)

    def eval_config(self, policy: str) -> Any:
        from pvar.pipeline.evaluate import EvalConfig

        return self.cfg.stage(EvalConfig, self.cfg.eval, policy=policy, prompts=self.eval_source(),
                              selection_reward=self.cfg.scoring.reward, backend=self.eval_backend())

    def eval_backend(self) -> str:
        """The eval section's backend; 'run' = vllm when the run samples with vLLM, else hf."""
        e = self.cfg.eval.backend
        return e if e != "run" else ("vllm" if self.cfg.backend == "vllm" else "hf")

    # -- an arm's models ----------------------------------------------------------------------------

    def final_model(self, name: str) -> Path:
        """The arm's model: its last round's checkpoint, or an earlier one where a round had no pairs; for
        an arm that shares an earlier arm's training, that arm's."""
        shared = self.paths.arm(name) / "model" / SHARED
        if shared.is_file():
            return self.final_model(json.loads(shared.read_text(encoding="utf-8"))["with"])
        for r in range(self.cfg.rounds, 0, -1):
            model = self.paths.round(name, r) / "model"
            if (model / "train_log.jsonl").is_file() and not (model / UNTRAINED).is_file():
                return model
        return self.paths.arm(name) / "model"

    def last_training(self, name: str) -> str:
        """The ledger name of an arm's last training step (its last round's)."""
        r = self.cfg.rounds
        return f"train:{name}" if r == 1 else f"round{r}-train:{name}"

    def policy_after(self, name: str, r: int) -> str:
        """What round ``r + 1`` samples from: round r's model merged (LoRA), or the base if none trained."""
        for k in range(r, 0, -1):
            model = self.paths.round(name, k) / "model"
            if not (model / UNTRAINED).is_file():
                from pvar.backends.adapters import merged_model

                return merged_model(str(model), self.paths.round(name, k + 1) / "policy")
        return self.cfg.policy

    # -- the folder ---------------------------------------------------------------------------------

    def claim_folder(self) -> None:
        """Write config.yaml, or check that the folder's config is this one (``--force`` overrides)."""
        import yaml

        root = self.paths.root
        root.mkdir(parents=True, exist_ok=True)
        path = root / CONFIG_FILE
        dump = self.cfg.model_dump(mode="json")
        if path.is_file() and not self.force:
            try:
                old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                old = {}
            changed = config_diff(old, dump)
            if changed:
                raise ConfigError(
                    f"{root}: holds a run with a different config (differs in {', '.join(changed[:6])}"
                    f"{' ...' if len(changed) > 6 else ''}); use another -o folder, or --force to continue it "
                    "under the new config (steps whose settings changed are recomputed)")
        atomic_write_text(path, yaml.safe_dump(dump, sort_keys=False, allow_unicode=True))


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dumps."""
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def count_lines(path: Path) -> int:
    """Non-blank lines of a JSONL file (0 when it is missing)."""
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else 0


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
