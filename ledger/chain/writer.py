"""The write side of the chain layer, and the only code of the ledger that uses Ape (with
:mod:`ledger.chain.connect`, which connects it): deploying the contracts, the accounts that sign, and
every state-changing call of the ledger, sent through :class:`ledger.chain.transact.Transactor`.

:class:`LedgerWriter` is a :class:`ledger.chain.reader.LedgerReader` that can also send. Opened through
Ape (:meth:`LedgerWriter.at`, :meth:`LedgerWriter.deploy`) it reads and sends over the connected
provider's JSON-RPC (HTTP, or in process for py-evm); opened over a node's URL
(:meth:`LedgerWriter.over_rpc`) it reads without Ape and sends raw calldata signed by Ape's accounts once
Ape is connected. Contract reverts come out as :class:`ledger.errors.ContractRevert` with the custom error
decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property

from ledger.chain.codec import ERC20, PROJECT_ROOT, compiled_abi, decode_revert, revert_data_in_message
from ledger.chain.reader import LedgerReader, inner_tuples, simulate_call
from ledger.chain.rpc import HttpRpc, RpcError
from ledger.chain.transact import Pipeline, Receipt, SignedCall, Transactor, TxPolicy
from ledger.errors import ContractRevert, LedgerError, named
from ledger.models import Terms

MAX_UINT256 = 2**256 - 1
# The empty ``Terms`` tuple: what a proposal passes as the current terms when it has none to show.
EMPTY_TERMS = ("0x" + "00" * 20, [], [], [], 0, [], [])


def project():
    """The Ape project of this repository (compiled contracts), wherever the command runs from."""
    import ape

    return ape.Project(PROJECT_ROOT)


def project_abi(name: str) -> list:
    """A contract's ABI through Ape's project (which compiles it when the artifacts are missing)."""
    return project().get_contract(name).contract_type.model_dump(mode="json")["abi"]


def contract_container(contract_type):
    """An Ape contract container of a contract type (``ContractType`` or its JSON) that is not the
    project's own (the Safe contracts of :mod:`ledger.chain.safe`): ``.at(address)``, ``.deploy(...)``."""
    from ape.contracts import ContractContainer

    return ContractContainer(contract_type)


@contextmanager
def contract_errors() -> Iterator[None]:
    """Turn Ape's contract reverts into :class:`ContractRevert` with the custom error's name."""
    from ape.exceptions import ContractLogicError, CustomError

    try:
        yield
    except CustomError as err:
        raise ContractRevert(err.name, dict(err.inputs)) from None
    except ContractLogicError as err:
        data = getattr(err, "revert_data", None) or revert_data_in_message(err)
        decoded = decode_revert(data) if data else None
        if decoded:
            raise ContractRevert(*decoded) from None
        raise ContractRevert("Reverted", {}, f"the contract refused the transaction: {err}") from None


def _simulate_deployment(container, args: tuple, sender) -> None:
    """Run a deployment as a call first: a constructor that refuses (``LedgerZeroAddress``) is reported
    as words and nothing is mined (Ape would send it, print its call trace, and mine the revert)."""
    import ape

    uri = getattr(ape.chain.provider, "http_uri", None)
    if not uri:  # pragma: no cover - every provider the project uses speaks HTTP
        return
    data = "0x" + bytes(container(*args).data).hex()
    simulate_call(HttpRpc(uri), {"from": sender.address, "data": data})


def connected_chain_id() -> int:
    import ape

    return int(ape.chain.chain_id)


def has_code(address: str) -> bool:
    import ape

    return len(ape.chain.provider.get_code(address)) > 0


class Signer:
    """Signs transaction dicts for an Ape account: with eth-account when the account exposes its key
    (Ape's test accounts), else through the account itself (keystore, hardware wallet plugins)."""

    def __init__(self, account):
        self.account = account
        self.address = account.address
        self._key = getattr(account, "private_key", None)

    def sign(self, tx: dict) -> tuple[str, str]:
        """The signed raw transaction and its hash, both 0x-hex."""
        if self._key:
            from eth_account import Account

            signed = Account.sign_transaction(tx, self._key)
            return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()
        import ape

        fields = {"chain_id": tx["chainId"], "nonce": tx["nonce"], "receiver": tx["to"], "sender": self.address,
                  "data": tx["data"], "gas_limit": tx["gas"], "value": 0}  # fmt: skip
        if "gasPrice" in tx:
            fields.update(gas_price=tx["gasPrice"], type=0)
        else:
            fields.update(max_fee=tx["maxFeePerGas"], max_priority_fee=tx["maxPriorityFeePerGas"], type=2)
        txn = ape.chain.provider.network.ecosystem.create_transaction(**fields)
        signed = self.account.sign_transaction(txn)
        if signed is None:
            raise LedgerError(f"account {self.address} declined to sign")
        return "0x" + bytes(signed.serialize_transaction()).hex(), "0x" + bytes(signed.txn_hash).hex()


class LedgerWriter(LedgerReader):
    """One deployment: the ledger contract and its settlement token, read and sent to."""

    def __init__(self, ledger, token=None, policy: TxPolicy | None = None):
        super().__init__(None, None, None)  # read over the connected provider (see ``over_rpc``)
        self.contract = ledger
        self.token = token
        self.policy = policy or TxPolicy()  # how settlement transactions are sent and confirmed

    @classmethod
    def over_rpc(cls, address: str, url: str, abi: list | None = None) -> LedgerWriter:
        """The ledger at ``address`` straight over JSON-RPC, without Ape: reports start in a fraction of a
        second. Reads work at once; sending (raw calldata, signed by Ape's accounts) once Ape is connected."""
        writer = cls(None)
        writer._address, writer._rpc = address, HttpRpc(url)
        writer._abi = abi if abi is not None else compiled_abi("AllianceLedger")
        return writer

    @property
    def fixed(self) -> bool:
        """Opened over a node's URL (:meth:`over_rpc`), not through Ape's provider."""
        return self._rpc is not None

    # -- deployment ---------------------------------------------------------------------------------

    @classmethod
    def deploy(cls, *, admin, platform, finance, sender, token_decimals: int | None = 6) -> LedgerWriter:
        """Deploy the ledger (and, when ``token_decimals`` is given, a test token finance can mint)."""
        proj = project()
        with contract_errors():
            ledger_args = (admin, platform, finance)
            _simulate_deployment(proj.AllianceLedger, ledger_args, sender)
            ledger = proj.AllianceLedger.deploy(*ledger_args, sender=sender)
            token = None
            if token_decimals is not None:
                token_args = ("Alliance Test Dollar", "ATD", token_decimals, admin, finance)
                _simulate_deployment(proj.LedgerTestToken, token_args, sender)
                token = proj.LedgerTestToken.deploy(*token_args, sender=sender)
        return cls(ledger, token)

    @classmethod
    def at(cls, ledger_address: str, token_address: str | None = None) -> LedgerWriter:
        proj = project()
        ledger = proj.AllianceLedger.at(ledger_address)
        token = proj.LedgerTestToken.at(token_address) if token_address else None
        return cls(ledger, token)

    @property
    def address(self) -> str:
        return self._address if self.fixed else self.contract.address

    @property
    def abi_json(self) -> list:
        if self._abi is None:
            self._abi = self.contract.contract_type.model_dump(mode="json")["abi"]
        return self._abi

    @cached_property
    def chain_id(self) -> int:
        return self.rpc.chain_id() if self.fixed else connected_chain_id()

    @cached_property
    def deployment_block(self) -> int:
        """The block the ledger was deployed in, where its logs start (0 when unknown)."""
        txn_hash = getattr(self.contract, "txn_hash", None)
        if not txn_hash:
            return 0
        import ape

        return int(ape.chain.provider.get_receipt(txn_hash).block_number)

    def token_at(self, address: str):
        """An ERC-20 settlement token by address (the ABI is the test token's ERC-20 surface)."""
        return project().LedgerTestToken.at(address)

    # -- ME registry --------------------------------------------------------------------------------

    def register_me(self, name: str, payout: str, signer: str, parent: int = 0, *, sender) -> int:
        receipt = self.transact(self._method("registerME"), name, payout, signer, parent, sender=sender)
        return int(self._event_args(receipt, "MERegistered")["meId"])

    def update_me(self, me_id: int, payout: str, signer: str, consent: bytes, *, sender) -> None:
        self.transact(self._method("updateME"), me_id, payout, signer, consent, sender=sender)

    def sign_me_update(self, account, me_id: int, payout: str, signer: str) -> bytes:
        nonce = self.me(me_id).nonce
        from ledger.chain import eip712  # eth-account: imported by the commands that sign only

        message = eip712.me_update_message(self.chain_id, self.address, me_id, payout, signer, nonce)
        return eip712.sign(account, message)

    def dissolve_me(self, me_id: int, *, sender) -> None:
        self.transact(self._method("dissolveME"), me_id, sender=sender)

    # -- agreements ---------------------------------------------------------------------------------

    def propose(self, agreement_id: bytes, terms: Terms, *, sender, current: Terms | None = None) -> int:
        """Propose ``terms`` as the next version. ``current``: the terms of the agreement's current version
        (whose parties' signers may propose), read from the chain when not given."""
        if current is None:
            current = self.current_terms(agreement_id)
        shown = current.as_tuple() if current is not None else EMPTY_TERMS
        receipt = self.transact(self._method("proposeAgreement"), agreement_id, terms.as_tuple(), shown, sender=sender)
        return int(self._event_args(receipt, "AgreementProposed")["version"])

    def activate(self, agreement_id: bytes, version: int, terms: Terms, signatures: Sequence[bytes], *, sender):
        args = (agreement_id, version, terms.as_tuple(), list(signatures))
        return self.transact(self._method("activateAgreement"), *args, sender=sender)

    def create(self, agreement_id: bytes, terms: Terms, signatures: Sequence[bytes], *, sender):
        args = (agreement_id, terms.as_tuple(), list(signatures))
        return self.transact(self._method("createAgreement"), *args, sender=sender)

    def terminate(self, agreement_id: bytes, terms: Terms, signatures: Sequence[bytes], *, sender):
        args = (agreement_id, terms.as_tuple(), list(signatures))
        return self.transact(self._method("terminateAgreement"), *args, sender=sender)

    # -- settlement, payouts, roles -----------------------------------------------------------------

    def settle(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], *, sender, confirm: bool = True, **tx_args,
    ) -> Receipt:  # fmt: skip
        args = self.batch_args(agreement_id, version, first_seq, terms, refs, entries)
        return self.transact(self._method("settle"), *args, sender=sender, confirm=confirm, **tx_args)

    def settle_nested(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], inner: Sequence[tuple[bytes, int, Terms]], *, sender, confirm: bool = True, **tx_args,
    ) -> Receipt:  # fmt: skip
        """``settleNested``: a batch of an agreement with nested parties, with the active version and terms
        of every agreement reachable through its nesting (``inner``: (id, version, terms))."""
        args = self.batch_args(agreement_id, version, first_seq, terms, refs, entries, inner_tuples(inner))
        return self.transact(self._method("settleNested"), *args, sender=sender, confirm=confirm, **tx_args)

    def reverse(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], originals: Sequence[bytes], *, sender, confirm: bool = True, **tx_args,
    ) -> Receipt:  # fmt: skip
        args = self.batch_args(agreement_id, version, first_seq, terms, refs, entries, list(originals))
        return self.transact(self.contract.settleReversals, *args, sender=sender, confirm=confirm, **tx_args)

    def close_period(self, agreement_id: bytes, period: int, *, sender):
        return self.transact(self._method("closePeriod"), agreement_id, period, sender=sender)

    def withdraw(self, me_id: int, token: str, *, sender) -> int:
        receipt = self.transact(self._method("withdraw"), me_id, token, sender=sender)
        return int(self._event_args(receipt, "Withdrawn")["amount"])

    def payout(self, token: str, me_ids: Sequence[int], *, sender) -> Receipt:
        """Pay the listed MEs' balances in ``token`` to their payout addresses (anyone may send)."""
        return self.transact(self.contract.payout, token, list(me_ids), sender=sender)

    def grant_role(self, role: str, account: str, *, sender) -> None:
        self.transact(self.contract.grantRole, getattr(self.contract, role)(), account, sender=sender)

    def pipeline(self, sender, window: int | None = None):
        """Send many transactions from ``sender`` without waiting for each (see ``Pipeline``)."""
        return Pipeline(self.transactor, Signer(sender), self.chain_id, window=window)

    # -- tokens -------------------------------------------------------------------------------------

    def mint(self, recipient: str, amount: int, *, sender) -> None:
        """Mint the local test token (its minter role): simulated first like every other transaction."""
        if self.token is None:
            raise LedgerError("this deployment has no test token (only the local chain gets one)")
        self.transact(self.token.mint, recipient, amount, sender=sender)

    def ensure_allowance(self, token: str, owner, amount: int) -> None:
        if self.allowance(token, owner.address) >= amount:
            return
        if hasattr(owner, "execute"):  # a Safe approves through one Safe transaction its owners sign
            owner.execute(token, ERC20["approve"].encode(self.address, amount))
            return
        # Raw calldata signed by the account (no Ape contract object for the token: about 1 s less).
        self.transactor.send(self._raw_call(token, ERC20["approve"].encode(self.address, amount), owner))

    # -- sending ------------------------------------------------------------------------------------

    @property
    def rpc(self) -> HttpRpc:
        """Raw JSON-RPC to the connected node: the provider's HTTP endpoint, or the provider itself when
        the node runs in process (py-evm, Ape's ``ethereum:local:test``)."""
        if self.fixed:
            return self._rpc
        import ape

        provider = ape.chain.provider
        uri = getattr(provider, "http_uri", None)
        current = self.__dict__.get("_live_rpc")
        if uri:
            if current is None or current.url != uri:
                current = self.__dict__["_live_rpc"] = HttpRpc(uri)
        elif current is None or getattr(current._transport, "provider", None) is not provider:
            current = self.__dict__["_live_rpc"] = HttpRpc.over_provider(provider)
        return current

    @property
    def transactor(self) -> Transactor:
        """Sends with simulation, bounded waits and re-sending (see ``ledger.chain.transact``), over the
        node's JSON-RPC (HTTP or in process)."""
        rpc = self.rpc
        current = self.__dict__.get("_transactor")
        if current is None or current.rpc is not rpc or current.policy != self.policy:
            current = self.__dict__["_transactor"] = Transactor(rpc, self.policy)
        return current

    def _method(self, name: str):
        """The ledger's function ``name`` to :meth:`transact`: Ape's handler, or on a chain read over
        JSON-RPC (:meth:`over_rpc`, with Ape connected for its accounts) the name, sent as raw calldata."""
        return name if self.fixed else getattr(self.contract, name)

    def _raw_transaction(self, name: str, args: tuple, sender):
        """A builder of the signed call of ``name`` for :meth:`Transactor.send`: nonce, gas estimate and
        fees read over JSON-RPC, signed by the Ape account (:class:`ledger.chain.transact.Signer`)."""
        return self._raw_call(self.address, self.abi[name].encode(*args), sender)

    def _raw_call(self, to: str, data: bytes, sender):
        """A builder of the signed transaction of ``data`` to ``to`` (see :meth:`_raw_transaction`)."""
        signer = Signer(sender)
        rpc = self.rpc
        fees = self.pipeline(sender, 1)._fee_fields

        def build():
            call = {"from": signer.address, "to": to, "data": "0x" + data.hex()}
            try:
                gas = int(rpc.request("eth_estimateGas", [call]), 16)
            except RpcError:
                simulate_call(rpc, call)  # the reason it reverts
                raise
            nonce = int(rpc.request("eth_getTransactionCount", [signer.address, "pending"]), 16)
            tx = {"chainId": self.chain_id, "nonce": nonce, "to": to, "data": data, "gas": gas * 5 // 4 + 20_000,
                  "value": 0, **fees()}  # fmt: skip
            if "maxFeePerGas" in tx:
                tx["type"] = 2
            raw, tx_hash = signer.sign(tx)
            return SignedCall(signer.address, to, data, raw, tx_hash)

        return build

    def transact(self, handler, *args, sender, confirm: bool = True, **tx_args) -> Receipt:
        """One state-changing call that lands once (or raises), waited for per the policy. A ``sender``
        that acts through a Safe (:class:`ledger.services.safes.SafeActor`) sends it as one Safe
        transaction its owners sign."""
        if hasattr(sender, "execute"):
            if isinstance(handler, str):  # the ledger's function by name (a chain read over JSON-RPC)
                return sender.execute(self.address, self.abi[handler].encode(*args))
            return sender.execute(str(handler.contract.address), bytes(handler.encode_input(*args)))
        transactor = self.transactor
        if isinstance(handler, str):
            return transactor.send(self._raw_transaction(handler, args, sender), confirm=confirm)
        fees = {}
        if self.policy.max_fee is not None:
            fees["max_fee"] = self.policy.max_fee
        if self.policy.priority_fee is not None:
            fees["max_priority_fee"] = self.policy.priority_fee

        def build():
            with contract_errors():  # where the gas is estimated, a refusal surfaces here
                return handler.as_transaction(*args, sender=sender, **{**fees, **tx_args})

        def sign(tx):
            signed = sender.sign_transaction(tx)
            if signed is None or not getattr(signed, "signature", None):
                raise LedgerError(f"account {named(sender.address)} did not sign the transaction; nothing was sent")
            return signed

        try:
            return transactor.send(build, confirm=confirm, sign=sign)
        except ContractRevert as err:
            raise self.explain(err) from None

    def _event_args(self, receipt: Receipt, name: str) -> dict:
        """The arguments of the ledger's ``name`` event in ``receipt`` (decoded from its raw logs)."""
        found = self.event_args(receipt.logs, name)
        if found is None:  # pragma: no cover - every function this is asked of emits the event
            raise LedgerError(f"transaction {receipt.tx_hash} has no {name} event")
        return found
