// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {AllianceLedgerShapes} from "./AllianceLedgerShapes.sol";
import {AllianceLedgerState} from "./AllianceLedgerState.sol";
import {IAllianceLedger} from "./interfaces/IAllianceLedger.sol";
import {SplitMath} from "./libraries/SplitMath.sol";

/// @title AllianceLedger
/// @notice See {IAllianceLedger}. Roles: the admin appoints the platform role (registers, updates and
/// dissolves MEs) and the finance role (settles revenue, closes periods). Agreements need no role: every
/// party's signature is their authorisation.
/// @dev Storage keeps a commitment (the EIP-712 struct hash) to each version's terms; the full terms are
/// in the `AgreementProposed` log and are passed back in calldata, checked against the commitment.
contract AllianceLedger is AllianceLedgerState, IAllianceLedger, AccessControl, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    bytes32 public constant PLATFORM_ROLE = keccak256("PLATFORM_ROLE");
    bytes32 public constant FINANCE_ROLE = keccak256("FINANCE_ROLE");

    bytes32 public constant TERMINATION_TYPEHASH = keccak256("Termination(bytes32 agreementId,uint32 version)");
    bytes32 public constant ME_UPDATE_TYPEHASH =
        keccak256("MEUpdate(uint32 meId,address payout,address signer,uint32 nonce)");

    /// @dev Working state of one settlement batch. The split of a part `a` gives party i
    /// floor((o + a*S_i)/BPS) - floor((o + a*S_(i-1))/BPS) (see SplitMath). Summed over a run of events,
    /// party i's credit is Q_i - Q_(i-1) with Q_i = the sum of floor((o + a*S_i)/BPS) over the run, so
    /// the event loop only accumulates Q_1..Q_(n-1) (Q_n is the run's total, as S_n = BPS) and the
    /// credits are taken once per run.
    struct Batch {
        bytes32 agreementId;
        uint32 version;
        uint256 target; // band 1's target (0 without a band)
        uint256[] prefixBase; // S_1..S_(n-1) of the base table
        uint256[] prefixExcess; // S_1..S_(n-1) of the excess table
        uint256[] sumsBase; // Q_1..Q_(n-1) of the current run's base parts
        uint256[] sumsExcess; // Q_1..Q_(n-1) of the current run's excess parts
        uint256 runBase; // the current run's base parts, summed (Q_n)
        uint256 runExcess; // the current run's excess parts, summed
        uint32 period; // the current run's period
        uint64 runFirstSeq;
        uint256 revenue; // the period's banded revenue so far (revenue - recouped), including the current run
        uint256 recouped; // the period's recouped part (not banded; constant on this path)
        uint256 netted; // settle: the parties' debts repaid from this batch's credits (not paid in)
    }

    /// @dev The settlement module for bands, recoup and nesting (deployed here, run by delegatecall).
    AllianceLedgerShapes private immutable _shapes;

    constructor(address admin, address platform, address finance) EIP712("MEAllianceLedger", "1") {
        _shapes = new AllianceLedgerShapes();
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
        meId = _register(name, payout, signer, parent);
    }

    /// @inheritdoc IAllianceLedger
    function registerMEs(
        string[] calldata names,
        address[] calldata payouts,
        address[] calldata signers,
        uint32[] calldata parents
    ) external onlyRole(PLATFORM_ROLE) returns (uint32 firstId) {
        uint256 n = names.length;
        if (n == 0 || payouts.length != n || signers.length != n || parents.length != n) {
            revert MEBatchInvalid(n, payouts.length, signers.length, parents.length);
        }
        firstId = _meCount + 1;
        for (uint256 i; i < n; ++i) {
            _register(names[i], payouts[i], signers[i], parents[i]);
        }
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
        bytes32 digest = meUpdateDigest(meId, payout, signer, nonce);
        (bool valid, address recovered) = _isValidSignature(current, digest, consent);
        if (!valid) {
            if (recovered == address(1)) revert MEConsentRefused(meId, current);
            revert MEConsentInvalid(meId, recovered, current);
        }

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
    function proposeAgreement(bytes32 agreementId, Terms calldata terms, Terms calldata current)
        external
        returns (uint32 version)
    {
        if (!hasRole(PLATFORM_ROLE, msg.sender)) _checkProposer(agreementId, terms, current);
        (version,) = _propose(agreementId, terms);
    }

    /// @inheritdoc IAllianceLedger
    function proposeAgreements(bytes32[] calldata agreementIds, Terms[] calldata terms)
        external
        onlyRole(PLATFORM_ROLE)
    {
        uint256 n = agreementIds.length;
        if (n == 0 || terms.length != n) revert AgreementBatchInvalid(n, terms.length);
        for (uint256 i; i < n; ++i) {
            _propose(agreementIds[i], terms[i]);
        }
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
        uint32 latest = agreement.latestVersion;
        if (version == 0 || version > latest) revert AgreementVersionUnknown(agreementId, version, latest);
        uint32 active = agreement.activeVersion;
        if (version == active) revert AgreementVersionAlreadyActive(agreementId, version);
        if (version < active) revert AgreementVersionSuperseded(agreementId, version, active);
        bytes32 termsHash = _checkTerms(agreementId, version, terms);
        _activate(agreement, agreementId, version, termsHash, terms, signatures);
    }

    /// @inheritdoc IAllianceLedger
    function createAgreement(bytes32 agreementId, Terms calldata terms, bytes[] calldata signatures) external {
        if (_agreements[agreementId].status != AgreementStatus.None) revert AgreementExists(agreementId);
        (uint32 version, bytes32 termsHash) = _propose(agreementId, terms);
        _activate(_agreements[agreementId], agreementId, version, termsHash, terms, signatures);
    }

    /// @inheritdoc IAllianceLedger
    function terminateAgreement(bytes32 agreementId, Terms calldata terms, bytes[] calldata signatures) external {
        Agreement storage agreement = _agreements[agreementId];
        AgreementStatus status = agreement.status;
        if (status == AgreementStatus.None) revert AgreementUnknown(agreementId);
        if (status == AgreementStatus.Terminated) revert AgreementTerminated(agreementId);
        uint32 version = _currentVersion(agreement, status);
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
    ) external onlyRole(FINANCE_ROLE) nonReentrant returns (uint256 paidIn) {
        if (!_isClassic(terms)) return _delegateToShapes();
        Agreement storage agreement = _checkBatch(agreementId, version, firstSeq, terms, refs, entries.length);

        // Effects. A batch has far fewer than 2**64 - firstSeq events (calldata bounds it).
        agreement.nextSeq = firstSeq + uint64(entries.length);
        emit RevenueSettled(agreementId, version, firstSeq, refs, entries);
        Batch memory batch = _newBatch(agreementId, version, terms);
        uint256 total = _credit(batch, firstSeq, terms, entries);
        address token = agreement.token;
        // The netted part of the credits repaid debts owed to finance: finance does not pay it in.
        uint256 netted = batch.netted;
        paidIn = total - netted;
        _totalOwed[token] += paidIn;
        if (netted != 0) _totalDebt[token] -= netted;

        // Interaction: pull exactly `paidIn`; a token that delivers less (fee on transfer) is refused.
        if (paidIn != 0) {
            IERC20 erc20 = IERC20(token);
            uint256 before = erc20.balanceOf(address(this));
            erc20.safeTransferFrom(msg.sender, address(this), paidIn);
            uint256 received = erc20.balanceOf(address(this)) - before;
            if (received != paidIn) revert TokenTransferShortfall(token, paidIn, received);
        }
    }

    /// @inheritdoc IAllianceLedger
    function settleReversals(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries,
        bytes32[] calldata originals
    ) external onlyRole(FINANCE_ROLE) nonReentrant returns (uint256 returned) {
        // Reversals of every shape run in the settlement module (reading this call's calldata).
        (agreementId, version, firstSeq, terms, refs, entries, originals);
        return _delegateToShapes();
    }

    /// @inheritdoc IAllianceLedger
    function settleNested(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries,
        InnerTerms[] calldata inner
    ) external onlyRole(FINANCE_ROLE) nonReentrant returns (uint256 paidIn) {
        // The module reads every argument from this call's calldata.
        (agreementId, version, firstSeq, terms, refs, entries, inner);
        return _delegateToShapes();
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
        Account storage account = _accounts[meId][token];
        amount = account.balance;
        if (amount == 0) revert NothingToWithdraw(meId, token);

        account.balance = 0;
        _totalOwed[token] -= amount;
        emit Withdrawn(meId, token, payout, amount);
        IERC20(token).safeTransfer(payout, amount);
    }

    /// @inheritdoc IAllianceLedger
    function payout(address token, uint32[] calldata meIds) external nonReentrant returns (uint256 paid) {
        if (token == address(0)) revert LedgerZeroAddress("token");
        uint256 n = meIds.length;
        if (n == 0) revert PayoutBatchEmpty(token);
        IERC20 erc20 = IERC20(token);
        for (uint256 i; i < n; ++i) {
            uint32 meId = meIds[i];
            // Every registered ME has a non-zero payout address; the zero address means no such ME.
            address to = _mes[meId].payout;
            if (to == address(0)) revert MEUnknown(meId);
            uint256 amount = _balanceOf(meId, token);
            if (amount == 0) continue;

            // Effects before the transfer, so the invariant holds during it (held == owed after it).
            _setBalance(meId, token, 0);
            _totalOwed[token] -= amount;
            // Interaction. The event states the transfer's outcome, so it follows it; `nonReentrant`
            // keeps every value-moving function closed meanwhile.
            if (erc20.trySafeTransfer(to, amount)) {
                // The ME's balance, and so `paid`, is at most `_totalOwed[token]`.
                unchecked {
                    paid += amount;
                }
                emit Withdrawn(meId, token, to, amount);
            } else {
                _setBalance(meId, token, amount);
                _totalOwed[token] += amount;
                emit PayoutSkipped(meId, token, to, amount);
            }
        }
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

    function nestedOf(bytes32 agreementId) external view returns (bytes32[] memory) {
        return _innerOf[agreementId];
    }

    function balanceOf(uint32 meId, address token) external view returns (uint256) {
        return _accounts[meId][token].balance;
    }

    function totalOwed(address token) external view returns (uint256) {
        return _totalOwed[token];
    }

    function debtOf(uint32 meId, address token) external view returns (uint256) {
        return _accounts[meId][token].debt;
    }

    function totalDebt(address token) external view returns (uint256) {
        return _totalDebt[token];
    }

    function hashTerms(Terms calldata terms) public pure returns (bytes32) {
        return _hashTerms(terms);
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

    /// @dev Checks and records a new ME (the caller checked the role).
    function _register(string calldata name, address payout, address signer, uint32 parent)
        private
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

    /// @dev Validates `terms` and records them as the next version of `agreementId`.
    function _propose(bytes32 agreementId, Terms calldata terms) private returns (uint32 version, bytes32 termsHash) {
        if (agreementId == bytes32(0)) revert AgreementIdInvalid();
        Agreement storage agreement = _agreements[agreementId];
        AgreementStatus status = agreement.status;
        if (status == AgreementStatus.Terminated) revert AgreementTerminated(agreementId);
        _validateTerms(agreementId, terms);
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
        Terms calldata terms,
        bytes[] calldata signatures
    ) private {
        _checkSignatures(
            agreementId, version, approvalDigest(agreementId, version, termsHash), terms.parties, signatures, true
        );
        if (terms.nested.length != 0) {
            // Inner alliances may have been re-nested since the proposal: walk again, then record.
            _delegateCall(abi.encodeCall(AllianceLedgerShapes.checkNesting, (agreementId, terms, true)));
        } else if (agreement.activeVersion != 0 && _innerOf[agreementId].length != 0) {
            delete _innerOf[agreementId];
        }
        agreement.status = AgreementStatus.Active;
        agreement.activeVersion = version;
        emit AgreementActivated(agreementId, version, signatures);
    }

    /// @dev Every party's current signer signed `digest`, in party order. For an approval every party
    /// must also still be active (see {_isValidSignature} and {IAllianceLedger-activateAgreement}).
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
            address signer = me.signer;
            (bool valid, address recovered) = _isValidSignature(signer, digest, signatures[i]);
            if (!valid) {
                if (recovered == address(1)) revert AgreementSignatureRefused(agreementId, version, parties[i], signer);
                revert AgreementSignatureInvalid(agreementId, version, parties[i], recovered);
            }
        }
    }

    /// @dev Whether `signer` signed `digest`: an ECDSA signature that recovers to `signer`, or, for a
    /// signer with code (a Safe, another ERC-1271 wallet, an EIP-7702 delegated account), one its
    /// `isValidSignature` accepts now (OpenZeppelin's `SignatureChecker.isValidERC1271SignatureNow`).
    /// ECDSA comes first, unlike `SignatureChecker.isValidSignatureNow`, which reads the signer's code
    /// first: that costs a cold EXTCODESIZE (2,600 gas) per key signer, 13,000 gas on a 5-party
    /// approval. The outcome differs only for a signer with code that also has a key: an EIP-7702
    /// delegated account, whose key's signature then counts as it did before the delegation (a Safe's
    /// address has no key). When invalid, `recovered` is the key that did sign (address(0) when
    /// malformed), or address(1) when the signer is a contract that refused it.
    function _isValidSignature(address signer, bytes32 digest, bytes calldata signature)
        private
        view
        returns (bool valid, address recovered)
    {
        recovered = _recover(digest, signature);
        if (recovered == signer) return (true, recovered);
        if (signer.code.length == 0) return (false, recovered);
        if (SignatureChecker.isValidERC1271SignatureNow(signer, digest, signature)) return (true, signer);
        return (false, address(1));
    }

    /// @dev ECDSA recovery that maps every malformed signature to address(0) instead of reverting, so
    /// the caller reports which party's signature is wrong. Signers are never address(0).
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address recovered) {
        // slither unused-return (accepted in scripts/lint.sh): the error is dropped on purpose, a malformed
        // signature recovers to address(0), which is never a signer.
        (recovered,,) = ECDSA.tryRecover(digest, signature);
    }

    /// @dev The terms rules (the Python layer mirrors them in one module).
    function _validateTerms(bytes32 agreementId, Terms calldata terms) private {
        if (terms.token == address(0)) revert LedgerZeroAddress("token");
        uint32[] calldata parties = terms.parties;
        uint256 n = parties.length;
        if (n < MIN_PARTIES || n > MAX_PARTIES) revert AgreementPartyCount(n, MIN_PARTIES, MAX_PARTIES);
        if (terms.shares.length != n) revert AgreementTableLength(n, terms.shares.length);
        uint256 sum = _sumOf(terms.shares);
        if (sum != SplitMath.BPS) revert AgreementSharesSum(false, sum);
        _validateBands(terms.bands, n);
        uint128 recoup = terms.recoup;
        uint256 recoupLength = terms.recoupShares.length;
        if (recoup > type(uint120).max || (recoup == 0 ? recoupLength != 0 : recoupLength != n)) {
            revert AgreementRecoupInvalid(recoup, recoupLength);
        }
        if (recoup != 0) {
            sum = _sumOf(terms.recoupShares);
            if (sum != SplitMath.BPS) revert AgreementRecoupSharesSum(sum);
        }
        uint32 previous; // slither uninitialized-local (accepted): starts at 0, below every ME id
        for (uint256 i; i < n; ++i) {
            uint32 meId = parties[i];
            if (meId == previous) revert AgreementDuplicateParty(meId);
            if (meId < previous) revert AgreementPartiesUnordered(previous, meId);
            previous = meId;
            MEStatus status = _mes[meId].status;
            if (status == MEStatus.None) revert MEUnknown(meId);
            if (status != MEStatus.Active) revert MENotActive(meId, status);
        }
        uint256 nested = terms.nested.length;
        if (nested != 0) {
            if (nested != n) revert AgreementNestedLength(n, nested);
            _delegateCall(abi.encodeCall(AllianceLedgerShapes.checkNesting, (agreementId, terms, false)));
        }
    }

    function _validateBands(Band[] calldata bands, uint256 n) private pure {
        uint256 k = bands.length;
        if (k > MAX_BANDS) revert AgreementBandCount(k, MAX_BANDS);
        uint128 previous; // slither uninitialized-local (accepted): band 1's target must be above 0
        for (uint256 j; j < k; ++j) {
            Band calldata band = bands[j];
            uint128 target = band.target;
            if (target <= previous) revert AgreementBandTarget(j + 1, previous, target);
            previous = target;
            if (band.shares.length != n) revert AgreementBandTableLength(j + 1, n, band.shares.length);
            uint256 sum = _sumOf(band.shares);
            if (sum != SplitMath.BPS) revert AgreementBandSharesSum(j + 1, sum);
        }
    }

    function _sumOf(uint16[] calldata shares) private pure returns (uint256 sum) {
        for (uint256 i; i < shares.length; ++i) {
            sum += shares[i];
        }
    }

    /// @dev The version whose parties speak for an existing agreement: the one in force, or the latest
    /// proposal while none was ever activated.
    function _currentVersion(Agreement storage agreement, AgreementStatus status) private view returns (uint32) {
        return status == AgreementStatus.Active ? agreement.activeVersion : agreement.latestVersion;
    }

    /// @dev A caller without the platform role may propose a new agreement only as a signer of one of its
    /// proposed parties, and a version of an existing one only as a signer of one of its current parties
    /// (`current`, checked against the commitment of the current version).
    function _checkProposer(bytes32 agreementId, Terms calldata terms, Terms calldata current) private view {
        Agreement storage agreement = _agreements[agreementId];
        AgreementStatus status = agreement.status;
        if (status == AgreementStatus.None) {
            if (!_isPartySigner(terms.parties, msg.sender)) revert AgreementProposerNotParty(msg.sender);
            return;
        }
        if (status == AgreementStatus.Terminated) revert AgreementTerminated(agreementId);
        uint32 version = _currentVersion(agreement, status);
        _checkTerms(agreementId, version, current);
        if (!_isPartySigner(current.parties, msg.sender)) {
            revert AgreementProposerNotCurrentParty(agreementId, version, msg.sender);
        }
    }

    function _isPartySigner(uint32[] calldata parties, address account) private view returns (bool) {
        for (uint256 i; i < parties.length; ++i) {
            if (_mes[parties[i]].signer == account && account != address(0)) return true;
        }
        return false;
    }

    /// @dev Terms that settle on the classic path (today's loop and events): at most one band, no
    /// recoup, no nested party. The others go to the module.
    function _isClassic(Terms calldata terms) private pure returns (bool) {
        return terms.bands.length <= 1 && terms.recoup == 0 && terms.nested.length == 0;
    }

    /// @dev Runs this call (its calldata as is) in the settlement module, in this contract's storage, after
    /// the caller's role and reentrancy checks; returns its result or re-raises its revert data.
    function _delegateToShapes() private returns (uint256 result) {
        result = abi.decode(_delegateCall(msg.data), (uint256));
    }

    /// @dev Runs `data` in the settlement module (in this contract's storage); re-raises its revert data.
    function _delegateCall(bytes memory data) private returns (bytes memory result) {
        bool ok;
        (ok, result) = address(_shapes).delegatecall(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }

    function _newBatch(bytes32 agreementId, uint32 version, Terms calldata terms)
        private
        pure
        returns (Batch memory batch)
    {
        uint256 m = terms.parties.length - 1;
        batch.agreementId = agreementId;
        batch.version = version;
        batch.prefixBase = _prefixSums(terms.shares);
        if (terms.bands.length == 0) {
            batch.prefixExcess = batch.prefixBase;
        } else {
            Band calldata band = terms.bands[0];
            batch.target = band.target;
            batch.prefixExcess = _prefixSums(band.shares);
        }
        batch.sumsBase = new uint256[](m);
        batch.sumsExcess = new uint256[](m);
    }

    /// @dev Splits every event of the batch and credits the parties, one run of consecutive same-period
    /// events at a time (one balance write per party per run). Returns the batch total.
    function _credit(Batch memory batch, uint64 firstSeq, Terms calldata terms, uint256[] calldata entries)
        private
        returns (uint256 total)
    {
        uint256 count = entries.length;
        uint256 k;
        while (k < count) {
            uint64 seq = firstSeq + uint64(k);
            _startRun(batch, uint32(entries[k]), seq);
            k = _scanRun(batch, firstSeq, k, entries);
            total += _endRun(batch, terms, uint64(k) + firstSeq - seq);
        }
    }

    /// @dev Accumulates the events from index `k` while they stay in the current run's period; returns
    /// the index of the first event of the next run (or the batch size).
    function _scanRun(Batch memory batch, uint64 firstSeq, uint256 k, uint256[] calldata entries)
        private
        pure
        returns (uint256)
    {
        uint256 period = batch.period;
        uint256 revenue = batch.revenue;
        // Amounts are checked below 2**128 and a batch has far fewer than 2**64 events: the period's
        // revenue stays below 2**192 here (`_endRun` checks it fits 128 bits); k < 2**64.
        unchecked {
            for (; k < entries.length; ++k) {
                uint256 entry = entries[k];
                if (uint32(entry) != period) break;
                uint256 amount = entry >> 32;
                if (amount == 0 || amount > type(uint128).max) {
                    revert RevenueAmountInvalid(batch.agreementId, firstSeq + uint64(k), amount);
                }
                _addEvent(batch, amount, SplitMath.offsetOf(firstSeq + k), revenue);
                revenue += amount;
            }
        }
        batch.revenue = revenue;
        return k;
    }

    /// @dev Splits one event at the period target and accumulates both parts.
    function _addEvent(Batch memory batch, uint256 amount, uint256 offset, uint256 revenue) private pure {
        (uint256 below, uint256 above) = SplitMath.tierParts(revenue, amount, batch.target);
        // The run's parts sum to less than 2**192 (see `_scanRun`).
        unchecked {
            if (below != 0) {
                SplitMath.accumulate(below, offset, batch.prefixBase, batch.sumsBase);
                batch.runBase += below;
            }
            if (above != 0) {
                SplitMath.accumulate(above, offset, batch.prefixExcess, batch.sumsExcess);
                batch.runExcess += above;
            }
        }
    }

    /// @dev Starts a run for `period` at `seq`: checks the period and loads its revenue so far.
    function _startRun(Batch memory batch, uint32 period, uint64 seq) private view {
        if (period == 0) revert PeriodInvalid(batch.agreementId, seq);
        Period storage p = _periods[batch.agreementId][period];
        (uint256 revenue, bool closed, uint256 recouped) = (p.revenue, p.closed, p.recouped);
        if (closed) revert PeriodAlreadyClosed(batch.agreementId, period);
        batch.period = period;
        batch.runFirstSeq = seq;
        // The recouped part of a period (from an earlier version with a recoup) does not count toward
        // its bands; it is at most the period's revenue.
        unchecked {
            batch.revenue = revenue - recouped;
        }
        batch.recouped = recouped;
    }

    /// @dev Books a run of `count` events: the period's revenue, each party's balance, the
    /// `PartiesCredited` event. A party with a debt repays it from the credit first (`DebtNetted`).
    /// Returns the run's total and clears the run's sums.
    function _endRun(Batch memory batch, Terms calldata terms, uint64 count) private returns (uint256 runTotal) {
        bytes32 agreementId = batch.agreementId;
        // Banded revenue below 2**192 plus a recouped part below 2**120 (see `_scanRun`).
        uint256 revenue;
        unchecked {
            revenue = batch.revenue + batch.recouped;
        }
        if (revenue > type(uint128).max) revert RevenueAmountInvalid(agreementId, batch.runFirstSeq, revenue);
        _periods[agreementId][batch.period].revenue = uint128(revenue);

        uint256[] memory base = SplitMath.creditsOf(batch.sumsBase, batch.runBase);
        uint256[] memory excess = SplitMath.creditsOf(batch.sumsExcess, batch.runExcess);
        address token = terms.token;
        uint32[] calldata parties = terms.parties;
        for (uint256 i; i < parties.length; ++i) {
            uint256 credit = base[i] + excess[i];
            if (credit != 0) batch.netted += _creditAccount(parties[i], token, credit);
        }
        emit PartiesCredited(agreementId, batch.period, batch.version, batch.runFirstSeq, count, base, excess);
        runTotal = batch.runBase + batch.runExcess;
        batch.runBase = 0;
        batch.runExcess = 0;
    }

}
