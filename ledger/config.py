"""Settings: where the ledger keeps its data, and how settlement behaves. No chain imports here.

Every setting can come from the environment with the ``LEDGER_`` prefix (``LEDGER_DATA_DIR``,
``LEDGER_BATCH_GAS``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(default=PROJECT_ROOT / ".ledger", description="deployment records, node state")
    batch_gas: int = Field(default=12_000_000, gt=300_000, description="gas budget of one settlement batch")

    @property
    def deployments_dir(self) -> Path:
        return self.data_dir / "deployments"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for name in cls.model_fields:
            key = f"LEDGER_{name.upper()}"
            if key in env:
                values[name] = env[key]
        return cls(**values)
