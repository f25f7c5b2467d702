"""What Ape needs to read Hardhat's node as it reads Anvil: one fix to ape-hardhat's error parsing.

ape-hardhat 0.8.5 reads a failed request's message from ``exception.args[0]``, as web3.py 6 gave it (the
node's error object). web3.py 7 raises ``Web3RPCError`` whose ``args[0]`` is the *text* of the whole
reply, so a custom-error revert ("reverted with an unrecognized custom error (return data: 0x...)")
comes out as ``0x<data>)', 'txHash': ...``: Ape then fails to decode it (a ``binascii.Error`` instead of
a contract error for calls, an undecodable ``ContractLogicError`` for deployments). :func:`install`
hands ape-hardhat the node's error object instead, so reverts carry their data and Ape decodes custom
errors as it does on Anvil. Installed by :func:`ledger.chain.connect.connected` and by the tests when the
node is Hardhat.
"""

from __future__ import annotations

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from ape_hardhat.provider import HardhatProvider

    original = HardhatProvider.get_virtual_machine_error

    def get_virtual_machine_error(self, exception: Exception, **kwargs):
        error = _rpc_error(exception)
        if error is not None:
            plain = ValueError(error)  # args[0]: the node's error object, as ape-hardhat expects
            plain.__cause__ = exception
            return original(self, plain, **kwargs)
        return original(self, exception, **kwargs)

    HardhatProvider.get_virtual_machine_error = get_virtual_machine_error
    _installed = True


def _rpc_error(exception: Exception) -> dict | None:
    response = getattr(exception, "rpc_response", None)
    error = response.get("error") if isinstance(response, dict) else None
    return error if isinstance(error, dict) and error.get("message") else None
