// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IAllianceLedger} from "./interfaces/IAllianceLedger.sol";
import {SplitMath} from "./libraries/SplitMath.sol";

/// @title AllianceLedger
/// @notice See {IAllianceLedger}. Roles: the admin appoints the platform role (registers, updates and
/// dissolves MEs) and the finance role (settles revenue, closes periods). Agreements need no role: every
/// party's signature is their authorisation.
/// @dev Storage keeps a commitment (the EIP-712 struct hash) to each version's terms; the full terms are
/// in the `AgreementProposed` log and are passed back in calldata, checked against the commitment.
contract AllianceLedger is IAllianceLedger, AccessControl, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    bytes32 public constant PLATFORM_ROLE = keccak256("PLATFORM_ROLE");
    bytes32 public constant FINANCE_ROLE = keccak256("FINANCE_ROLE");

    uint256 public constant MIN_PARTIES = 2;
    /// @notice The party cap keeps the worst-case settlement and activation far below a block's gas.
    uint256 public constant MAX_PARTIES = 64;
    uint256 public constant MAX_NAME_BYTES = 64;

    bytes32 public constant TERMS_TYPEHASH = keccak256(
        "Terms(address token,uint32[] parties,uint16[] shares,uint128 target,uint16[] excessShares)"
    );
    bytes32 public constant APPROVAL_TYPEHASH = keccak256(
        "Approval(bytes32 agreementId,uint32 version,Terms terms)"
        "Terms(address token,uint32[] parties,uint16[] shares,uint128 target,uint16[] excessShares)"
    );
    bytes32 public constant TERMINATION_TYPEHASH = keccak256("Termination(bytes32 agreementId,uint32 version)");
    bytes32 public constant ME_UPDATE_TYPEHASH =
        keccak256("MEUpdate(uint32 meId,address payout,address signer,uint32 nonce)");

    /// @dev Slot 0 holds what settlement and activation read (signer, status); slot 1 the payout.
    struct MERecord {
        address signer;
        MEStatus status;
        uint32 nonce;
        uint32 parent;
        address payout;
    }

    /// @dev Working state of one settlement batch: the version's tables as words, the credits of the
    /// current run (consecutive events of one period) and the period's revenue so far.
    struct Batch {
        bytes32 agreementId;
        uint32 version;
        uint256 target;
        uint256[] shares;
        uint256[] excessShares;
        uint256[] base;
        uint256[] excess;
        uint32 period;
        uint64 runFirstSeq;
        uint64 runCount;
        uint256 revenue;
    }

    uint32 private _meCount;
    mapping(uint32 meId => MERecord) private _mes;
    mapping(uint32 meId => string) private _names;
    mapping(bytes32 nameHash => uint32 meId) private _meIdByName;

    mapping(bytes32 agreementId => Agreement) private _agreements;
    mapping(bytes32 agreementId => mapping(uint32 version => bytes32 termsHash)) private _termsHash;
    mapping(bytes32 agreementId => mapping(uint32 period => Period)) private _periods;

    mapping(uint32 meId => mapping(address token => uint256)) private _balances;
    mapping(address token => uint256) private _totalOwed;

    constructor(address admin, address platform, address finance) EIP712("MEAllianceLedger", "1") {
        if (admin == address(0)) revert LedgerZeroAddress("admin");
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (platform != address(0)) _grantRole(PLATFORM_ROLE, platform);
        if (finance != address(0)) _grantRole(FINANCE_ROLE, finance);
    }

    // ================================================================================================
    // ME registry
    // ================================================================================================

    /// @inheritdoc IAllianceLedger
    function registerME(string calldata name, address payout, address signer, uint32 parent)
        external
        onlyRole(PLATFORM_ROLE)
        returns (uint32 meId)
    {
        uint256 length = bytes(name).length;
        if (length == 0 || length > MAX_NAME_BYTES) revert MENameInvalid(name);
        bytes32 nameHash = keccak256(bytes(name));
        uint32 existing = _meIdByName[nameHash];
        if (existing != 0) revert MENameTaken(name, existing);
        if (payout == address(0)) revert LedgerZeroAddress("payout");
        if (signer == address(0)) revert LedgerZeroAddress("signer");
        if (parent != 0 && _mes[parent].status == MEStatus.None) revert MEUnknown(parent);

        meId = ++_meCount;
        _mes[meId] = MERecord({signer: signer, status: MEStatus.Active, nonce: 0, parent: parent, payout: payout});
        _names[meId] = name;
        _meIdByName[nameHash] = meId;
        emit MERegistered(meId, name, payout, signer, parent);
    }

    /// @inheritdoc IAllianceLedger
    function updateME(uint32 meId, address payout, address signer, bytes calldata consent)
        external
        onlyRole(PLATFORM_ROLE)
    {
        MERecord storage me = _mes[meId];
        if (me.status == MEStatus.None) revert MEUnknown(meId);
        if (payout == address(0)) revert LedgerZeroAddress("payout");
        if (signer == address(0)) revert LedgerZeroAddress("signer");
        uint32 nonce = me.nonce;
        address current = me.signer;
        address recovered = _recover(meUpdateDigest(meId, payout, signer, nonce), consent);
        if (recovered != current) revert MEConsentInvalid(meId, recovered, current);

        me.signer = signer;
        me.payout = payout;
        me.nonce = nonce + 1;
        emit MEUpdated(meId, payout, signer, nonce + 1);
    }

    /// @inheritdoc IAllianceLedger
    function dissolveME(uint32 meId) external onlyRole(PLATFORM_ROLE) {
        MERecord storage me = _mes[meId];
        if (me.status != MEStatus.Active) {
            if (me.status == MEStatus.None) revert MEUnknown(meId);
            revert MENotActive(meId, me.status);
        }
        me.status = MEStatus.Dissolved;
        emit MEDissolved(meId);
    }

    // ================================================================================================
    // Agreements
    // ================================================================================================

    /// @inheritdoc IAllianceLedger
    function proposeAgreement(bytes32 agreementId, Terms calldata terms) external returns (uint32 version) {
        if (!hasRole(PLATFORM_ROLE, msg.sender) && !_isPartySigner(terms.parties, msg.sender)) {
            revert AgreementProposerNotParty(msg.sender);
        }
        (version,) = _propose(agreementId, terms);
    }

    /// @inheritdoc IAllianceLedger
    function activateAgreement(
        bytes32 agreementId,
        uint32 version,
        Terms calldata terms,
        bytes[] calldata signatures
    ) external {
        Agreement storage agreement = _agreements[agreementId];
        AgreementStatus status = agreement.status;
        if (status == AgreementStatus.None) revert AgreementUnknown(agreementId);
        if (status == AgreementStatus.Terminated) revert AgreementTerminated(agreementId);
        if (version == agreement.activeVersion) revert AgreementVersionAlreadyActive(agreementId, version);
        if (version != agreement.latestVersion) {
            revert AgreementVersionNotLatest(agreementId, version, agreement.latestVersion);
        }
        bytes32 termsHash = _checkTerms(agreementId, version, terms);
        _activate(agreement, agreementId, version, termsHash, terms.parties, signatures);
    }

    /// @inheritdoc IAllianceLedger
    function createAgreement(bytes32 agreementId, Terms calldata terms, bytes[] calldata signatures) external {
        if (_agreements[agreementId].status != AgreementStatus.None) revert AgreementExists(agreementId);
        (uint32 version, bytes32 termsHash) = _propose(agreementId, terms);
        _activate(_agreements[agreementId], agreementId, version, termsHash, terms.parties, signatures);
    }

    /// @inheritdoc IAllianceLedger
    function terminateAgreement(bytes32 agreementId, Terms calldata terms, bytes[] calldata signatures) external {
        Agreement storage agreement = _agreements[agreementId];
        AgreementStatus status = agreement.status;
        if (status == AgreementStatus.None) revert AgreementUnknown(agreementId);
        if (status == AgreementStatus.Terminated) revert AgreementTerminated(agreementId);
        uint32 version = status == AgreementStatus.Active ? agreement.activeVersion : agreement.latestVersion;
        _checkTerms(agreementId, version, terms);
        bytes32 digest = terminationDigest(agreementId, version);
        _checkSignatures(agreementId, version, digest, terms.parties, signatures, false);

        agreement.status = AgreementStatus.Terminated;
        emit AgreementEnded(agreementId, version, signatures);
    }

    // ================================================================================================
    // Settlement and balances
    // ================================================================================================

    /// @inheritdoc IAllianceLedger
    function settle(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries
    ) external onlyRole(FINANCE_ROLE) nonReentrant returns (uint256 total) {
        Agreement storage agreement = _checkBatch(agreementId, version, firstSeq, terms, refs.length, entries.length);

        // Effects. A batch has far fewer than 2**64 - firstSeq events (calldata bounds it).
        agreement.nextSeq = firstSeq + uint64(entries.length);
        emit RevenueSettled(agreementId, version, firstSeq, refs, entries);
        Batch memory batch = _newBatch(agreementId, version, terms);
        total = _credit(batch, firstSeq, terms, refs, entries);
        address token = agreement.token;
        _totalOwed[token] += total;

        // Interaction: pull exactly `total`; a token that delivers less (fee on transfer) is refused.
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(msg.sender, address(this), total);
        uint256 received = erc20.balanceOf(address(this)) - before;
        if (received != total) revert TokenTransferShortfall(token, total, received);
    }

    /// @inheritdoc IAllianceLedger
    function closePeriod(bytes32 agreementId, uint32 period) external onlyRole(FINANCE_ROLE) {
        if (_agreements[agreementId].status == AgreementStatus.None) revert AgreementUnknown(agreementId);
        Period storage p = _periods[agreementId][period];
        if (p.closed) revert PeriodAlreadyClosed(agreementId, period);
        p.closed = true;
        emit PeriodClosed(agreementId, period, p.revenue);
    }

    /// @inheritdoc IAllianceLedger
    function withdraw(uint32 meId, address token) external nonReentrant returns (uint256 amount) {
        address payout = _mes[meId].payout;
        if (msg.sender != payout) revert WithdrawCallerNotPayout(meId, msg.sender, payout);
        amount = _balances[meId][token];
        if (amount == 0) revert NothingToWithdraw(meId, token);

        _balances[meId][token] = 0;
        _totalOwed[token] -= amount;
        emit Withdrawn(meId, token, payout, amount);
        IERC20(token).safeTransfer(payout, amount);
    }

    // ================================================================================================
    // Views
    // ================================================================================================

    function meCount() external view returns (uint32) {
        return _meCount;
    }

    function meOf(uint32 meId) external view returns (ME memory) {
        MERecord storage me = _mes[meId];
        return ME({
            payout: me.payout,
            parent: me.parent,
            status: me.status,
            nonce: me.nonce,
            signer: me.signer,
            name: _names[meId]
        });
    }

    function meIdByName(string calldata name) external view returns (uint32) {
        return _meIdByName[keccak256(bytes(name))];
    }

    function agreementOf(bytes32 agreementId) external view returns (Agreement memory) {
        return _agreements[agreementId];
    }

    function termsHashOf(bytes32 agreementId, uint32 version) external view returns (bytes32) {
        return _termsHash[agreementId][version];
    }

    function periodOf(bytes32 agreementId, uint32 period) external view returns (Period memory) {
        return _periods[agreementId][period];
    }

    function balanceOf(uint32 meId, address token) external view returns (uint256) {
        return _balances[meId][token];
    }

    function totalOwed(address token) external view returns (uint256) {
        return _totalOwed[token];
    }

    function hashTerms(Terms calldata terms) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                TERMS_TYPEHASH,
                terms.token,
                keccak256(abi.encodePacked(terms.parties)),
                keccak256(abi.encodePacked(terms.shares)),
                terms.target,
                keccak256(abi.encodePacked(terms.excessShares))
            )
        );
    }

    function approvalDigest(bytes32 agreementId, uint32 version, bytes32 termsHash) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(APPROVAL_TYPEHASH, agreementId, version, termsHash)));
    }

    function terminationDigest(bytes32 agreementId, uint32 version) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(TERMINATION_TYPEHASH, agreementId, version)));
    }

    function meUpdateDigest(uint32 meId, address payout, address signer, uint32 nonce)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(ME_UPDATE_TYPEHASH, meId, payout, signer, nonce)));
    }

    // ================================================================================================
    // Internals
    // ================================================================================================

    /// @dev Validates `terms` and records them as the next version of `agreementId`.
    function _propose(bytes32 agreementId, Terms calldata terms) private returns (uint32 version, bytes32 termsHash) {
        if (agreementId == bytes32(0)) revert AgreementIdInvalid();
        Agreement storage agreement = _agreements[agreementId];
        AgreementStatus status = agreement.status;
        if (status == AgreementStatus.Terminated) revert AgreementTerminated(agreementId);
        _validateTerms(terms);
        if (status == AgreementStatus.None) {
            agreement.token = terms.token;
            agreement.status = AgreementStatus.Proposed;
        } else if (terms.token != agreement.token) {
            revert AgreementTokenChanged(agreement.token, terms.token);
        }
        version = agreement.latestVersion + 1;
        agreement.latestVersion = version;
        termsHash = hashTerms(terms);
        _termsHash[agreementId][version] = termsHash;
        emit AgreementProposed(agreementId, version, termsHash, terms, msg.sender);
    }

    function _activate(
        Agreement storage agreement,
        bytes32 agreementId,
        uint32 version,
        bytes32 termsHash,
        uint32[] calldata parties,
        bytes[] calldata signatures
    ) private {
        _checkSignatures(agreementId, version, approvalDigest(agreementId, version, termsHash), parties, signatures, true);
        agreement.status = AgreementStatus.Active;
        agreement.activeVersion = version;
        emit AgreementActivated(agreementId, version, signatures);
    }

    /// @dev Every party's current signer signed `digest`, in party order. For an approval every party
    /// must also still be active.
    function _checkSignatures(
        bytes32 agreementId,
        uint32 version,
        bytes32 digest,
        uint32[] calldata parties,
        bytes[] calldata signatures,
        bool requireActive
    ) private view {
        uint256 n = parties.length;
        if (signatures.length != n) revert AgreementSignatureCount(n, signatures.length);
        for (uint256 i; i < n; ++i) {
            MERecord storage me = _mes[parties[i]];
            if (requireActive && me.status != MEStatus.Active) revert AgreementPartyDissolved(agreementId, parties[i]);
            address recovered = _recover(digest, signatures[i]);
            if (recovered != me.signer) revert AgreementSignatureInvalid(agreementId, version, parties[i], recovered);
        }
    }

    /// @dev ECDSA recovery that maps every malformed signature to address(0) instead of reverting, so
    /// the caller reports which party's signature is wrong. Signers are never address(0).
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address recovered) {
        (recovered,,) = ECDSA.tryRecover(digest, signature);
    }

    /// @dev The terms passed in calldata are the ones committed for `version`.
    function _checkTerms(bytes32 agreementId, uint32 version, Terms calldata terms)
        private
        view
        returns (bytes32 termsHash)
    {
        termsHash = hashTerms(terms);
        if (termsHash != _termsHash[agreementId][version]) revert AgreementTermsMismatch(agreementId, version);
    }

    function _validateTerms(Terms calldata terms) private view {
        if (terms.token == address(0)) revert LedgerZeroAddress("token");
        uint32[] calldata parties = terms.parties;
        uint256 n = parties.length;
        if (n < MIN_PARTIES || n > MAX_PARTIES) revert AgreementPartyCount(n, MIN_PARTIES, MAX_PARTIES);
        if (terms.shares.length != n) revert AgreementTableLength(n, terms.shares.length);
        _checkSum(terms.shares, false);
        if (terms.target == 0) {
            if (terms.excessShares.length != 0) revert AgreementTierInvalid(0, terms.excessShares.length);
        } else {
            if (terms.excessShares.length != n) revert AgreementTableLength(n, terms.excessShares.length);
            _checkSum(terms.excessShares, true);
        }
        uint32 previous;
        for (uint256 i; i < n; ++i) {
            uint32 meId = parties[i];
            if (meId == previous) revert AgreementDuplicateParty(meId);
            if (meId < previous) revert AgreementPartiesUnordered(previous, meId);
            previous = meId;
            MEStatus status = _mes[meId].status;
            if (status == MEStatus.None) revert MEUnknown(meId);
            if (status != MEStatus.Active) revert MENotActive(meId, status);
        }
    }

    function _checkSum(uint16[] calldata shares, bool excessTable) private pure {
        uint256 sum;
        for (uint256 i; i < shares.length; ++i) {
            sum += shares[i];
        }
        if (sum != SplitMath.BPS) revert AgreementSharesSum(excessTable, sum);
    }

    function _isPartySigner(uint32[] calldata parties, address account) private view returns (bool) {
        for (uint256 i; i < parties.length; ++i) {
            if (_mes[parties[i]].signer == account && account != address(0)) return true;
        }
        return false;
    }

    /// @dev The checks of a settlement that do not depend on the events themselves.
    function _checkBatch(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        uint256 refCount,
        uint256 entryCount
    ) private view returns (Agreement storage agreement) {
        agreement = _agreements[agreementId];
        if (agreement.status != AgreementStatus.Active) revert AgreementNotActive(agreementId, agreement.status);
        uint32 active = agreement.activeVersion;
        if (version != active) revert AgreementVersionNotActive(agreementId, version, active);
        _checkTerms(agreementId, version, terms);
        if (entryCount == 0 || refCount != entryCount) revert SettlementBatchInvalid(agreementId, refCount, entryCount);
        uint64 expected = agreement.nextSeq;
        if (firstSeq != expected) revert SettlementOutOfSequence(agreementId, expected, firstSeq);
        uint32[] calldata parties = terms.parties;
        for (uint256 i; i < parties.length; ++i) {
            if (_mes[parties[i]].status != MEStatus.Active) revert AgreementPartyDissolved(agreementId, parties[i]);
        }
    }

    function _newBatch(bytes32 agreementId, uint32 version, Terms calldata terms)
        private
        pure
        returns (Batch memory batch)
    {
        uint256 n = terms.parties.length;
        batch.agreementId = agreementId;
        batch.version = version;
        batch.target = terms.target;
        batch.shares = _widen(terms.shares);
        batch.excessShares = batch.target == 0 ? batch.shares : _widen(terms.excessShares);
        batch.base = new uint256[](n);
        batch.excess = new uint256[](n);
    }

    /// @dev Splits every event of the batch and credits the parties, one run of same-period events at a
    /// time (one balance write per party per run). Returns the batch total.
    function _credit(
        Batch memory batch,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries
    ) private returns (uint256 total) {
        // The first event always starts a run, so its period is checked like every later change.
        _startRun(batch, terms, uint32(entries[0]), firstSeq);
        for (uint256 k; k < entries.length; ++k) {
            uint256 entry = entries[k];
            uint256 amount = entry >> 32;
            uint64 seq = firstSeq + uint64(k);
            if (amount == 0 || amount > type(uint128).max) revert RevenueAmountInvalid(batch.agreementId, seq, amount);
            if (refs[k] == bytes32(0)) revert RevenueReferenceEmpty(batch.agreementId, seq);
            uint32 period = uint32(entry);
            if (period != batch.period) _startRun(batch, terms, period, seq);
            _splitEvent(batch, amount, seq);
            // Each amount is below 2**128 and a batch has far fewer than 2**128 events: no overflow.
            unchecked {
                total += amount;
            }
        }
        _endRun(batch, terms);
    }

    function _splitEvent(Batch memory batch, uint256 amount, uint64 seq) private pure {
        uint256 offset = SplitMath.offsetOf(seq);
        (uint256 below, uint256 above) = SplitMath.tierParts(batch.revenue, amount, batch.target);
        if (below != 0) SplitMath.addSplit(below, offset, batch.shares, batch.base);
        if (above != 0) SplitMath.addSplit(above, offset, batch.excessShares, batch.excess);
        // Bounded by the batch total (see `_credit`); `_endRun` checks the period total fits 128 bits.
        unchecked {
            batch.revenue += amount;
            batch.runCount += 1;
        }
    }

    /// @dev Ends the current run (if any) and starts one for `period` at `seq`.
    function _startRun(Batch memory batch, Terms calldata terms, uint32 period, uint64 seq) private {
        if (period == 0) revert PeriodInvalid(batch.agreementId, seq);
        if (batch.runCount != 0) _endRun(batch, terms);
        Period storage p = _periods[batch.agreementId][period];
        if (p.closed) revert PeriodAlreadyClosed(batch.agreementId, period);
        batch.period = period;
        batch.runFirstSeq = seq;
        batch.revenue = p.revenue;
    }

    /// @dev Books a run: the period's revenue, each party's balance, the `PartiesCredited` event.
    function _endRun(Batch memory batch, Terms calldata terms) private {
        bytes32 agreementId = batch.agreementId;
        uint256 revenue = batch.revenue;
        if (revenue > type(uint128).max) revert RevenueAmountInvalid(agreementId, batch.runFirstSeq, revenue);
        _periods[agreementId][batch.period].revenue = uint128(revenue);
        address token = terms.token;
        uint32[] calldata parties = terms.parties;
        uint256[] memory base = batch.base;
        uint256[] memory excess = batch.excess;
        for (uint256 i; i < parties.length; ++i) {
            uint256 credit = base[i] + excess[i];
            if (credit != 0) _balances[parties[i]][token] += credit;
        }
        emit PartiesCredited(agreementId, batch.period, batch.version, batch.runFirstSeq, batch.runCount, base, excess);
        for (uint256 i; i < parties.length; ++i) {
            base[i] = 0;
            excess[i] = 0;
        }
        batch.runCount = 0;
    }

    function _widen(uint16[] calldata values) private pure returns (uint256[] memory wide) {
        wide = new uint256[](values.length);
        for (uint256 i; i < values.length; ++i) {
            wide[i] = values[i];
        }
    }
}
