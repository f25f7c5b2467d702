"""Settings: where the ledger keeps its data, where the local node listens, how settlement behaves.
No chain imports here: the chain layer reads these (``TxPolicy.from_settings``), never the reverse.

Every setting can come from the environment with the ``LEDGER_`` prefix (``LEDGER_DATA_DIR``,
``LEDGER_PORT``, ``LEDGER_BATCH_GAS``, ...); command-line options override them.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_NETWORK = "local"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(default=PROJECT_ROOT / ".ledger", description="deployment records, node state")
    host: str = Field(default="127.0.0.1", description="address the local node listens on")
    port: int = Field(default=8547, gt=0, lt=65536, description="port of the local node")
    node: Literal["anvil", "hardhat"] = Field(
        default="anvil", description="the local node's implementation: anvil (persistent) or hardhat (in memory)"
    )
    dev_accounts: int = Field(default=20, ge=10, le=100, description="funded dev accounts on the local node")
    network: str = Field(default=LOCAL_NETWORK, description="'local' or an Ape network choice")
    batch_gas: int = Field(default=12_000_000, gt=300_000, description="gas budget of one settlement batch")
    tx_timeout: float = Field(default=120.0, gt=0, description="seconds to wait for a transaction's receipt")
    confirmations: int | None = Field(
        default=None, ge=0, le=1000, description="blocks before a settlement counts (default 0 local, 12 elsewhere)"
    )
    tx_window: int = Field(default=8, ge=1, le=256, description="settlement transactions in flight at once")
    max_fee_gwei: Decimal | None = Field(
        default=None, gt=0, description="fee cap per gas (gwei); default: twice the latest base fee plus the tip"
    )
    index: bool = Field(
        default=True, description="keep the local index of the chain's logs (LEDGER_INDEX=0: read every log each time)"
    )
    priority_fee_gwei: Decimal | None = Field(
        default=None, ge=0, description="tip per gas (gwei); default: what the node suggests"
    )
    assume_yes: bool = Field(
        default=False, description="keystore accounts sign without Ape's 'Sign: [y/N]' question (--yes)"
    )

    @field_validator("data_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        """LEDGER_DATA_DIR naming a file was only found when a command first wrote under it."""
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a folder")
        return value

    @property
    def deployments_dir(self) -> Path:
        return self.data_dir / "deployments"

    @property
    def node_dir(self) -> Path:
        return self.data_dir / "node"

    @property
    def signatures_dir(self) -> Path:
        return self.data_dir / "signatures"

    @property
    def node_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.network == LOCAL_NETWORK

    @property
    def confirmation_depth(self) -> int:
        """Blocks on top of a settlement's block before it counts, and before reports include it."""
        if self.confirmations is not None:
            return self.confirmations
        return 0 if self.is_local else 12

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for name in cls.model_fields:
            key = f"LEDGER_{name.upper()}"
            if key in env:
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
