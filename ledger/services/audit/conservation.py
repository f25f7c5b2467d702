"""The audit's conservation checks: per token and per ME, the totals replayed from the logs against the
contract's views (and the token's ``balanceOf``) read at the audited block with the chain layer's one
``eth_call`` encoder (:func:`ledger.chain.reader.eth_calls`) from the functions' signatures alone (so the
audit depends on the chain alone, not on the project's compiled ABI)."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from eth_abi import decode as abi_decode

from ledger.chain.codec import Function
from ledger.chain.reader import eth_calls
from ledger.chain.rpc import RpcError
from ledger.errors import ChainUnavailable, LedgerError
from ledger.money import format_amount
from ledger.services.audit.findings import TokenTotals


class ConservationChecks:
    """The conservation part of :class:`ledger.services.audit.replay.Auditor` (a mixin: it reads the
    replayed state, ``rpc`` and ``ledger`` of the auditor and reports through its ``_find``)."""

    def _conservation(self, head: int) -> None:
        block = hex(head)
        me_ids = sorted(self.mes)
        tokens = list(self.tokens)
        try:
            (me_count,) = self._calls(block, [(self.ledger, "meCount()", [], "uint32")])
        except RpcError as err:
            if head == int(self.rpc.request("eth_blockNumber"), 16):
                raise
            raise ChainUnavailable(
                f"the node keeps no state for block {head} ({err}); audit at the head (LEDGER_CONFIRMATIONS=0) "
                f"or use a node that keeps recent states"
            ) from None
        if me_count != len(self.mes):
            raise ChainUnavailable(
                f"the logs from block {self.from_block} hold {len(self.mes)} of the ledger's {me_count} ME "
                f"registrations: start the audit at the ledger's deployment block (--from-block)"
            )
        calls = []
        for token in tokens:
            calls.append((self.ledger, "totalOwed(address)", [token], "uint256"))
            calls.append((token, "balanceOf(address)", [self.ledger], "uint256"))
            calls.append((self.ledger, "totalDebt(address)", [token], "uint256"))
            calls += [(self.ledger, "balanceOf(uint32,address)", [m, token], "uint256")
                      for m in me_ids]  # fmt: skip
            calls += [(self.ledger, "debtOf(uint32,address)", [m, token], "uint256")
                      for m in me_ids]  # fmt: skip
        values = iter(self._calls(block, calls))
        for token in tokens:
            totals = self.tokens[token]
            totals.decimals, totals.symbol = self._token_info(token, block)
            totals.owed, totals.held, totals.debt = next(values), next(values), next(values)
            balances = [next(values) or 0 for _ in me_ids]
            debts = [next(values) or 0 for _ in me_ids]
            totals.balances, totals.debts = sum(balances), sum(debts)
            for me_id, balance, debt in zip(me_ids, balances, debts, strict=True):
                expected, expected_debt = self.accounts.get((me_id, token), (0, 0))
                name = self.mes[me_id].name
                if balance != expected:
                    self._find(
                        "conservation",
                        f"ME {name!r}: the ledger reports a balance of {self._units(balance, totals)}"
                        f" {totals.symbol}; credited - debited - withdrawn (debts netted) is "
                        f"{self._units(expected, totals)}",
                        None, me_id=me_id, token=token, reported=balance, expected=expected,
                    )  # fmt: skip
                if debt != expected_debt:
                    self._find(
                        "conservation",
                        f"ME {name!r}: the ledger reports a debt of {self._units(debt, totals)} {totals.symbol}; "
                        f"the replayed debits and credits give {self._units(expected_debt, totals)}",
                        None, me_id=me_id, token=token, reported=debt, expected=expected_debt,
                    )  # fmt: skip
                if balance and debt:
                    self._find("conservation", f"ME {name!r} has both a balance and a debt in {totals.symbol}",
                               None, me_id=me_id, token=token, balance=balance, debt=debt)  # fmt: skip
            self._token_checks(totals)

    def _token_checks(self, t: TokenTotals) -> None:
        def say(v):
            return f"{self._units(v, t)} {t.symbol}"

        if t.settled != t.credited:
            self._find("conservation", f"{t.symbol}: revenue settled {say(t.settled)}, credited {say(t.credited)}",
                       None, token=t.token, settled=t.settled, credited=t.credited)  # fmt: skip
        if t.reversed != t.debited:
            self._find("conservation", f"{t.symbol}: revenue reversed {say(t.reversed)}, debited {say(t.debited)}",
                       None, token=t.token, reversed=t.reversed, debited=t.debited)  # fmt: skip
        expected = t.credited - t.netted - t.returned - t.withdrawn
        if t.owed != expected:
            self._find("conservation", f"{t.symbol}: the ledger says it owes {say(t.owed)}; credited - netted - "
                       f"returned - withdrawn is {say(expected)}", None, token=t.token, owed=t.owed,
                       expected=expected)  # fmt: skip
        expected_debt = t.incurred - t.netted
        if t.debt != expected_debt or t.debts != t.debt:
            self._find("conservation", f"{t.symbol}: the ledger says its MEs owe {say(t.debt or 0)}; their debts sum "
                       f"to {say(t.debts or 0)}, incurred - netted is {say(expected_debt)}", None, token=t.token,
                       debt=t.debt, debts=t.debts, expected=expected_debt)  # fmt: skip
        if t.balances != t.owed:
            self._find("conservation", f"{t.symbol}: the MEs' balances sum to {say(t.balances)}, the ledger says it "
                       f"owes {say(t.owed)}", None, token=t.token, balances=t.balances, owed=t.owed)  # fmt: skip
        if t.held is None:
            self._find("conservation", f"the token {t.token} does not answer balanceOf(ledger): not an ERC-20",
                       None, token=t.token)  # fmt: skip
        elif t.held != t.owed:
            gap = t.held - t.owed
            what = "missing" if gap < 0 else "held beyond what is owed (sent without settlement)"
            self._find("conservation", f"{t.symbol}: the ledger holds {say(t.held)} and owes {say(t.owed)}: "
                       f"{say(abs(gap))} {what}", None, token=t.token, held=t.held, owed=t.owed)  # fmt: skip

    @staticmethod
    def _units(value: int, totals: TokenTotals) -> str:
        return format_amount(value, totals.decimals)

    def _calls(self, block: str, calls: list[tuple[str, str, list, str]]) -> list[Any]:
        """``(address, signature, args, output type)`` each -> the decoded results (None where a result
        cannot be what was asked)."""
        results = eth_calls(self.rpc, [(to, _function(sig, out), args) for to, sig, args, out in calls], block)
        return [_decoded(out, result) for (*_, out), result in zip(calls, results, strict=True)]

    def _token_info(self, token: str, block: str) -> tuple[int, str]:
        """A token's decimals and symbol for display (0 and its address when it lacks them)."""
        decimals, symbol = 0, token[:10]
        with contextlib.suppress(LedgerError, ValueError, OverflowError):
            decimals = self._calls(block, [(token, "decimals()", [], "uint8")])[0]
        with contextlib.suppress(LedgerError, ValueError, OverflowError):
            symbol = self._calls(block, [(token, "symbol()", [], "string")])[0]
        return decimals, symbol


@functools.cache
def _function(signature: str, output: str) -> Function:
    return Function.from_signature(signature, output)


def _decoded(kind: str, result: str):
    """An ``eth_call`` result, or None when it cannot be what was asked (e.g. no contract answered)."""
    try:
        return abi_decode([kind], bytes.fromhex(result[2:]))[0]
    except Exception:  # noqa: BLE001 - eth-abi raises several kinds for short or malformed data
        return None
