// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAllianceLedger} from "./interfaces/IAllianceLedger.sol";
import {SplitMath} from "./libraries/SplitMath.sol";

/// @title AllianceLedgerState
/// @notice The storage of the ledger and the internals that both {AllianceLedger} and its settlement
/// module {AllianceLedgerShapes} (run by delegatecall, so in the ledger's storage) use. Its variables
/// come first in both contracts' layouts, so the two agree slot for slot.
abstract contract AllianceLedgerState {
    uint256 public constant MIN_PARTIES = 2;
    /// @notice The party cap keeps the worst-case settlement and activation far below a block's gas.
    uint256 public constant MAX_PARTIES = 64;
    uint256 public constant MAX_NAME_BYTES = 64;

    /// @notice At most this many bands per version (the base table is not a band).
    uint256 public constant MAX_BANDS = 4;
    /// @notice At most this many levels of inner alliances below any agreement.
    uint256 public constant MAX_NESTING_DEPTH = 2;

    bytes32 public constant BAND_TYPEHASH = keccak256("Band(uint128 target,uint16[] shares)");
    bytes32 public constant TERMS_TYPEHASH = keccak256(
        "Terms(address token,uint32[] parties,uint16[] shares,Band[] bands,uint128 recoup,uint16[] recoupShares,"
        "bytes32[] nested)Band(uint128 target,uint16[] shares)"
    );
    /// @dev EIP-712 encodeType: the primary type, then the referenced types sorted by name (Band, Terms).
    bytes32 public constant APPROVAL_TYPEHASH = keccak256(
        "Approval(bytes32 agreementId,uint32 version,Terms terms)Band(uint128 target,uint16[] shares)"
        "Terms(address token,uint32[] parties,uint16[] shares,Band[] bands,uint128 recoup,uint16[] recoupShares,"
        "bytes32[] nested)"
    );

    /// @dev Slot 0 holds what settlement and activation read (signer, status); slot 1 the payout.
    struct MERecord {
        address signer;
        IAllianceLedger.MEStatus status;
        uint32 nonce;
        uint32 parent;
        address payout;
    }

    /// @dev One slot per ME and token, read and written once per run: what the ledger owes the ME
    /// (withdrawable) and what the ME owes finance (from reversals). Never both non-zero.
    struct Account {
        uint128 balance;
        uint128 debt;
    }

    uint32 internal _meCount;
    mapping(uint32 meId => MERecord) internal _mes;
    mapping(uint32 meId => string) internal _names;
    mapping(bytes32 nameHash => uint32 meId) internal _meIdByName;

    mapping(bytes32 agreementId => IAllianceLedger.Agreement) internal _agreements;
    mapping(bytes32 agreementId => mapping(uint32 version => bytes32 termsHash)) internal _termsHash;
    mapping(bytes32 agreementId => mapping(uint32 period => IAllianceLedger.Period)) internal _periods;
    /// @dev The distinct non-zero nested agreement ids of the version in force (written at activation,
    /// only when they change).
    mapping(bytes32 agreementId => bytes32[]) internal _innerOf;

    mapping(uint32 meId => mapping(address token => Account)) internal _accounts;
    mapping(address token => uint256) internal _totalOwed;
    mapping(address token => uint256) internal _totalDebt;

    function _hashTerms(IAllianceLedger.Terms calldata terms) internal pure returns (bytes32) {
        IAllianceLedger.Band[] calldata bands = terms.bands;
        bytes32[] memory bandHashes = new bytes32[](bands.length);
        for (uint256 j; j < bands.length; ++j) {
            bandHashes[j] =
                keccak256(abi.encode(BAND_TYPEHASH, bands[j].target, keccak256(abi.encodePacked(bands[j].shares))));
        }
        return keccak256(
            abi.encode(
                TERMS_TYPEHASH,
                terms.token,
                keccak256(abi.encodePacked(terms.parties)),
                keccak256(abi.encodePacked(terms.shares)),
                keccak256(abi.encodePacked(bandHashes)),
                terms.recoup,
                keccak256(abi.encodePacked(terms.recoupShares)),
                keccak256(abi.encodePacked(terms.nested))
            )
        );
    }

    /// @dev The terms passed in calldata are the ones committed for `version`.
    function _checkTerms(bytes32 agreementId, uint32 version, IAllianceLedger.Terms calldata terms)
        internal
        view
        returns (bytes32 termsHash)
    {
        termsHash = _hashTerms(terms);
        if (termsHash != _termsHash[agreementId][version]) {
            revert IAllianceLedger.AgreementTermsMismatch(agreementId, version);
        }
    }

    /// @dev The checks of a settlement that do not depend on the events themselves.
    function _checkBatch(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms calldata terms,
        bytes32[] calldata refs,
        uint256 entryCount
    ) internal view returns (IAllianceLedger.Agreement storage agreement) {
        uint256 refCount = refs.length;
        agreement = _agreements[agreementId];
        if (agreement.status != IAllianceLedger.AgreementStatus.Active) {
            revert IAllianceLedger.AgreementNotActive(agreementId, agreement.status);
        }
        uint32 active = agreement.activeVersion;
        if (version != active) revert IAllianceLedger.AgreementVersionNotActive(agreementId, version, active);
        _checkTerms(agreementId, version, terms);
        if (entryCount == 0 || refCount != entryCount) {
            revert IAllianceLedger.SettlementBatchInvalid(agreementId, refCount, entryCount);
        }
        uint64 expected = agreement.nextSeq;
        if (firstSeq != expected) revert IAllianceLedger.SettlementOutOfSequence(agreementId, expected, firstSeq);
        for (uint256 k; k < refCount; ++k) {
            if (refs[k] == bytes32(0)) revert IAllianceLedger.RevenueReferenceEmpty(agreementId, firstSeq + uint64(k));
        }
        uint32[] calldata parties = terms.parties;
        for (uint256 i; i < parties.length; ++i) {
            if (_mes[parties[i]].status != IAllianceLedger.MEStatus.Active) {
                revert IAllianceLedger.AgreementPartyDissolved(agreementId, parties[i]);
            }
        }
    }

    /// @dev An ME's withdrawable balance in `token`: the one place payouts read it.
    function _balanceOf(uint32 meId, address token) internal view returns (uint256 balance) {
        (balance,) = _load(_accounts[meId][token]);
    }

    /// @dev Sets an ME's withdrawable balance in `token`, keeping its debt (`totalOwed` is the caller's
    /// business). `amount` never exceeds the balance read by `_balanceOf`, so it stays below 2**128.
    function _setBalance(uint32 meId, address token, uint256 amount) internal {
        Account storage account = _accounts[meId][token];
        (, uint256 debt) = _load(account);
        _store(account, amount, debt);
    }

    /// @dev Adds `credit` to an ME's account: first to its debt (netted, never paid in by finance), the
    /// rest to its balance. One slot read and one written.
    function _creditAccount(uint32 meId, address token, uint256 credit) internal returns (uint256 netted) {
        Account storage account = _accounts[meId][token];
        (uint256 balance, uint256 debt) = _load(account);
        if (debt != 0) {
            netted = credit < debt ? credit : debt;
            // netted <= debt and netted <= credit.
            unchecked {
                debt -= netted;
                credit -= netted;
            }
            emit IAllianceLedger.DebtNetted(meId, token, netted);
        }
        balance += credit;
        if (balance > type(uint128).max) revert IAllianceLedger.AccountOverflow(meId, token);
        _store(account, balance, debt);
    }

    /// @dev Takes `debit` from an ME's account: from its balance, and what the balance does not cover
    /// becomes its debt (`DebtIncurred`). One slot read and one written.
    function _debitAccount(uint32 meId, address token, uint256 debit) internal returns (uint256 owed) {
        Account storage account = _accounts[meId][token];
        (uint256 balance, uint256 debt) = _load(account);
        if (balance >= debit) {
            // Checked just above.
            unchecked {
                balance -= debit;
            }
        } else {
            // balance < debit; debt < 2**128 and owed < 2**128 (amounts are below 2**128), no overflow.
            unchecked {
                owed = debit - balance;
                debt += owed;
            }
            if (debt > type(uint128).max) revert IAllianceLedger.AccountOverflow(meId, token);
            balance = 0;
            emit IAllianceLedger.DebtIncurred(meId, token, owed);
        }
        _store(account, balance, debt);
    }

    /// @dev An account's balance and debt with one SLOAD (the struct is exactly one slot).
    function _load(Account storage account) internal view returns (uint256 balance, uint256 debt) {
        uint256 packed;
        assembly ("memory-safe") {
            packed := sload(account.slot)
        }
        balance = uint128(packed);
        debt = packed >> 128;
    }

    /// @dev Writes an account with one SSTORE; both values are checked below 2**128 by the callers.
    function _store(Account storage account, uint256 balance, uint256 debt) internal {
        uint256 packed = balance | (debt << 128);
        assembly ("memory-safe") {
            sstore(account.slot, packed)
        }
    }

    /// @dev S_1..S_(n-1): the running sums of a share table, without the last (which is BPS).
    function _prefixSums(uint16[] calldata shares) internal pure returns (uint256[] memory prefix) {
        uint256 m = shares.length - 1;
        prefix = new uint256[](m);
        uint256 running; // slither uninitialized-local (accepted): the running sum starts at 0
        for (uint256 i; i < m; ++i) {
            running += shares[i];
            prefix[i] = running;
        }
    }
}
