// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {AllianceLedger} from "../../contracts/AllianceLedger.sol";
import {IAllianceLedger} from "../../contracts/interfaces/IAllianceLedger.sol";
import {BlocklistToken} from "../../contracts/test/BlocklistToken.sol";
import {FeeOnTransferToken} from "../../contracts/test/FeeOnTransferToken.sol";
import {LedgerTestToken} from "../../contracts/tokens/LedgerTestToken.sol";
import {bound, vm} from "../base/Test.sol";
import {ERC1271Signer} from "../mocks/ERC1271Signer.sol";
import {SplitReference} from "../reference/SplitReference.sol";

/// @title LedgerHandler
/// @notice The actor forge's invariant fuzzer drives: every external non-view function here is one
/// action (forge calls them in random order with random arguments). Each action plays a role with
/// `vm.prank`, predicts from the ghost state whether the ledger must accept or refuse the call (and with
/// which error, and what it returns), makes it, and books the outcome in the ghost state the invariants
/// compare the ledger with.
///
/// Adding an action: write an `act*` function with the `action` modifier that bounds its seeds, calls
/// the ledger through try/catch, calls `_violation` when the outcome contradicts the prediction and
/// updates the ghosts on success. Nothing else needs registering (the invariant test targets every
/// action of this contract). Terms are built in one place, `_newTerms`.
///
/// Ghost state, kept by the handler independently of the ledger:
/// - per ME: its signer (a key, or an ERC-1271 contract owned by a key, which can be revoked), payout
///   (which the blocklist token may block) and status;
/// - per ME and token: what the reference split (SplitReference, one event at a time) credited and
///   debited (reversals), what the payout received (withdrawals and payout runs), and the documented
///   rounding bounds (the sums of floor(part * share / 10,000) and the parts with a non-zero share, for
///   credits and debits apart). The ledger's balance and debt follow: credited - debited - received,
///   as a balance when positive and a debt when negative;
/// - per agreement: status, latest and active versions with their terms, the sequence cursor, each
///   period's revenue and whether it is closed; per (agreement, reference) how often it was credited,
///   and for each settled event how much of it was reversed (never more than its amount: the client's
///   rule, which the handler keeps as finance's client does);
/// - per token: tokens sent to the ledger without settlement (donations);
/// - `violations`: calls whose outcome contradicted the prediction (an unauthorised call that went
///   through, a retried batch accepted, a valid call refused), with the first one described.
contract LedgerHandler {
    uint256 internal constant BPS = 10_000;
    uint256 public constant MAX_MES = 12;
    uint256 public constant MAX_AGREEMENTS = 6;
    uint32 public constant PERIODS = 4;
    uint256 public constant MAX_BATCH = 6;

    AllianceLedger public immutable ledger;
    address public immutable admin;
    address public immutable platform;
    address public immutable finance;
    address public immutable attacker;
    // tokens[0]: a plain ERC-20; tokens[1]: one that blocks addresses (payout runs skip them);
    // tokens[2]: one that takes a fee on transfer.
    address[] public tokens;
    address public immutable blockToken;
    address public immutable feeToken;

    // -- MEs ------------------------------------------------------------------------------------------
    uint32 public meCount;
    mapping(uint32 meId => uint256) public signerKey; // the key, or the contract signer's owner key
    mapping(uint32 meId => address) public payoutOf;
    mapping(uint32 meId => address) public signerOf;
    mapping(uint32 meId => bool) public contractSigner; // signerOf is an ERC1271Signer
    mapping(uint32 meId => bool) public dissolved;
    mapping(address signer => bool) public revoked; // an ERC1271Signer that refuses everything
    mapping(address payout => bool) public blocked; // by the blocklist token
    address[] internal _signerContracts;
    uint256 private _keys; // keys handed out so far (signers and payouts get fresh keys)
    // The last consent accepted, for the replay action.
    uint32 private _lastConsentMe;
    address private _lastConsentPayout;
    address private _lastConsentSigner;
    bytes private _lastConsent;

    // -- agreements -----------------------------------------------------------------------------------
    struct GhostAgreement {
        address token;
        IAllianceLedger.AgreementStatus status;
        uint32 latest;
        uint32 active;
        uint64 cursor;
    }

    bytes32[] public agreementIds;
    mapping(bytes32 id => GhostAgreement) internal _agreements;
    /// @dev abi.encode(terms) per version (legacy codegen cannot copy Band[] from memory to storage).
    mapping(bytes32 id => mapping(uint32 version => bytes)) internal _termsData;
    mapping(bytes32 id => mapping(uint32 period => uint256)) public periodRevenue;
    mapping(bytes32 id => mapping(uint32 period => bool)) public periodClosed;
    mapping(bytes32 id => mapping(bytes32 ref => uint256)) public creditedTimes;
    uint256 public maxCreditedTimes;
    uint256 private _refs; // references handed out so far
    // Settled revenue events (reversible originals) and how much of each was reversed.
    mapping(bytes32 id => bytes32[]) internal _originals;
    mapping(bytes32 id => mapping(bytes32 ref => uint256)) public settledAmount;
    mapping(bytes32 id => mapping(bytes32 ref => uint256)) public reversedAmount;

    // The last batch the ledger accepted, for the retry action.
    bytes32 private _lastId;
    uint32 private _lastVersion;
    uint64 private _lastFirstSeq;
    bytes32[] private _lastRefs;
    uint256[] private _lastEntries;
    bytes32[] private _lastOriginals; // empty for revenue, the originals for reversals

    // -- money ----------------------------------------------------------------------------------------
    mapping(uint32 meId => mapping(address token => uint256)) public credited; // by the reference split
    mapping(uint32 meId => mapping(address token => uint256)) public debited; // by the reference reversal split
    mapping(uint32 meId => mapping(address token => uint256)) public received; // by payouts
    mapping(uint32 meId => mapping(address token => uint256)) public floorSum; // sum of floor(part*share/BPS)
    mapping(uint32 meId => mapping(address token => uint256)) public parts; // parts with a non-zero share
    mapping(uint32 meId => mapping(address token => uint256)) public debitFloorSum; // the same for debits
    mapping(uint32 meId => mapping(address token => uint256)) public debitParts;
    mapping(address token => uint256) public donated;

    /// @dev What a batch does to the ghosts, computed before the call (to predict its outcome) and booked
    /// after it succeeds: per party the reference amounts, floors and non-zero-share parts; per period
    /// (1..PERIODS) the revenue after it.
    struct Booking {
        uint256[] amounts;
        uint256[] floors;
        uint256[] parts;
        uint256[] revenue;
        uint256 expected; // what the call returns: the total less the debts netted or incurred
    }

    // -- outcomes -------------------------------------------------------------------------------------
    uint256 public calls; // actions called so far in this sequence
    uint256 public violations;
    string public firstViolation;
    mapping(string action => uint256) public accepted; // successful calls per action, for the summary

    constructor() {
        admin = vm.addr(0xA11CE);
        platform = vm.addr(0xB0B);
        finance = vm.addr(0xF1);
        attacker = vm.addr(0xBAD);
        ledger = new AllianceLedger(admin, platform, finance);
        tokens.push(address(new LedgerTestToken("Six", "SIX", 6, address(this), address(this))));
        blockToken = address(new BlocklistToken());
        tokens.push(blockToken);
        feeToken = address(new FeeOnTransferToken());
        tokens.push(feeToken);
        for (uint256 t; t < tokens.length; ++t) {
            vm.prank(finance);
            LedgerTestToken(tokens[t]).approve(address(ledger), type(uint256).max);
            // The attacker holds tokens and has approved the ledger: only the role stands in the way.
            _mint(tokens[t], attacker, 1e30);
            vm.prank(attacker);
            LedgerTestToken(tokens[t]).approve(address(ledger), type(uint256).max);
        }
        // Six MEs; the 2nd and the 6th sign through an ERC-1271 contract.
        for (uint256 i; i < 6; ++i) {
            _register(i, 0);
        }
    }

    /// @dev Every action carries this modifier: it counts the calls (the invariant test runs the full
    /// checks every `fullCheckEvery` calls and the cheap ones every `checkEvery`).
    modifier action() {
        ++calls;
        _;
    }

    // =================================================================================================
    // Views for the invariants
    // =================================================================================================

    function tokenCount() external view returns (uint256) {
        return tokens.length;
    }

    function agreementCount() external view returns (uint256) {
        return agreementIds.length;
    }

    function agreementOf(bytes32 id) external view returns (GhostAgreement memory) {
        return _agreements[id];
    }

    // =================================================================================================
    // ME registry
    // =================================================================================================

    /// @notice Half the calls register one ME (batches register the others, up to MAX_MES).
    function actRegisterME(uint256 seed) external action {
        if (meCount >= MAX_MES || (seed >> 128) % 2 == 0) return;
        _register(seed, seed >> 8);
    }

    /// @notice 1-3 MEs in one `registerMEs` call. One batch in six reuses a registered name, one repeats a
    /// name inside the batch, one has arrays of different lengths: each must be refused with its error,
    /// and nothing of it registered.
    function actRegisterMEs(uint256 countSeed, uint256 seed) external action {
        uint256 n = bound(countSeed, 1, 3);
        if (meCount + n > MAX_MES) return;
        uint256 kind = (countSeed >> 8) % 6;
        if (kind == 1 && n == 1) kind = 3;
        string[] memory names = new string[](n);
        address[] memory payouts = new address[](n);
        address[] memory signers = new address[](n);
        uint32[] memory parents = new uint32[](kind == 2 ? n + 1 : n);
        uint256[] memory keys = new uint256[](n);
        bool[] memory isContract = new bool[](n);
        for (uint256 j; j < n; ++j) {
            names[j] = string.concat("me-", vm.toString(uint256(meCount) + 1 + j));
            payouts[j] = vm.addr(_newKey());
            isContract[j] = uint256(keccak256(abi.encode(seed, j))) % 4 == 0;
            (keys[j], signers[j]) = _newSigner(isContract[j]);
            parents[j] = (seed >> j) % 3 == 0 ? uint32(bound(seed >> 16, 1, meCount)) : 0;
        }
        bytes memory expected;
        if (kind == 0) {
            names[n - 1] = "me-1";
            expected = abi.encodeWithSelector(IAllianceLedger.MENameTaken.selector, names[n - 1], uint32(1));
        } else if (kind == 1) {
            names[n - 1] = names[0];
            expected = abi.encodeWithSelector(IAllianceLedger.MENameTaken.selector, names[0], meCount + 1);
        } else if (kind == 2) {
            expected = abi.encodeWithSelector(IAllianceLedger.MEBatchInvalid.selector, n, n, n, n + 1);
        }
        vm.prank(platform);
        try ledger.registerMEs(names, payouts, signers, parents) returns (uint32 firstId) {
            if (expected.length != 0) return _violation("registerMEs accepted a taken name or arrays of different lengths");
            if (firstId != meCount + 1) return _violation("registerMEs returned another first id");
            for (uint256 j; j < n; ++j) {
                _bookME(uint32(firstId + j), keys[j], signers[j], isContract[j], payouts[j]);
            }
            accepted["registerMEs"]++;
        } catch (bytes memory err) {
            if (expected.length == 0) return _unexpected("registerMEs", err);
            if (keccak256(err) != keccak256(expected)) {
                _violation(string.concat("registerMEs refused with another error: ", _selector(err)));
            }
            if (ledger.meCount() != meCount) _violation("registerMEs was half-applied");
        }
    }

    /// @notice A new payout (and, two times in three, a new signer: a contract one time in four) with the
    /// current signer's EIP-712 consent; a quarter of the time the consent is signed by someone else and
    /// must be refused, as must every consent of a revoked contract signer.
    function actUpdateME(uint256 meSeed, uint256 forgeSeed) external action {
        uint32 meId = uint32(bound(meSeed, 1, meCount));
        // A third of the updates keep the signer (a new payout only): replaying such a consent is refused
        // only because its nonce is spent.
        bool keep = (forgeSeed >> 8) % 3 == 0;
        bool newIsContract = keep ? contractSigner[meId] : (forgeSeed >> 16) % 4 == 0;
        (uint256 newKey, address newSigner) = keep ? (signerKey[meId], signerOf[meId]) : _newSigner(newIsContract);
        address newPayout = vm.addr(_newKey());
        IAllianceLedger.ME memory me = ledger.meOf(meId);
        bool forged = forgeSeed % 4 == 0;
        uint256 key = forged ? _newKey() : signerKey[meId];
        bytes memory consent = _sign(key, ledger.meUpdateDigest(meId, newPayout, newSigner, me.nonce));
        bool mustFail = forged || _refuses(meId);
        vm.prank(platform);
        try ledger.updateME(meId, newPayout, newSigner, consent) {
            if (mustFail) return _violation("updateME accepted a consent not signed by the ME's signer");
            _bookME(meId, newKey, newSigner, newIsContract, newPayout);
            (_lastConsentMe, _lastConsentPayout, _lastConsentSigner, _lastConsent) =
                (meId, newPayout, newSigner, consent);
            accepted["updateME"]++;
        } catch (bytes memory err) {
            if (!mustFail) return _unexpected("updateME", err);
            _expectError("updateME forged or revoked", err, _consentError(meId));
        }
    }

    /// @notice The last accepted consent submitted again: its nonce is spent.
    function actReplayConsent() external action {
        if (_lastConsentMe == 0) return;
        vm.prank(platform);
        try ledger.updateME(_lastConsentMe, _lastConsentPayout, _lastConsentSigner, _lastConsent) {
            _violation("updateME accepted a replayed consent");
        } catch (bytes memory err) {
            _expectError("updateME replay", err, _consentError(_lastConsentMe));
        }
    }

    /// @notice A contract signer revoked (a third of the time) or restored: while revoked, every approval,
    /// termination and consent through it must be refused (`...Refused`).
    function actRevokeSigner(uint256 seed) external action {
        if (_signerContracts.length == 0) return;
        address signer = _signerContracts[seed % _signerContracts.length];
        bool on = (seed >> 128) % 3 == 0;
        ERC1271Signer(signer).setRevoked(on);
        revoked[signer] = on;
    }

    /// @notice One call in four dissolves an ME (keeping at least three active, enough to form
    /// agreements): a dissolved party stops its agreements' settlement for good.
    function actDissolveME(uint256 meSeed) external action {
        if (meSeed % 4 != 0 || _activeMEs().length <= 3) return;
        meSeed >>= 2;
        uint32 meId = uint32(bound(meSeed, 1, meCount));
        vm.prank(platform);
        try ledger.dissolveME(meId) {
            if (dissolved[meId]) return _violation("dissolveME dissolved an ME twice");
            dissolved[meId] = true;
            accepted["dissolveME"]++;
        } catch (bytes memory err) {
            if (!dissolved[meId]) return _unexpected("dissolveME", err);
            _expectError("dissolveME twice", err, IAllianceLedger.MENotActive.selector);
        }
    }

    // =================================================================================================
    // Agreements
    // =================================================================================================

    /// @notice A new agreement: created in one call, or proposed by the platform and activated.
    function actCreateAgreement(uint256 seed) external action {
        if (agreementIds.length >= MAX_AGREEMENTS) return;
        bytes32 id = _freshId(0);
        IAllianceLedger.Terms memory terms = _newTerms(seed, tokens[seed % tokens.length]);
        if (terms.parties.length == 0) return;
        agreementIds.push(id);
        GhostAgreement storage ghost = _agreements[id];
        if (seed & 0x100 == 0) {
            bytes[] memory sigs = _approvals(id, 1, terms, type(uint256).max);
            bytes4 expected = _signatureError(terms.parties, type(uint256).max, true);
            vm.prank(finance); // anyone may submit: the signatures are the authorisation
            try ledger.createAgreement(id, terms, sigs) {
                if (expected != bytes4(0)) return _violation("createAgreement accepted a revoked contract signer");
                (ghost.token, ghost.status, ghost.latest, ghost.active) =
                    (terms.token, IAllianceLedger.AgreementStatus.Active, 1, 1);
                _setTerms(id, 1, terms);
                accepted["createAgreement"]++;
            } catch (bytes memory err) {
                agreementIds.pop();
                if (expected == bytes4(0)) return _unexpected("createAgreement", err);
                _expectError("createAgreement revoked", err, expected);
            }
        } else {
            vm.prank(platform);
            try ledger.proposeAgreement(id, terms, _noTerms()) returns (uint32 version) {
                if (version != 1) return _violation("the first proposal was not version 1");
                (ghost.token, ghost.status, ghost.latest) = (terms.token, IAllianceLedger.AgreementStatus.Proposed, 1);
                _setTerms(id, 1, terms);
                accepted["proposeAgreement"]++;
            } catch (bytes memory err) {
                agreementIds.pop();
                _unexpected("proposeAgreement", err);
            }
        }
    }

    /// @notice 1-3 proposals in one `proposeAgreements` call by the platform: new agreements, and one
    /// batch in six ends with an amendment of an existing one. One in six has arrays of different
    /// lengths, one names a terminated agreement, one changes an agreement's token: each must be refused
    /// with its error and nothing of it recorded.
    function actProposeAgreements(uint256 countSeed, uint256 seed) external action {
        uint256 n = bound(countSeed, 1, 3);
        uint256 kind = (countSeed >> 8) % 6;
        (bytes32 existing, GhostAgreement storage other) = _pick(seed >> 32);
        bool terminated = other.status == IAllianceLedger.AgreementStatus.Terminated;
        // kinds 1-3 need an existing agreement (terminated for 1, live for 2 and 3)
        if (kind >= 1 && kind <= 3 && (existing == bytes32(0) || terminated != (kind == 1))) kind = 4;
        uint256 fresh = kind >= 1 && kind <= 3 ? n - 1 : n;
        if (agreementIds.length + fresh > MAX_AGREEMENTS) return;
        bytes32[] memory ids = new bytes32[](n);
        IAllianceLedger.Terms[] memory terms = new IAllianceLedger.Terms[](kind == 0 ? n + 1 : n);
        for (uint256 j; j < terms.length; ++j) {
            uint256 termsSeed = uint256(keccak256(abi.encode(seed, j)));
            address token = tokens[termsSeed % tokens.length];
            if (j == n - 1 && kind >= 1 && kind <= 3) {
                ids[j] = existing;
                token = kind == 2 ? _otherToken(other.token) : other.token;
            } else if (j < n) {
                ids[j] = _freshId(j);
            }
            terms[j] = _newTerms(termsSeed, token);
            if (terms[j].parties.length == 0) return;
        }
        bytes memory expected;
        if (kind == 0) {
            expected = abi.encodeWithSelector(IAllianceLedger.AgreementBatchInvalid.selector, n, n + 1);
        } else if (kind == 1) {
            expected = abi.encodeWithSelector(IAllianceLedger.AgreementTerminated.selector, existing);
        } else if (kind == 2) {
            expected = abi.encodeWithSelector(IAllianceLedger.AgreementTokenChanged.selector, other.token, terms[n - 1].token);
        }
        vm.prank(platform);
        try ledger.proposeAgreements(ids, terms) {
            if (expected.length != 0) {
                return _violation("proposeAgreements accepted a terminated agreement, another token or arrays of different lengths");
            }
            for (uint256 j; j < n; ++j) {
                GhostAgreement storage ghost = _agreements[ids[j]];
                if (ghost.status == IAllianceLedger.AgreementStatus.None) {
                    agreementIds.push(ids[j]);
                    (ghost.token, ghost.status) = (terms[j].token, IAllianceLedger.AgreementStatus.Proposed);
                }
                ghost.latest += 1;
                _setTerms(ids[j], ghost.latest, terms[j]);
            }
            accepted["proposeAgreements"]++;
        } catch (bytes memory err) {
            if (expected.length == 0) return _unexpected("proposeAgreements", err);
            if (keccak256(err) != keccak256(expected)) {
                _violation(string.concat("proposeAgreements refused with another error: ", _selector(err)));
            }
            if (ledger.agreementOf(ids[0]).latestVersion != _agreements[ids[0]].latest) {
                _violation("proposeAgreements was half-applied");
            }
        }
    }

    /// @notice An amendment (a new version) proposed by the platform role; a tenth of the time with
    /// another token, which must be refused.
    function actProposeAmendment(uint256 agreementSeed, uint256 seed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0)) return;
        bool otherToken = seed % 10 == 0;
        address token = otherToken ? _otherToken(ghost.token) : ghost.token;
        IAllianceLedger.Terms memory terms = _newTerms(seed, token);
        if (terms.parties.length == 0) return;
        bool mustFail = otherToken || ghost.status == IAllianceLedger.AgreementStatus.Terminated;
        vm.prank(platform);
        try ledger.proposeAgreement(id, terms, _noTerms()) returns (uint32 version) {
            if (mustFail) return _violation("proposeAgreement amended a terminated agreement or changed its token");
            if (version != ghost.latest + 1) return _violation("an amendment skipped a version number");
            ghost.latest = version;
            _setTerms(id, version, terms);
            accepted["proposeAmendment"]++;
        } catch (bytes memory err) {
            if (!mustFail) return _unexpected("proposeAmendment", err);
        }
    }

    /// @notice The latest proposed version activated with every party's approval; with `forgeSeed`
    /// odd, one party's approval is signed by a stranger and the activation must be refused (as it must
    /// when a party is dissolved or signs through a revoked contract).
    function actActivateLatest(uint256 agreementSeed, uint256 forgeSeed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0) || ghost.latest == ghost.active) return;
        uint32 version = ghost.latest;
        IAllianceLedger.Terms memory terms = _termsOf(id, version);
        uint256 forgedIndex = forgeSeed % 2 == 1 ? (forgeSeed >> 1) % terms.parties.length : type(uint256).max;
        bytes[] memory sigs = _approvals(id, version, terms, forgedIndex);
        bool terminated = ghost.status == IAllianceLedger.AgreementStatus.Terminated;
        bytes4 expected = terminated
            ? IAllianceLedger.AgreementTerminated.selector
            : _signatureError(terms.parties, forgedIndex, true);
        vm.prank(finance);
        try ledger.activateAgreement(id, version, terms, sigs) {
            if (expected != bytes4(0)) {
                return _violation("activateAgreement accepted a forged or revoked approval or a dissolved party");
            }
            ghost.status = IAllianceLedger.AgreementStatus.Active;
            ghost.active = version;
            accepted["activateAgreement"]++;
        } catch (bytes memory err) {
            if (expected == bytes4(0)) return _unexpected("activateAgreement", err);
            _expectError("activate forged, revoked or dissolved", err, expected);
        }
    }

    /// @notice Every party of the version in force signs the termination (one call in four; a forged
    /// signature otherwise half the time, which must be refused, as a revoked contract signer's is).
    function actTerminate(uint256 agreementSeed, uint256 seed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0) || ghost.status == IAllianceLedger.AgreementStatus.Terminated) return;
        bool forged = seed % 4 != 0;
        if (forged && seed % 8 < 4) return;
        uint32 version = ghost.status == IAllianceLedger.AgreementStatus.Active ? ghost.active : ghost.latest;
        IAllianceLedger.Terms memory terms = _termsOf(id, version);
        bytes32 digest = ledger.terminationDigest(id, version);
        bytes[] memory sigs = new bytes[](terms.parties.length);
        uint256 forgedIndex = forged ? (seed >> 8) % terms.parties.length : type(uint256).max;
        for (uint256 i; i < sigs.length; ++i) {
            sigs[i] = _sign(i == forgedIndex ? _newKey() : signerKey[terms.parties[i]], digest);
        }
        bytes4 expected = _signatureError(terms.parties, forgedIndex, false);
        vm.prank(finance);
        try ledger.terminateAgreement(id, terms, sigs) {
            if (expected != bytes4(0)) return _violation("terminateAgreement accepted a forged or revoked signature");
            ghost.status = IAllianceLedger.AgreementStatus.Terminated;
            accepted["terminateAgreement"]++;
        } catch (bytes memory err) {
            if (expected == bytes4(0)) return _unexpected("terminateAgreement", err);
            _expectError("terminate forged or revoked", err, expected);
        }
    }

    // =================================================================================================
    // Settlement
    // =================================================================================================

    /// @notice A batch of 1..6 events at the cursor, over random periods (closed ones included) and
    /// amounts from 1 unit to 2**96. Refused exactly when the agreement is not active, a party is
    /// dissolved, a period is closed, or the token delivers less than the amount pulled.
    function actSettle(uint256 agreementSeed, uint256 countSeed, uint256 amountSeed, uint256 periodSeed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pickLive(agreementSeed);
        if (id == bytes32(0)) return;
        uint256 count = bound(countSeed, 1, MAX_BATCH);
        bytes32[] memory refs = new bytes32[](count);
        uint256[] memory entries = new uint256[](count);
        uint256 total;
        bool closed;
        for (uint256 k; k < count; ++k) {
            uint256 amount = _amount(uint256(keccak256(abi.encode(amountSeed, k))));
            uint32 period = _period(id, uint256(keccak256(abi.encode(periodSeed, k))));
            refs[k] = _newRef();
            entries[k] = amount << 32 | period;
            total += amount;
            closed = closed || periodClosed[id][period];
        }
        _settle(id, ghost, refs, entries, new bytes32[](0), total, closed);
    }

    /// @notice A batch of 1..3 reversals at the cursor, each of a settled event of the agreement, for
    /// all that is left of it or a part (several reversals of one event never exceed it together), booked
    /// in a random period (closed ones included). The parties are debited by the reversal split; what
    /// their balances do not cover becomes their debt.
    function actSettleReversals(uint256 agreementSeed, uint256 countSeed, uint256 amountSeed, uint256 periodSeed)
        external
        action
    {
        (bytes32 id, GhostAgreement storage ghost) = _pickLive(agreementSeed);
        if (id == bytes32(0) || _originals[id].length == 0) return;
        (bytes32[] memory refs, uint256[] memory entries, bytes32[] memory originals, uint256 total, bool closed) =
            _reversals(id, bound(countSeed, 1, 3), amountSeed, periodSeed);
        if (refs.length == 0) return;
        _settle(id, ghost, refs, entries, originals, total, closed);
    }

    /// @dev Up to `count` reversals of the agreement's settled events (fewer when an event is reversed in
    /// full already).
    function _reversals(bytes32 id, uint256 count, uint256 amountSeed, uint256 periodSeed)
        internal
        returns (bytes32[] memory refs, uint256[] memory entries, bytes32[] memory originals, uint256 total, bool closed)
    {
        refs = new bytes32[](count);
        entries = new uint256[](count);
        originals = new bytes32[](count);
        uint256 made;
        for (uint256 k; k < count; ++k) {
            (bytes32 original, uint256 amount) =
                _reversalOf(id, originals, entries, made, uint256(keccak256(abi.encode(amountSeed, k))));
            if (amount == 0) continue;
            uint32 period = _period(id, uint256(keccak256(abi.encode(periodSeed, k))));
            refs[made] = _newRef();
            entries[made] = amount << 32 | period;
            originals[made] = original;
            ++made;
            total += amount;
            closed = closed || periodClosed[id][period];
        }
        assembly ("memory-safe") {
            mstore(refs, made)
            mstore(entries, made)
            mstore(originals, made)
        }
    }

    /// @dev A settled event to reverse and how much: all that is left of it (counting the reversals
    /// already in this batch) half the time, a part otherwise; 0 when nothing is left.
    function _reversalOf(bytes32 id, bytes32[] memory originals, uint256[] memory entries, uint256 made, uint256 r)
        internal
        view
        returns (bytes32 original, uint256 amount)
    {
        original = _originals[id][r % _originals[id].length];
        uint256 left = settledAmount[id][original] - reversedAmount[id][original];
        for (uint256 j; j < made; ++j) {
            if (originals[j] == original) left -= entries[j] >> 32;
        }
        if (left == 0) return (original, 0);
        amount = (r >> 64) % 2 == 0 ? left : bound(r >> 65, 1, left);
    }

    /// @notice The last accepted batch (revenue or reversals) submitted again (a client retrying after a
    /// lost reply): the cursor has moved, so it must be refused.
    function actRetryLastBatch() external action {
        if (_lastRefs.length == 0) return;
        IAllianceLedger.Terms memory terms = _termsOf(_lastId, _lastVersion);
        _fund(terms.token, _sum(_lastEntries));
        bool ok;
        bytes memory err;
        vm.prank(finance);
        if (_lastOriginals.length == 0) {
            try ledger.settle(_lastId, _lastVersion, _lastFirstSeq, terms, _lastRefs, _lastEntries) {
                ok = true;
            } catch (bytes memory e) {
                err = e;
            }
        } else {
            try ledger.settleReversals(_lastId, _lastVersion, _lastFirstSeq, terms, _lastRefs, _lastEntries, _lastOriginals) {
                ok = true;
            } catch (bytes memory e) {
                err = e;
            }
        }
        if (ok) {
            for (uint256 k; k < _lastRefs.length; ++k) {
                _countCredit(_lastId, _lastRefs[k]);
            }
            return _violation("a retried batch was settled again");
        }
        GhostAgreement storage ghost = _agreements[_lastId];
        if (ghost.active != _lastVersion || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
        _expectError("retry", err, IAllianceLedger.SettlementOutOfSequence.selector);
    }

    /// @notice A batch (revenue or, half the time, a reversal) built from a stale (or future) cursor, as a
    /// second client that read the cursor before the first one settled: it must be refused.
    function actSettleStaleCursor(uint256 agreementSeed, uint256 deltaSeed, uint256 amountSeed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0) || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
        uint64 cursor = ghost.cursor;
        uint64 firstSeq;
        if (cursor > 0 && deltaSeed % 2 == 0) {
            firstSeq = cursor - 1 - uint64(bound(deltaSeed >> 1, 0, cursor - 1));
        } else {
            firstSeq = cursor + 1 + uint64(bound(deltaSeed >> 1, 0, 1_000));
        }
        bytes32[] memory refs = new bytes32[](1);
        uint256[] memory entries = new uint256[](1);
        refs[0] = _newRef();
        uint256 amount = _amount(amountSeed);
        entries[0] = amount << 32 | 1;
        IAllianceLedger.Terms memory terms = _termsOf(id, ghost.active);
        _fund(terms.token, amount);
        bool ok;
        bytes memory err;
        vm.prank(finance);
        if (amountSeed % 2 == 0) {
            try ledger.settle(id, ghost.active, firstSeq, terms, refs, entries) {
                ok = true;
            } catch (bytes memory e) {
                err = e;
            }
        } else {
            bytes32[] memory originals = new bytes32[](1);
            originals[0] = _newRef();
            try ledger.settleReversals(id, ghost.active, firstSeq, terms, refs, entries, originals) {
                ok = true;
            } catch (bytes memory e) {
                err = e;
            }
        }
        if (ok) {
            _countCredit(id, refs[0]);
            return _violation("a batch with a stale or future cursor was settled");
        }
        _expectError("stale cursor", err, IAllianceLedger.SettlementOutOfSequence.selector);
    }

    /// @notice Malformed batches at the right cursor: each must be refused with its error.
    function actSettleMalformed(uint256 agreementSeed, uint256 kind) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0) || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
        if (_anyDissolved(_termsOf(id, ghost.active).parties)) return;
        kind = kind % 7;
        uint32 version = ghost.active;
        bytes32[] memory refs = new bytes32[](2);
        uint256[] memory entries = new uint256[](2);
        refs[0] = _newRef();
        refs[1] = _newRef();
        uint32 open = _openPeriod(id);
        if (open == 0) return;
        entries[0] = uint256(7) << 32 | open;
        entries[1] = uint256(11) << 32 | open;
        bytes4 expected;
        bytes32[] memory originals;
        if (kind == 0) {
            refs[1] = bytes32(0);
            expected = IAllianceLedger.RevenueReferenceEmpty.selector;
        } else if (kind == 1) {
            entries[1] = open; // amount 0
            expected = IAllianceLedger.RevenueAmountInvalid.selector;
        } else if (kind == 2) {
            entries[1] = uint256(5) << 32; // period 0
            expected = IAllianceLedger.PeriodInvalid.selector;
        } else if (kind == 3) {
            entries[1] = (uint256(type(uint128).max) + 1) << 32 | open;
            expected = IAllianceLedger.RevenueAmountInvalid.selector;
        } else if (kind == 4) {
            version = ghost.latest + 1; // a version that does not exist
            expected = IAllianceLedger.AgreementVersionNotActive.selector;
        } else if (kind == 5) {
            originals = new bytes32[](1); // a reversal batch with fewer originals than reversals
            expected = IAllianceLedger.ReversalBatchInvalid.selector;
        } else {
            originals = new bytes32[](2); // a reversal that names no original
            originals[0] = _newRef();
            expected = IAllianceLedger.ReversalOriginalEmpty.selector;
        }
        IAllianceLedger.Terms memory terms = _termsOf(id, ghost.active);
        _fund(terms.token, 1e30);
        vm.prank(finance);
        if (kind < 5) {
            try ledger.settle(id, version, ghost.cursor, terms, refs, entries) {
                _violation("a malformed batch was settled");
            } catch (bytes memory err) {
                _expectError("malformed batch", err, expected);
            }
        } else {
            try ledger.settleReversals(id, version, ghost.cursor, terms, refs, entries, originals) {
                _violation("a malformed reversal batch was settled");
            } catch (bytes memory err) {
                _expectError("malformed reversal batch", err, expected);
            }
        }
    }

    function actClosePeriod(uint256 agreementSeed, uint256 periodSeed) external action {
        (bytes32 id,) = _pick(agreementSeed);
        if (id == bytes32(0)) return;
        uint32 period = uint32(bound(periodSeed, 1, PERIODS));
        vm.prank(finance);
        try ledger.closePeriod(id, period) {
            if (periodClosed[id][period]) return _violation("a closed period was closed again");
            periodClosed[id][period] = true;
            accepted["closePeriod"]++;
        } catch (bytes memory err) {
            if (!periodClosed[id][period]) return _unexpected("closePeriod", err);
            _expectError("close twice", err, IAllianceLedger.PeriodAlreadyClosed.selector);
        }
    }

    // =================================================================================================
    // Balances and payouts
    // =================================================================================================

    /// @notice An ME's payout withdraws its balance: refused when there is none, or when the blocklist
    /// token blocks the payout (the balance stays).
    function actWithdraw(uint256 meSeed, uint256 tokenSeed) external action {
        uint32 meId = uint32(bound(meSeed, 1, meCount));
        address token = tokens[tokenSeed % tokens.length];
        address payout = payoutOf[meId];
        uint256 owed = _ghostBalance(meId, token);
        bool isBlocked = token == blockToken && blocked[payout];
        uint256 before = LedgerTestToken(token).balanceOf(payout);
        vm.prank(payout);
        try ledger.withdraw(meId, token) returns (uint256 amount) {
            if (owed == 0) return _violation("withdraw paid an ME that was owed nothing");
            if (isBlocked) return _violation("withdraw paid a blocked payout");
            uint256 got = LedgerTestToken(token).balanceOf(payout) - before;
            if (amount != owed || token != feeToken && got != amount) {
                _violation("withdraw paid another amount than the ME was owed");
            }
            received[meId][token] += amount;
            accepted["withdraw"]++;
        } catch (bytes memory err) {
            if (owed == 0) return _expectError("withdraw nothing", err, IAllianceLedger.NothingToWithdraw.selector);
            if (!isBlocked) return _unexpected("withdraw", err);
            _expectError("withdraw to a blocked payout", err, BlocklistToken.BlocklistTokenBlocked.selector);
        }
    }

    /// @notice A payout run (`payout(token, meIds)`, anyone may call) over 1-4 MEs (repeats included):
    /// each listed ME with a balance is paid it, except one whose payout the token blocks, which keeps its
    /// balance (`PayoutSkipped`); a list with an unknown ME (one run in ten) is refused whole.
    function actPayoutRun(uint256 tokenSeed, uint256 idsSeed, uint256 callerSeed) external action {
        address token = tokens[tokenSeed % tokens.length];
        uint256 n = bound(idsSeed, 1, 4);
        uint32[] memory ids = new uint32[](n);
        for (uint256 j; j < n; ++j) {
            ids[j] = uint32(bound(uint256(keccak256(abi.encode(idsSeed, j))), 1, meCount));
        }
        bool unknown = (idsSeed >> 8) % 10 == 0;
        if (unknown) ids[n - 1] = meCount + 1;
        uint256[] memory pay = new uint256[](n);
        uint256[] memory before = new uint256[](n);
        uint256 expected;
        for (uint256 j; j < n && !unknown; ++j) {
            if (_listedBefore(ids, j)) continue; // its balance is zero by then
            uint256 balance = _ghostBalance(ids[j], token);
            if (balance == 0 || token == blockToken && blocked[payoutOf[ids[j]]]) continue;
            pay[j] = balance;
            expected += balance;
            before[j] = LedgerTestToken(token).balanceOf(payoutOf[ids[j]]);
        }
        address caller = callerSeed % 3 == 0 ? attacker : callerSeed % 3 == 1 ? finance : payoutOf[ids[0]];
        vm.prank(caller);
        try ledger.payout(token, ids) returns (uint256 paid) {
            if (unknown) return _violation("payout accepted an unknown ME");
            if (paid != expected) return _violation("payout paid another total than the payable balances");
            for (uint256 j; j < n; ++j) {
                if (pay[j] == 0) continue;
                uint256 got = LedgerTestToken(token).balanceOf(payoutOf[ids[j]]) - before[j];
                if (token != feeToken && got != pay[j]) _violation("payout sent another amount than the balance");
                received[ids[j]][token] += pay[j];
            }
            accepted["payout"]++;
        } catch (bytes memory err) {
            if (!unknown) return _unexpected("payout", err);
            if (keccak256(err) != keccak256(abi.encodeWithSelector(IAllianceLedger.MEUnknown.selector, meCount + 1))) {
                _violation(string.concat("payout refused an unknown ME with another error: ", _selector(err)));
            }
        }
    }

    /// @notice The blocklist token blocks (two times in three) or unblocks an ME's payout address.
    function actBlockPayout(uint256 meSeed, uint256 seed) external action {
        uint32 meId = uint32(bound(meSeed, 1, meCount));
        bool on = seed % 3 != 0;
        BlocklistToken(blockToken).setBlocked(payoutOf[meId], on);
        blocked[payoutOf[meId]] = on;
    }

    /// @notice Tokens sent straight to the ledger, outside settlement: owed to nobody.
    function actDonate(uint256 tokenSeed, uint256 amountSeed) external action {
        address token = tokens[tokenSeed % 2];
        uint256 amount = bound(amountSeed, 1, 1e24);
        _mint(token, address(this), amount);
        LedgerTestToken(token).transfer(address(ledger), amount);
        donated[token] += amount;
    }

    // =================================================================================================
    // Unauthorised calls
    // =================================================================================================

    /// @notice A caller without the needed role (the attacker, or the other role) tries one privileged
    /// call, with arguments that would otherwise succeed. Each must be refused.
    function actUnauthorised(uint256 kind, uint256 seed) external action {
        kind = kind % 13;
        bool platformCall = kind < 3 || kind == 10 || kind == 11;
        address caller = seed % 2 == 0 ? attacker : (platformCall ? finance : platform);
        uint32 meId = uint32(bound(seed >> 8, 1, meCount));
        bool ok;
        if (kind == 0) {
            vm.prank(caller);
            try ledger.registerME("intruder", caller, caller, 0) {
                ok = true;
            } catch {}
        } else if (kind == 1) {
            if (dissolved[meId]) return;
            vm.prank(caller);
            try ledger.dissolveME(meId) {
                ok = true;
            } catch {}
        } else if (kind == 2) {
            IAllianceLedger.ME memory me = ledger.meOf(meId);
            bytes memory consent = _sign(signerKey[meId], ledger.meUpdateDigest(meId, caller, caller, me.nonce));
            vm.prank(caller);
            try ledger.updateME(meId, caller, caller, consent) {
                ok = true;
            } catch {}
        } else if (kind == 3 || kind == 4 || kind == 12) {
            (bytes32 id, GhostAgreement storage ghost) = _pick(seed >> 16);
            if (id == bytes32(0) || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
            bytes32[] memory refs = new bytes32[](1);
            uint256[] memory entries = new uint256[](1);
            refs[0] = _newRef();
            uint32 open = _openPeriod(id);
            if (open == 0) return;
            entries[0] = uint256(1_000) << 32 | open;
            IAllianceLedger.Terms memory terms = _termsOf(id, ghost.active);
            vm.prank(caller);
            if (kind == 3) {
                try ledger.settle(id, ghost.active, ghost.cursor, terms, refs, entries) {
                    ok = true;
                } catch {}
            } else if (kind == 4) {
                try ledger.closePeriod(id, 1) {
                    ok = true;
                } catch {}
            } else {
                bytes32[] memory originals = new bytes32[](1);
                originals[0] = refs[0];
                try ledger.settleReversals(id, ghost.active, ghost.cursor, terms, refs, entries, originals) {
                    ok = true;
                } catch {}
            }
        } else if (kind == 5) {
            address token = tokens[seed % 2];
            if (_ghostBalance(meId, token) == 0) return;
            vm.prank(attacker);
            try ledger.withdraw(meId, token) {
                ok = true;
            } catch {}
        } else if (kind <= 8) {
            bytes32 role = kind == 6
                ? ledger.PLATFORM_ROLE()
                : kind == 7 ? ledger.FINANCE_ROLE() : ledger.DEFAULT_ADMIN_ROLE();
            vm.prank(caller);
            try IAccessControl(address(ledger)).grantRole(role, caller) {
                ok = true;
            } catch {}
        } else if (kind == 9) {
            // An amendment proposed by someone who is neither the platform nor a party's signer.
            (bytes32 id, GhostAgreement storage ghost) = _pick(seed >> 16);
            if (id == bytes32(0) || ghost.status == IAllianceLedger.AgreementStatus.Terminated) return;
            IAllianceLedger.Terms memory terms = _newTerms(seed, ghost.token);
            if (terms.parties.length == 0) return;
            // With the current version's real terms, so the refusal is the proposer rule itself.
            uint32 current = ghost.status == IAllianceLedger.AgreementStatus.Active ? ghost.active : ghost.latest;
            vm.prank(attacker);
            try ledger.proposeAgreement(id, terms, _termsOf(id, current)) {
                ok = true;
            } catch {}
        } else if (kind == 10) {
            string[] memory names = new string[](1);
            address[] memory accounts = new address[](1);
            (names[0], accounts[0]) = ("intruders", caller);
            vm.prank(caller);
            try ledger.registerMEs(names, accounts, accounts, new uint32[](1)) {
                ok = true;
            } catch {}
        } else {
            if (agreementIds.length >= MAX_AGREEMENTS) return;
            bytes32[] memory ids = new bytes32[](1);
            IAllianceLedger.Terms[] memory terms = new IAllianceLedger.Terms[](1);
            ids[0] = _freshId(0);
            terms[0] = _newTerms(seed, tokens[0]);
            if (terms[0].parties.length == 0) return;
            vm.prank(caller);
            try ledger.proposeAgreements(ids, terms) {
                ok = true;
            } catch {}
        }
        if (ok) _violation(string.concat("an unauthorised call went through, kind ", vm.toString(kind)));
    }

    // =================================================================================================
    // Invariants: checked here, where the ghosts are, so that each check costs only the ledger's reads
    // (forge runs them after every call). Each reverts with the invariant's name and both values.
    // =================================================================================================

    /// @notice Every call's outcome matched the prediction: no unauthorised call, retried batch, forged
    /// signature or dissolved party got through, and no valid call was refused.
    function checkOutcomes() external view {
        if (violations != 0) revert(string.concat("handler: ", firstViolation));
    }

    /// @notice Conservation, per token: the ledger's token balance == totalOwed + donations.
    function checkConservation() external view {
        for (uint256 t; t < tokens.length; ++t) {
            address token = tokens[t];
            _eq(LedgerTestToken(token).balanceOf(address(ledger)), ledger.totalOwed(token) + donated[token],
                "conservation: token balance == totalOwed + donations");
        }
    }

    /// @notice Conservation, per token: totalOwed == the sum of every ME's balance, totalDebt == the sum
    /// of every ME's debt, and no ME has both a balance and a debt.
    function checkOwedIsSumOfBalances() external view {
        for (uint256 t; t < tokens.length; ++t) {
            address token = tokens[t];
            uint256 sum;
            uint256 debts;
            for (uint32 meId = 1; meId <= meCount; ++meId) {
                uint256 balance = ledger.balanceOf(meId, token);
                uint256 debt = ledger.debtOf(meId, token);
                if (balance != 0 && debt != 0) revert("conservation: an ME with both a balance and a debt");
                sum += balance;
                debts += debt;
            }
            _eq(ledger.totalOwed(token), sum, "conservation: totalOwed == sum of balances");
            _eq(ledger.totalDebt(token), debts, "conservation: totalDebt == sum of debts");
        }
    }

    /// @notice No balance without settlement: each ME's balance minus its debt, plus what it was paid,
    /// is exactly what the reference split credited it minus what the reference reversal split debited
    /// it. Rounding: credits and debits each lie within the documented bound, between the sum of
    /// floor(part * share / 10,000) and that sum plus one unit per part with a non-zero share.
    function checkBalancesAndRounding() external view {
        for (uint256 t; t < tokens.length; ++t) {
            address token = tokens[t];
            for (uint32 meId = 1; meId <= meCount; ++meId) {
                uint256 balance = ledger.balanceOf(meId, token);
                uint256 debt = ledger.debtOf(meId, token);
                _eq(
                    balance + received[meId][token] + debited[meId][token],
                    credited[meId][token] + debt,
                    "no balance without settlement: balance + paid + debited == credited + debt"
                );
                // The ledger's net credits (credits - debits) within the bounds of both.
                int256 net = int256(balance + received[meId][token]) - int256(debt);
                int256 low = int256(floorSum[meId][token])
                    - int256(debitFloorSum[meId][token] + debitParts[meId][token]);
                int256 high = int256(floorSum[meId][token] + parts[meId][token]) - int256(debitFloorSum[meId][token]);
                if (net < low) revert("rounding: net credits below the floors' bound");
                if (net > high) revert("rounding: net credits above the floors' bound");
            }
        }
    }

    /// @notice Exactly-once: each agreement's cursor is where the accepted batches put it and no
    /// reference was credited twice. Status and versions match.
    function checkAgreements() external view {
        if (maxCreditedTimes > 1) _eq(maxCreditedTimes, 1, "exactly-once: a reference credited more than once");
        for (uint256 a; a < agreementIds.length; ++a) {
            bytes32 id = agreementIds[a];
            IAllianceLedger.Agreement memory onChain = ledger.agreementOf(id);
            GhostAgreement storage ghost = _agreements[id];
            _eq(onChain.nextSeq, ghost.cursor, "exactly-once: the cursor == the events settled");
            _eq(uint256(onChain.status), uint256(ghost.status), "agreement status");
            _eq(onChain.activeVersion, ghost.active, "active version");
            _eq(onChain.latestVersion, ghost.latest, "latest version");
        }
    }

    /// @notice Closed periods stay closed (and open ones open); every period's revenue is the sum of its
    /// accepted events less its reversals, so a closed period's revenue never moves.
    function checkPeriods() external view {
        for (uint256 a; a < agreementIds.length; ++a) {
            bytes32 id = agreementIds[a];
            for (uint32 p = 1; p <= PERIODS; ++p) {
                IAllianceLedger.Period memory period = ledger.periodOf(id, p);
                if (period.closed != periodClosed[id][p]) revert("closed periods stay closed (and open ones open)");
                _eq(period.revenue, periodRevenue[id][p], "period revenue == its settled events less its reversals");
            }
        }
    }

    /// @notice No role escalation: each role is held by its appointee and by no other actor.
    function checkRoles() external view {
        bytes32[3] memory roles = [bytes32(0), keccak256("PLATFORM_ROLE"), keccak256("FINANCE_ROLE")];
        address[4] memory actors = [admin, platform, finance, attacker];
        for (uint256 r; r < roles.length; ++r) {
            for (uint256 a; a < actors.length; ++a) {
                if (ledger.hasRole(roles[r], actors[a]) != (r == a)) {
                    revert(string.concat("no role escalation: role ", vm.toString(r), " actor ", vm.toString(a)));
                }
            }
        }
    }

    /// @notice The registry matches the ghosts: count, status, signer and payout of every ME.
    function checkRegistry() external view {
        _eq(ledger.meCount(), meCount, "ME count");
        for (uint32 meId = 1; meId <= meCount; ++meId) {
            IAllianceLedger.ME memory me = ledger.meOf(meId);
            IAllianceLedger.MEStatus expected =
                dissolved[meId] ? IAllianceLedger.MEStatus.Dissolved : IAllianceLedger.MEStatus.Active;
            _eq(uint256(me.status), uint256(expected), "ME status");
            if (me.signer != signerOf[meId] || me.payout != payoutOf[meId]) revert("ME signer or payout");
        }
    }

    function _eq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", vm.toString(a), " != ", vm.toString(b)));
    }

    // =================================================================================================
    // Internals
    // =================================================================================================

    /// @dev Sends a batch of revenue (`originals` empty) or reversals at the cursor and checks the
    /// outcome: refused exactly when the agreement is not active, a party is dissolved, a period is
    /// closed, or (revenue) the fee token would deliver less than the amount pulled; otherwise the
    /// returned amount is the batch total less the debts it netted (revenue) or less the debts it created
    /// (reversals), and the ghosts book the reference split.
    function _settle(
        bytes32 id,
        GhostAgreement storage ghost,
        bytes32[] memory refs,
        uint256[] memory entries,
        bytes32[] memory originals,
        uint256 total,
        bool closedPeriod
    ) internal {
        IAllianceLedger.Terms memory terms = _termsOf(id, ghost.active);
        bool mustFail = ghost.status != IAllianceLedger.AgreementStatus.Active || closedPeriod
            || _anyDissolved(terms.parties);
        Booking memory b;
        if (!mustFail) {
            b = _reference(id, terms, ghost.cursor, entries, originals.length != 0);
            b.expected = total - _debtChange(terms, b, originals.length != 0);
            // The fee token delivers 1% less than it is asked for: refused unless the fee rounds to 0.
            mustFail = originals.length == 0 && ghost.token == feeToken && b.expected / 100 != 0;
        }
        _fund(ghost.token, total);
        (bool ok, uint256 result, bytes memory err) =
            _send(id, ghost.active, ghost.cursor, terms, refs, entries, originals);
        if (!ok) {
            if (!mustFail) _unexpected(_what(originals), err);
            return;
        }
        if (mustFail) {
            return _violation(string.concat(_what(originals), " accepted a batch for an inactive agreement, a dissolved party, a closed period or short delivery"));
        }
        if (result != b.expected) {
            _violation(string.concat(_what(originals), " returned ", vm.toString(result), " where the batch less the debts netted or incurred is ", vm.toString(b.expected)));
        }
        _accept(id, ghost, terms, b, refs, entries, originals);
    }

    function _what(bytes32[] memory originals) internal pure returns (string memory) {
        return originals.length == 0 ? "settle" : "settleReversals";
    }

    /// @dev Books an accepted batch: the reference split, the references (credited once each; revenue
    /// events become reversible originals, reversals count against theirs), the cursor, the retry copy.
    function _accept(
        bytes32 id,
        GhostAgreement storage ghost,
        IAllianceLedger.Terms memory terms,
        Booking memory b,
        bytes32[] memory refs,
        uint256[] memory entries,
        bytes32[] memory originals
    ) internal {
        _book(id, terms, b, originals.length != 0);
        for (uint256 k; k < refs.length; ++k) {
            _countCredit(id, refs[k]);
            if (originals.length != 0) {
                reversedAmount[id][originals[k]] += entries[k] >> 32;
            } else {
                _originals[id].push(refs[k]);
                settledAmount[id][refs[k]] = entries[k] >> 32;
            }
        }
        uint64 firstSeq = ghost.cursor;
        ghost.cursor = firstSeq + uint64(entries.length);
        (_lastId, _lastVersion, _lastFirstSeq, _lastRefs, _lastEntries, _lastOriginals) =
            (id, ghost.active, firstSeq, refs, entries, originals);
        accepted[_what(originals)]++;
    }

    /// @dev One settlement call by finance: `settle` when `originals` is empty, `settleReversals` otherwise.
    function _send(
        bytes32 id,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms memory terms,
        bytes32[] memory refs,
        uint256[] memory entries,
        bytes32[] memory originals
    ) internal returns (bool ok, uint256 result, bytes memory err) {
        vm.prank(finance);
        if (originals.length == 0) {
            try ledger.settle(id, version, firstSeq, terms, refs, entries) returns (uint256 paidIn) {
                (ok, result) = (true, paidIn);
            } catch (bytes memory e) {
                err = e;
            }
        } else {
            try ledger.settleReversals(id, version, firstSeq, terms, refs, entries, originals) returns (uint256 back) {
                (ok, result) = (true, back);
            } catch (bytes memory e) {
                err = e;
            }
        }
    }

    /// @dev The reference split of a batch, one event at a time (SplitReference), without booking it.
    function _reference(
        bytes32 id,
        IAllianceLedger.Terms memory terms,
        uint64 firstSeq,
        uint256[] memory entries,
        bool reversal
    ) internal view returns (Booking memory b) {
        uint256 n = terms.parties.length;
        (b.amounts, b.floors, b.parts) = (new uint256[](n), new uint256[](n), new uint256[](n));
        b.revenue = new uint256[](PERIODS + 1);
        for (uint32 p = 1; p <= PERIODS; ++p) {
            b.revenue[p] = periodRevenue[id][p];
        }
        for (uint256 k; k < entries.length; ++k) {
            _referenceEvent(b, terms, firstSeq + k, entries[k], reversal);
        }
    }

    /// @dev One event (or reversal) `amount << 32 | period` at `seq` added to a booking.
    function _referenceEvent(
        Booking memory b,
        IAllianceLedger.Terms memory terms,
        uint256 seq,
        uint256 entry,
        bool reversal
    ) internal pure {
        uint256 amount = entry >> 32;
        uint32 period = uint32(entry);
        uint256 revenue = b.revenue[period];
        (uint256[] memory split, uint256 base, uint256 excess) = _referenceSplit(terms, seq, amount, revenue, reversal);
        b.revenue[period] = reversal ? revenue - (amount < revenue ? amount : revenue) : revenue + amount;
        uint16[] memory excessShares = _excessShares(terms);
        for (uint256 i; i < split.length; ++i) {
            b.amounts[i] += split[i];
            _bound(b, i, base, terms.shares[i]);
            if (excess != 0) _bound(b, i, excess, excessShares[i]);
        }
    }

    /// @dev The reference split of one event (or reversal) of one-band terms, and its two parts.
    function _referenceSplit(
        IAllianceLedger.Terms memory terms,
        uint256 seq,
        uint256 amount,
        uint256 revenue,
        bool reversal
    ) internal pure returns (uint256[] memory split, uint256 base, uint256 excess) {
        uint256 target = _target(terms);
        uint16[] memory excessShares = _excessShares(terms);
        if (reversal) {
            split = SplitReference.splitReversal(seq, amount, revenue, terms.shares, target, excessShares);
            (base, excess) = SplitReference.reversalParts(revenue, amount, target);
        } else {
            split = SplitReference.splitEvent(seq, amount, revenue, terms.shares, target, excessShares);
            (base, excess) = SplitReference.tierParts(revenue, amount, target);
        }
    }

    /// @dev The documented rounding bound of one part: floor(part * share / BPS), plus at most one unit
    /// when the share is not zero.
    function _bound(Booking memory b, uint256 i, uint256 part, uint16 share) internal pure {
        if (part == 0) return;
        b.floors[i] += part * share / BPS;
        if (share != 0) b.parts[i] += 1;
    }

    /// @dev What a batch moves between balances and debts: for revenue the debts it nets (each party's
    /// debt, up to its credits), for reversals the debts it creates (each party's debits beyond its
    /// balance).
    function _debtChange(IAllianceLedger.Terms memory terms, Booking memory b, bool reversal)
        internal
        view
        returns (uint256 moved)
    {
        for (uint256 i; i < terms.parties.length; ++i) {
            uint256 amount = b.amounts[i];
            if (reversal) {
                uint256 balance = _ghostBalance(terms.parties[i], terms.token);
                if (amount > balance) moved += amount - balance;
            } else {
                uint256 debt = _ghostDebt(terms.parties[i], terms.token);
                moved += amount < debt ? amount : debt;
            }
        }
    }

    function _book(bytes32 id, IAllianceLedger.Terms memory terms, Booking memory b, bool reversal) internal {
        address token = terms.token;
        for (uint256 i; i < terms.parties.length; ++i) {
            uint32 meId = terms.parties[i];
            if (reversal) {
                debited[meId][token] += b.amounts[i];
                debitFloorSum[meId][token] += b.floors[i];
                debitParts[meId][token] += b.parts[i];
            } else {
                credited[meId][token] += b.amounts[i];
                floorSum[meId][token] += b.floors[i];
                parts[meId][token] += b.parts[i];
            }
        }
        for (uint32 p = 1; p <= PERIODS; ++p) {
            periodRevenue[id][p] = b.revenue[p];
        }
    }

    /// @dev The ghost account: credited - debited - paid, a balance when positive, a debt when negative.
    function _ghostBalance(uint32 meId, address token) internal view returns (uint256) {
        uint256 out = debited[meId][token] + received[meId][token];
        uint256 inn = credited[meId][token];
        return inn > out ? inn - out : 0;
    }

    function _ghostDebt(uint32 meId, address token) internal view returns (uint256) {
        uint256 out = debited[meId][token] + received[meId][token];
        uint256 inn = credited[meId][token];
        return out > inn ? out - inn : 0;
    }

    function _countCredit(bytes32 id, bytes32 ref) internal {
        uint256 times = ++creditedTimes[id][ref];
        if (times > maxCreditedTimes) maxCreditedTimes = times;
    }

    /// @dev Registers one ME through `registerME`: a fresh payout, a signer (an ERC-1271 contract when
    /// seed % 4 == 1), a parent one time in three.
    function _register(uint256 seed, uint256 parentSeed) internal {
        (uint256 key, address signer) = _newSigner(seed % 4 == 1);
        address payout = vm.addr(_newKey());
        uint32 parent = meCount == 0 || seed % 3 != 0 ? 0 : uint32(bound(parentSeed, 1, meCount));
        string memory name = string.concat("me-", vm.toString(uint256(meCount) + 1));
        vm.prank(platform);
        try ledger.registerME(name, payout, signer, parent) returns (uint32 meId) {
            if (meId != meCount + 1) return _violation("registerME skipped an id");
            _bookME(meId, key, signer, seed % 4 == 1, payout);
            accepted["registerME"]++;
        } catch (bytes memory err) {
            _unexpected("registerME", err);
        }
    }

    function _bookME(uint32 meId, uint256 key, address signer, bool isContract, address payout) internal {
        if (meId > meCount) meCount = meId;
        signerKey[meId] = key;
        signerOf[meId] = signer;
        contractSigner[meId] = isContract;
        payoutOf[meId] = payout;
    }

    /// @dev A fresh signer: a key's address, or an ERC-1271 contract that accepts what the key signs.
    function _newSigner(bool asContract) internal returns (uint256 key, address signer) {
        key = _newKey();
        if (!asContract) return (key, vm.addr(key));
        signer = address(new ERC1271Signer(vm.addr(key)));
        _signerContracts.push(signer);
    }

    /// @dev Whether the ME's signer refuses whatever it is shown (a revoked contract signer).
    function _refuses(uint32 meId) internal view returns (bool) {
        return contractSigner[meId] && revoked[signerOf[meId]];
    }

    /// @dev The error of an ME update whose consent the ME's signer did not give.
    function _consentError(uint32 meId) internal view returns (bytes4) {
        return contractSigner[meId] ? IAllianceLedger.MEConsentRefused.selector : IAllianceLedger.MEConsentInvalid.selector;
    }

    /// @dev The error a call signed by every party's signer (the one at `forgedIndex` by a stranger) must
    /// fail with, bytes4(0) if none: parties are checked in order, for an approval a dissolved party
    /// first, then a signature a key did not make (`...Invalid`) or a contract signer refused
    /// (`...Refused`: forged, or revoked).
    function _signatureError(uint32[] memory parties, uint256 forgedIndex, bool requireActive)
        internal
        view
        returns (bytes4)
    {
        for (uint256 i; i < parties.length; ++i) {
            uint32 meId = parties[i];
            if (requireActive && dissolved[meId]) return IAllianceLedger.AgreementPartyDissolved.selector;
            if (i == forgedIndex || _refuses(meId)) {
                return contractSigner[meId]
                    ? IAllianceLedger.AgreementSignatureRefused.selector
                    : IAllianceLedger.AgreementSignatureInvalid.selector;
            }
        }
        return bytes4(0);
    }

    /// @dev The `current` argument of `proposeAgreement` for the platform, which needs none.
    function _noTerms() internal pure returns (IAllianceLedger.Terms memory none) {}

    /// @dev The one place the handler builds Terms: over 2..4 active MEs (ascending), random shares
    /// summing to 10,000 (zero shares included), and a target with an excess table two times in three.
    /// Empty when too few are active.
    function _newTerms(uint256 seed, address token) internal view returns (IAllianceLedger.Terms memory terms) {
        uint32[] memory active = _activeMEs();
        if (active.length < 2) return terms;
        uint256 n = bound(seed, 2, active.length < 4 ? active.length : 4);
        // A partial Fisher-Yates shuffle picks n of them; then sort.
        for (uint256 i; i < n; ++i) {
            uint256 j = i + uint256(keccak256(abi.encode(seed, "pick", i))) % (active.length - i);
            (active[i], active[j]) = (active[j], active[i]);
        }
        uint32[] memory parties = new uint32[](n);
        for (uint256 i; i < n; ++i) {
            parties[i] = active[i];
        }
        for (uint256 i = 1; i < n; ++i) {
            for (uint256 j = i; j > 0 && parties[j - 1] > parties[j]; --j) {
                (parties[j - 1], parties[j]) = (parties[j], parties[j - 1]);
            }
        }
        terms.token = token;
        terms.parties = parties;
        terms.shares = _shares(uint256(keccak256(abi.encode(seed, "shares"))), n);
        if (seed % 3 != 0) {
            // One band: the period target and its excess table.
            terms.bands = new IAllianceLedger.Band[](1);
            terms.bands[0] = IAllianceLedger.Band({
                target: uint128(bound(uint256(keccak256(abi.encode(seed, "target"))), 1, 1e9)),
                shares: _shares(uint256(keccak256(abi.encode(seed, "excess"))), n)
            });
        }
    }

    function _setTerms(bytes32 id, uint32 version, IAllianceLedger.Terms memory terms) internal {
        _termsData[id][version] = abi.encode(terms);
    }

    /// @dev The terms of `version` (empty terms when none were recorded).
    function _termsOf(bytes32 id, uint32 version) internal view returns (IAllianceLedger.Terms memory terms) {
        bytes memory data = _termsData[id][version];
        if (data.length != 0) terms = abi.decode(data, (IAllianceLedger.Terms));
    }

    /// @dev The period target of one-band terms (0 without a band).
    function _target(IAllianceLedger.Terms memory terms) internal pure returns (uint256) {
        return terms.bands.length == 0 ? 0 : terms.bands[0].target;
    }

    /// @dev The excess (band 1) table of one-band terms (empty without a band).
    function _excessShares(IAllianceLedger.Terms memory terms) internal pure returns (uint16[] memory) {
        return terms.bands.length == 0 ? new uint16[](0) : terms.bands[0].shares;
    }

    function _shares(uint256 seed, uint256 n) internal pure returns (uint16[] memory shares) {
        shares = new uint16[](n);
        uint256 left = BPS;
        for (uint256 i; i + 1 < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            // One share in eight is zero; the others take a random part of what is left.
            uint256 share = r % 8 == 0 ? 0 : bound(r >> 3, 0, left);
            shares[i] = uint16(share);
            left -= share;
        }
        shares[n - 1] = uint16(left);
    }

    /// @dev Amounts over four scales: a few units (rounding dominates), up to 10,000, up to 10**12, up
    /// to 2**96.
    function _amount(uint256 seed) internal pure returns (uint256) {
        uint256 scale = seed % 4;
        uint256 max = scale == 0 ? 9 : scale == 1 ? 10_000 : scale == 2 ? 1e12 : 2 ** 96;
        return bound(seed >> 2, 1, max);
    }

    function _approvals(bytes32 id, uint32 version, IAllianceLedger.Terms memory terms, uint256 forgedIndex)
        internal
        returns (bytes[] memory sigs)
    {
        bytes32 digest = ledger.approvalDigest(id, version, ledger.hashTerms(terms));
        sigs = new bytes[](terms.parties.length);
        for (uint256 i; i < sigs.length; ++i) {
            sigs[i] = _sign(i == forgedIndex ? _newKey() : signerKey[terms.parties[i]], digest);
        }
    }

    /// @dev A key's signature of `digest`; for a contract signer, its owner's key signs, and the contract
    /// accepts it through ERC-1271.
    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _newKey() internal returns (uint256) {
        return uint256(keccak256(abi.encode("key", ++_keys))) % 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140 + 1;
    }

    function _newRef() internal returns (bytes32) {
        return keccak256(abi.encode("ref", ++_refs));
    }

    /// @dev The id the `offset`-th new agreement from now gets.
    function _freshId(uint256 offset) internal view returns (bytes32) {
        return keccak256(abi.encode("agreement", agreementIds.length + 1 + offset));
    }

    function _pick(uint256 seed) internal view returns (bytes32 id, GhostAgreement storage ghost) {
        uint256 n = agreementIds.length;
        if (n != 0) id = agreementIds[seed % n];
        ghost = _agreements[id];
    }

    /// @dev Seven times in eight an active agreement without a dissolved party, if there is one (so that
    /// most batches can be accepted); otherwise any agreement.
    function _pickLive(uint256 seed) internal view returns (bytes32 id, GhostAgreement storage ghost) {
        uint256 n = agreementIds.length;
        if (n != 0 && seed % 8 != 0) {
            for (uint256 a; a < n; ++a) {
                bytes32 candidate = agreementIds[(seed >> 3) % n + a < n ? (seed >> 3) % n + a : (seed >> 3) % n + a - n];
                GhostAgreement storage g = _agreements[candidate];
                if (g.status == IAllianceLedger.AgreementStatus.Active && !_anyDissolved(_termsOf(candidate, g.active).parties)) {
                    return (candidate, g);
                }
            }
        }
        return _pick(seed);
    }

    function _activeMEs() internal view returns (uint32[] memory active) {
        active = new uint32[](meCount);
        uint256 n;
        for (uint32 meId = 1; meId <= meCount; ++meId) {
            if (!dissolved[meId]) active[n++] = meId;
        }
        assembly ("memory-safe") {
            mstore(active, n)
        }
    }

    function _anyDissolved(uint32[] memory parties) internal view returns (bool) {
        for (uint256 i; i < parties.length; ++i) {
            if (dissolved[parties[i]]) return true;
        }
        return false;
    }

    function _listedBefore(uint32[] memory ids, uint256 j) internal pure returns (bool) {
        for (uint256 i; i < j; ++i) {
            if (ids[i] == ids[j]) return true;
        }
        return false;
    }

    /// @dev A period for an event: seven times in eight an open one (if any), otherwise any of the four.
    function _period(bytes32 id, uint256 seed) internal view returns (uint32) {
        uint32 p = uint32(bound(seed, 1, PERIODS));
        if (seed >> 128 & 7 == 0) return p;
        for (uint32 i; i < PERIODS; ++i) {
            uint32 q = (p + i - 1) % PERIODS + 1;
            if (!periodClosed[id][q]) return q;
        }
        return p;
    }

    function _openPeriod(bytes32 id) internal view returns (uint32) {
        for (uint32 p = 1; p <= PERIODS; ++p) {
            if (!periodClosed[id][p]) return p;
        }
        return 0;
    }

    function _otherToken(address token) internal view returns (address) {
        return token == tokens[0] ? tokens[1] : tokens[0];
    }

    function _sum(uint256[] memory entries) internal pure returns (uint256 total) {
        for (uint256 k; k < entries.length; ++k) {
            total += entries[k] >> 32;
        }
    }

    function _fund(address token, uint256 amount) internal {
        _mint(token, finance, amount);
    }

    function _mint(address token, address to, uint256 amount) internal {
        if (token == feeToken) FeeOnTransferToken(token).mint(to, amount);
        else if (token == blockToken) BlocklistToken(token).mint(to, amount);
        else LedgerTestToken(token).mint(to, amount);
    }

    function _violation(string memory what) internal {
        if (violations == 0) firstViolation = what;
        violations++;
    }

    function _unexpected(string memory what, bytes memory err) internal {
        _violation(string.concat(what, " refused a valid call: ", _selector(err)));
    }

    function _expectError(string memory what, bytes memory err, bytes4 expected) internal {
        if (err.length < 4 || bytes4(err) != expected) {
            _violation(string.concat(what, " failed with another error than expected: ", _selector(err)));
        }
    }

    function _selector(bytes memory err) internal pure returns (string memory) {
        if (err.length < 4) return "(no data)";
        return vm.toString(bytes32(bytes4(err)));
    }
}
