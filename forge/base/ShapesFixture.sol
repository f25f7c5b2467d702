// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AllianceLedger} from "../../contracts/AllianceLedger.sol";
import {IAllianceLedger} from "../../contracts/interfaces/IAllianceLedger.sol";
import {LedgerTestToken} from "../../contracts/tokens/LedgerTestToken.sol";
import {ShapesReference} from "../reference/SplitReference.sol";
import {Test, vm} from "./Test.sol";

/// @title ShapesFixture
/// @notice A ledger, a 6-decimal token and 16 MEs (ids 1..16, this contract holds every role and signs
/// with known keys), with builders for the terms of issue 18 (bands, recoup, nested) and helpers that
/// create, settle and reverse. Shared by the shapes tests and the shapes gas test.
abstract contract ShapesFixture is Test {
    uint256 internal constant BPS = 10_000;
    uint256 internal constant ME_COUNT = 16;
    uint32 internal constant PERIOD = 202611;

    AllianceLedger internal ledger;
    LedgerTestToken internal token;
    uint256 internal refCounter;

    function setUp() public virtual {
        ledger = new AllianceLedger(address(this), address(this), address(this));
        token = new LedgerTestToken("Test", "TST", 6, address(this), address(this));
        for (uint256 i = 1; i <= ME_COUNT; ++i) {
            ledger.registerME(string.concat("me-", vm.toString(i)), vm.addr(_payoutKey(i)), vm.addr(_key(i)), 0);
        }
        token.mint(address(this), type(uint128).max);
        token.approve(address(ledger), type(uint256).max);
    }

    function _key(uint256 meId) internal pure returns (uint256) {
        return 0xA11CE000 + meId;
    }

    function _payoutKey(uint256 meId) internal pure returns (uint256) {
        return 0xB0B00000 + meId;
    }

    // ------------------------------------------------------------------------------------------------
    // Terms builders
    // ------------------------------------------------------------------------------------------------

    /// @dev Parties first..first+n-1, equal-ish shares (the last takes the rest), no bands.
    function _flat(uint32 first, uint256 n) internal view returns (IAllianceLedger.Terms memory terms) {
        terms.token = address(token);
        terms.parties = new uint32[](n);
        for (uint256 i; i < n; ++i) {
            terms.parties[i] = first + uint32(i);
        }
        terms.shares = _equal(n);
    }

    function _equal(uint256 n) internal pure returns (uint16[] memory shares) {
        shares = new uint16[](n);
        uint256 left = BPS;
        for (uint256 i; i < n; ++i) {
            shares[i] = uint16(i + 1 == n ? left : BPS / n);
            left -= shares[i];
        }
    }

    /// @dev A table giving everything to party `index` of n.
    function _all(uint256 n, uint256 index) internal pure returns (uint16[] memory shares) {
        shares = new uint16[](n);
        shares[index] = uint16(BPS);
    }

    function _table2(uint16 a, uint16 b) internal pure returns (uint16[] memory shares) {
        shares = new uint16[](2);
        (shares[0], shares[1]) = (a, b);
    }

    function _band(uint128 target, uint16[] memory shares) internal pure returns (IAllianceLedger.Band memory) {
        return IAllianceLedger.Band({target: target, shares: shares});
    }

    function _withBands(IAllianceLedger.Terms memory terms, uint128[] memory targets)
        internal
        pure
        returns (IAllianceLedger.Terms memory)
    {
        uint256 n = terms.parties.length;
        terms.bands = new IAllianceLedger.Band[](targets.length);
        for (uint256 j; j < targets.length; ++j) {
            // Band j gives party j (mod n) a larger share, so each tier's split differs.
            uint16[] memory shares = _equal(n);
            uint256 favoured = (j + 1) % n;
            uint256 moved = shares[(favoured + 1) % n] / 2;
            shares[(favoured + 1) % n] -= uint16(moved);
            shares[favoured] += uint16(moved);
            terms.bands[j] = _band(targets[j], shares);
        }
        return terms;
    }

    function _targets(uint128 a, uint128 b, uint128 c) internal pure returns (uint128[] memory t) {
        t = new uint128[](3);
        (t[0], t[1], t[2]) = (a, b, c);
    }

    function _target1(uint128 a) internal pure returns (uint128[] memory t) {
        t = new uint128[](1);
        t[0] = a;
    }

    // ------------------------------------------------------------------------------------------------
    // Agreements
    // ------------------------------------------------------------------------------------------------

    function _signatures(bytes32 id, uint32 version, IAllianceLedger.Terms memory terms)
        internal
        view
        returns (bytes[] memory sigs)
    {
        bytes32 digest = ledger.approvalDigest(id, version, ledger.hashTerms(terms));
        sigs = new bytes[](terms.parties.length);
        for (uint256 i; i < sigs.length; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(_key(terms.parties[i]), digest);
            sigs[i] = abi.encodePacked(r, s, v);
        }
    }

    function _create(bytes32 id, IAllianceLedger.Terms memory terms) internal {
        ledger.createAgreement(id, terms, _signatures(id, 1, terms));
    }

    /// @dev Proposes and activates the next version of an existing agreement.
    function _amend(bytes32 id, IAllianceLedger.Terms memory terms) internal returns (uint32 version) {
        version = ledger.proposeAgreement(id, terms, _none());
        ledger.activateAgreement(id, version, terms, _signatures(id, version, terms));
    }

    function _none() internal pure returns (IAllianceLedger.Terms memory none) {}

    // ------------------------------------------------------------------------------------------------
    // Batches
    // ------------------------------------------------------------------------------------------------

    function _entry(uint256 amount, uint32 period) internal pure returns (uint256) {
        return amount << 32 | period;
    }

    function _refs(uint256 count) internal returns (bytes32[] memory refs) {
        refs = new bytes32[](count);
        for (uint256 k; k < count; ++k) {
            refs[k] = bytes32(++refCounter);
        }
    }

    function _one(uint256 amount, uint32 period) internal pure returns (uint256[] memory entries) {
        entries = new uint256[](1);
        entries[0] = _entry(amount, period);
    }

    function _settle(bytes32 id, IAllianceLedger.Terms memory terms, uint256[] memory entries)
        internal
        returns (uint256 paidIn)
    {
        IAllianceLedger.Agreement memory a = ledger.agreementOf(id);
        paidIn = ledger.settle(id, a.activeVersion, a.nextSeq, terms, _refs(entries.length), entries);
    }

    function _settleNested(
        bytes32 id,
        IAllianceLedger.Terms memory terms,
        uint256[] memory entries,
        IAllianceLedger.InnerTerms[] memory inner
    ) internal returns (uint256 paidIn) {
        IAllianceLedger.Agreement memory a = ledger.agreementOf(id);
        paidIn = ledger.settleNested(id, a.activeVersion, a.nextSeq, terms, _refs(entries.length), entries, inner);
    }

    function _reverse(bytes32 id, IAllianceLedger.Terms memory terms, uint256[] memory entries)
        internal
        returns (uint256 returned)
    {
        IAllianceLedger.Agreement memory a = ledger.agreementOf(id);
        bytes32[] memory originals = _refs(entries.length);
        returned =
            ledger.settleReversals(id, a.activeVersion, a.nextSeq, terms, _refs(entries.length), entries, originals);
    }

    function _inner(bytes32 id, IAllianceLedger.Terms memory terms)
        internal
        view
        returns (IAllianceLedger.InnerTerms memory)
    {
        return
            IAllianceLedger.InnerTerms({agreementId: id, version: ledger.agreementOf(id).activeVersion, terms: terms});
    }

    /// @dev Every ME's balance in the token, indexed by ME id (0 unused).
    function _balances() internal view returns (uint256[] memory balances) {
        balances = new uint256[](ME_COUNT + 1);
        for (uint256 i = 1; i <= ME_COUNT; ++i) {
            balances[i] = ledger.balanceOf(uint32(i), address(token));
        }
    }

    // ------------------------------------------------------------------------------------------------
    // The reference book: expected balances and period state, one event at a time (ShapesReference)
    // ------------------------------------------------------------------------------------------------

    mapping(bytes32 id => mapping(uint32 period => uint256)) internal refRevenue;
    mapping(bytes32 id => mapping(uint32 period => uint256)) internal refPeriodRecouped;
    mapping(bytes32 id => uint256) internal refRecouped;
    mapping(uint256 meId => uint256) internal expected;
    mapping(uint256 meId => uint256) internal expectedDebt;

    /// @dev A credit in the reference: it repays the ME's debt first (as `_creditAccount` does).
    function _refCredit(uint256 meId, uint256 credit) internal {
        uint256 debt = expectedDebt[meId];
        uint256 netted = credit < debt ? credit : debt;
        expectedDebt[meId] = debt - netted;
        expected[meId] += credit - netted;
    }

    /// @dev A debit in the reference: from the balance, the rest becomes debt.
    function _refDebit(uint256 meId, uint256 debit) internal {
        uint256 balance = expected[meId];
        if (balance >= debit) {
            expected[meId] = balance - debit;
        } else {
            expected[meId] = 0;
            expectedDebt[meId] += debit - balance;
        }
    }

    function _shape(IAllianceLedger.Terms memory terms) internal pure returns (ShapesReference.Shape memory s) {
        s.shares = terms.shares;
        uint256 k = terms.bands.length;
        s.targets = new uint128[](k);
        s.bandShares = new uint16[][](k);
        for (uint256 j; j < k; ++j) {
            s.targets[j] = terms.bands[j].target;
            s.bandShares[j] = terms.bands[j].shares;
        }
        s.recoup = terms.recoup;
        s.recoupShares = terms.recoupShares;
    }

    function _refState(bytes32 id, uint32 period) internal view returns (ShapesReference.State memory st) {
        st.periodRevenue = refRevenue[id][period];
        st.periodRecouped = refPeriodRecouped[id][period];
        st.recouped = refRecouped[id];
    }

    function _refStore(bytes32 id, uint32 period, ShapesReference.State memory st) internal {
        refRevenue[id][period] = st.periodRevenue;
        refPeriodRecouped[id][period] = st.periodRecouped;
        refRecouped[id] = st.recouped;
    }

    /// @dev Books one event of `id` (sequence number `seq`) in the reference; returns each party's credit.
    function _refEvent(bytes32 id, IAllianceLedger.Terms memory terms, uint64 seq, uint256 entry)
        internal
        returns (uint256[] memory credits)
    {
        uint32 period = uint32(entry);
        ShapesReference.State memory next;
        (credits, next) = ShapesReference.splitEvent(_shape(terms), _refState(id, period), seq, entry >> 32);
        _refStore(id, period, next);
        for (uint256 i; i < credits.length; ++i) {
            _refCredit(terms.parties[i], credits[i]);
        }
    }

    /// @dev Books one reversal in the reference (balances cover the debits in these tests).
    function _refReversal(bytes32 id, IAllianceLedger.Terms memory terms, uint64 seq, uint256 entry)
        internal
        returns (uint256[] memory debits)
    {
        uint32 period = uint32(entry);
        ShapesReference.State memory next;
        (debits, next) = ShapesReference.splitReversal(_shape(terms), _refState(id, period), seq, entry >> 32);
        _refStore(id, period, next);
        for (uint256 i; i < debits.length; ++i) {
            _refDebit(terms.parties[i], debits[i]);
        }
    }

    /// @dev Settles `entries` on the ledger and books them in the reference.
    function _settleBoth(bytes32 id, IAllianceLedger.Terms memory terms, uint256[] memory entries) internal {
        uint64 seq = ledger.agreementOf(id).nextSeq;
        _settle(id, terms, entries);
        for (uint256 k; k < entries.length; ++k) {
            _refEvent(id, terms, seq + uint64(k), entries[k]);
        }
    }

    function _reverseBoth(bytes32 id, IAllianceLedger.Terms memory terms, uint256[] memory entries) internal {
        uint64 seq = ledger.agreementOf(id).nextSeq;
        _reverse(id, terms, entries);
        for (uint256 k; k < entries.length; ++k) {
            _refReversal(id, terms, seq + uint64(k), entries[k]);
        }
    }

    /// @dev The ledger's balances, period state and recouped total equal the reference's.
    function _assertMatchesReference(bytes32 id, uint32[] memory periods) internal view {
        for (uint256 i = 1; i <= ME_COUNT; ++i) {
            vm.assertEq(ledger.balanceOf(uint32(i), address(token)), expected[i], "balance == reference");
            vm.assertEq(ledger.debtOf(uint32(i), address(token)), expectedDebt[i], "debt == reference");
        }
        for (uint256 p; p < periods.length; ++p) {
            IAllianceLedger.Period memory period = ledger.periodOf(id, periods[p]);
            vm.assertEq(period.revenue, refRevenue[id][periods[p]], "period revenue == reference");
            vm.assertEq(period.recouped, refPeriodRecouped[id][periods[p]], "period recouped == reference");
        }
        vm.assertEq(ledger.agreementOf(id).recouped, refRecouped[id], "agreement recouped == reference");
        _assertConservation();
    }

    /// @dev The ledger holds exactly what it owes (no donations in these tests).
    function _assertConservation() internal view {
        vm.assertEq(token.balanceOf(address(ledger)), ledger.totalOwed(address(token)), "conservation: held == owed");
        uint256 sum;
        for (uint256 i = 1; i <= ME_COUNT; ++i) {
            sum += ledger.balanceOf(uint32(i), address(token));
        }
        vm.assertEq(sum, ledger.totalOwed(address(token)), "owed == sum of balances");
    }
}
