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
import {ShapesReference, SplitReference} from "../reference/SplitReference.sol";

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
    uint256 public constant MAX_NESTING_DEPTH = 2;

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
    mapping(bytes32 id => mapping(uint32 period => uint256)) public periodRecouped; // the recoup table's part
    mapping(bytes32 id => uint256) public recoupedOf; // the agreement's recouped total
    mapping(bytes32 id => uint256) public maxRecoupOf; // the largest recoup of the versions put in force
    /// @dev The inner alliances in force (the distinct non-zero nested ids of the active version).
    mapping(bytes32 id => bytes32[]) internal _inner;
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
        IAllianceLedger.Terms memory terms = _newTerms(seed, tokens[seed % tokens.length], id, false);
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
                _bookActivation(id, terms);
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
            terms[j] = _newTerms(termsSeed, token, j < n ? ids[j] : bytes32(0), false);
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
        // One amendment in four may nest where the ledger refuses it (a cycle, too deep); one in
        // sixteen nests the agreement in itself.
        IAllianceLedger.Terms memory terms = _newTerms(seed, token, id, (seed >> 200) % 4 == 0);
        if (terms.parties.length == 0) return;
        if ((seed >> 204) % 16 == 0) {
            if (terms.nested.length == 0) terms.nested = new bytes32[](terms.parties.length);
            terms.nested[0] = id;
        }
        bytes4 nestingError = terms.nested.length == 0 ? bytes4(0) : _nestingError(id, terms.nested);
        bool mustFail = otherToken || ghost.status == IAllianceLedger.AgreementStatus.Terminated || nestingError != 0;
        vm.prank(platform);
        try ledger.proposeAgreement(id, terms, _noTerms()) returns (uint32 version) {
            if (mustFail) return _violation("proposeAgreement amended a terminated agreement or changed its token");
            if (version != ghost.latest + 1) return _violation("an amendment skipped a version number");
            ghost.latest = version;
            _setTerms(id, version, terms);
            accepted["proposeAmendment"]++;
            if (terms.nested.length != 0) accepted["proposeNested"]++;
        } catch (bytes memory err) {
            if (!mustFail) return _unexpected("proposeAmendment", err);
            // (With another token, the self-nesting is refused as a nested agreement in another token.)
            if (ghost.status != IAllianceLedger.AgreementStatus.Terminated && nestingError != 0 && !otherToken) {
                _expectError("proposeAmendment nesting", err, nestingError);
                accepted["nestingRefused"]++;
            }
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
        // The inner alliances may have been re-nested since the proposal: the walk runs again.
        if (expected == bytes4(0) && terms.nested.length != 0) expected = _nestingError(id, terms.nested);
        vm.prank(finance);
        try ledger.activateAgreement(id, version, terms, sigs) {
            if (expected != bytes4(0)) {
                return _violation("activateAgreement accepted a forged or revoked approval or a dissolved party");
            }
            ghost.status = IAllianceLedger.AgreementStatus.Active;
            ghost.active = version;
            _bookActivation(id, terms);
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
        (bool ok,, bytes memory err) =
            _send(_lastId, _lastVersion, _lastFirstSeq, terms, _lastRefs, _lastEntries, _lastOriginals);
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
        bytes32[] memory originals = new bytes32[](amountSeed % 2);
        if (originals.length != 0) originals[0] = _newRef();
        (bool ok,, bytes memory err) = _send(id, ghost.active, firstSeq, terms, refs, entries, originals);
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
        IAllianceLedger.Terms memory terms = _termsOf(id, ghost.active);
        if (_anyDissolved(terms.parties)) return;
        kind = kind % 9;
        bool nested = terms.nested.length != 0;
        // Nested terms pay each run (and may forward it) before the next run is read: a second run in
        // period 0 could then fail in an inner alliance first. Kinds 7 and 8 are for nested terms only.
        if (nested ? kind == 2 : kind >= 7) return;
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
        } else if (kind == 6) {
            originals = new bytes32[](2); // a reversal that names no original
            originals[0] = _newRef();
            expected = IAllianceLedger.ReversalOriginalEmpty.selector;
        } else if (kind == 7) {
            expected = IAllianceLedger.AgreementNestedTermsRequired.selector; // nested terms through `settle`
        } else {
            originals = new bytes32[](2); // a reversal of an agreement with nested parties
            (originals[0], originals[1]) = (_newRef(), _newRef());
            expected = IAllianceLedger.ReversalNestedUnsupported.selector;
        }
        _fund(terms.token, 1e30);
        bool ok;
        bytes memory err;
        if (kind == 7) {
            vm.prank(finance);
            try ledger.settle(id, version, ghost.cursor, terms, refs, entries) {
                ok = true;
            } catch (bytes memory e) {
                err = e;
            }
        } else {
            (ok,, err) = _send(id, version, ghost.cursor, terms, refs, entries, originals);
        }
        if (ok) return _violation(originals.length == 0 ? "a malformed batch was settled" : "a malformed reversal batch was settled");
        _expectError(originals.length == 0 ? "malformed batch" : "malformed reversal batch", err, expected);
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
            IAllianceLedger.Terms memory terms = _newTerms(seed, ghost.token, id, false);
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
            terms[0] = _newTerms(seed, tokens[0], ids[0], false);
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
            _eq(onChain.recouped, recoupedOf[id], "recoup: the recouped total == the reference's recoup parts less reversals");
            if (onChain.recouped > maxRecoupOf[id]) {
                _eq(onChain.recouped, maxRecoupOf[id], "recoup: the recouped total exceeds the largest recoup in force");
            }
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
                _eq(period.recouped, periodRecouped[id][p], "period recouped part == the reference's recoup parts");
                if (period.recouped > period.revenue) revert("recoup: a period's recouped part exceeds its revenue");
            }
            bytes32[] memory inner = ledger.nestedOf(id);
            _eq(inner.length, _inner[id].length, "nesting: the inner alliances in force");
            for (uint256 j; j < inner.length; ++j) {
                if (inner[j] != _inner[id][j]) revert("nesting: the inner alliances in force");
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
    /// closed, a reversal names an agreement with nested parties, a forwarded credit reaches an inner
    /// alliance that cannot take it (not active, a dissolved party, the period closed, nested too deep),
    /// or (revenue) the fee token would deliver less than the amount pulled; otherwise the returned
    /// amount is the batch total less the debts it netted (revenue, at every level) or less the debts it
    /// created (reversals), and the ghosts book the reference split (`_simBatch`).
    function _settle(
        bytes32 id,
        GhostAgreement storage ghost,
        bytes32[] memory refs,
        uint256[] memory entries,
        bytes32[] memory originals,
        uint256 total,
        bool closedPeriod
    ) internal {
        Call memory c = Call({
            id: id,
            version: ghost.active,
            firstSeq: ghost.cursor,
            terms: _termsOf(id, ghost.active),
            refs: refs,
            entries: entries,
            originals: originals,
            ok: false,
            result: 0,
            err: ""
        });
        (Sim memory s, bool mustFail) = _predict(c, ghost, total, closedPeriod);
        _fund(ghost.token, total);
        uint256[] memory before = mustFail ? new uint256[](0) : _observe(s);
        _sendCall(c);
        string memory what = _what(c.terms, originals);
        if (!c.ok) {
            if (!mustFail) _unexpected(what, c.err);
            return;
        }
        if (mustFail) {
            return _violation(string.concat(what, " accepted a batch for an inactive agreement, a dissolved party, a closed period or short delivery"));
        }
        if (c.result != s.expected) {
            _violation(string.concat(what, " returned ", vm.toString(c.result), " where the batch less the debts netted or incurred is ", vm.toString(s.expected)));
        }
        _applySim(s);
        _checkShapes(s, before);
        _accept(id, ghost, c.terms, refs, entries, originals);
    }

    /// @dev One settlement call and its outcome.
    struct Call {
        bytes32 id;
        uint32 version;
        uint64 firstSeq;
        IAllianceLedger.Terms terms;
        bytes32[] refs;
        uint256[] entries;
        bytes32[] originals;
        bool ok;
        uint256 result;
        bytes err;
    }

    function _sendCall(Call memory c) internal {
        (c.ok, c.result, c.err) = _send(c.id, c.version, c.firstSeq, c.terms, c.refs, c.entries, c.originals);
    }

    /// @dev Whether the ledger must refuse the call, and otherwise what it does (`Sim`).
    function _predict(Call memory c, GhostAgreement storage ghost, uint256 total, bool closedPeriod)
        internal
        view
        returns (Sim memory s, bool mustFail)
    {
        bool reversal = c.originals.length != 0;
        mustFail = ghost.status != IAllianceLedger.AgreementStatus.Active || closedPeriod
            || _anyDissolved(c.terms.parties) || reversal && c.terms.nested.length != 0;
        if (mustFail) return (s, true);
        s = _newSim(ghost.token, reversal);
        _simBatch(s, c.id, c.terms, c.firstSeq, c.entries);
        if (s.fail) return (s, true);
        s.expected = total - _debtChange(s);
        // The fee token delivers 1% less than it is asked for: refused unless the fee rounds to 0.
        mustFail = !reversal && ghost.token == feeToken && s.expected / 100 != 0;
    }

    function _what(IAllianceLedger.Terms memory terms, bytes32[] memory originals) internal pure returns (string memory) {
        return originals.length != 0 ? "settleReversals" : terms.nested.length != 0 ? "settleNested" : "settle";
    }

    /// @dev Books an accepted batch: the references (credited once each; revenue events become
    /// reversible originals, reversals count against theirs), the retry copy, the counters.
    function _accept(
        bytes32 id,
        GhostAgreement storage ghost,
        IAllianceLedger.Terms memory terms,
        bytes32[] memory refs,
        uint256[] memory entries,
        bytes32[] memory originals
    ) internal {
        for (uint256 k; k < refs.length; ++k) {
            _countCredit(id, refs[k]);
            if (originals.length != 0) {
                reversedAmount[id][originals[k]] += entries[k] >> 32;
            } else {
                _originals[id].push(refs[k]);
                settledAmount[id][refs[k]] = entries[k] >> 32;
            }
        }
        (_lastId, _lastVersion, _lastFirstSeq, _lastRefs, _lastEntries, _lastOriginals) =
            (id, ghost.active, ghost.cursor - uint64(entries.length), refs, entries, originals);
        accepted[_what(terms, originals)]++;
        string memory kind = originals.length != 0 ? "reverse" : "settle";
        if (terms.bands.length >= 2) accepted[string.concat(kind, "Banded")]++;
        if (terms.recoup != 0) accepted[string.concat(kind, "Recoup")]++;
    }

    /// @dev One settlement call by finance: `settle` when `originals` is empty (`settleNested`, with the
    /// active terms of every other activated agreement as inner terms, when `terms` has nested parties),
    /// `settleReversals` otherwise.
    function _send(
        bytes32 id,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms memory terms,
        bytes32[] memory refs,
        uint256[] memory entries,
        bytes32[] memory originals
    ) internal returns (bool ok, uint256 result, bytes memory err) {
        IAllianceLedger.InnerTerms[] memory inner;
        if (originals.length == 0 && terms.nested.length != 0) inner = _innerTerms(id);
        vm.prank(finance);
        if (originals.length != 0) {
            try ledger.settleReversals(id, version, firstSeq, terms, refs, entries, originals) returns (uint256 back) {
                (ok, result) = (true, back);
            } catch (bytes memory e) {
                err = e;
            }
        } else if (terms.nested.length != 0) {
            try ledger.settleNested(id, version, firstSeq, terms, refs, entries, inner) returns (uint256 paidIn) {
                (ok, result) = (true, paidIn);
            } catch (bytes memory e) {
                err = e;
            }
        } else {
            try ledger.settle(id, version, firstSeq, terms, refs, entries) returns (uint256 paidIn) {
                (ok, result) = (true, paidIn);
            } catch (bytes memory e) {
                err = e;
            }
        }
    }

    /// @dev The active version and terms of every activated agreement but `id` (the ledger takes the
    /// first entry for each inner alliance it reaches; the others are not read).
    function _innerTerms(bytes32 id) internal view returns (IAllianceLedger.InnerTerms[] memory inner) {
        inner = new IAllianceLedger.InnerTerms[](agreementIds.length);
        uint256 n;
        for (uint256 a; a < agreementIds.length; ++a) {
            bytes32 other = agreementIds[a];
            uint32 active = _agreements[other].active;
            if (other == id || active == 0) continue;
            inner[n++] = IAllianceLedger.InnerTerms({agreementId: other, version: active, terms: _termsOf(other, active)});
        }
        assembly ("memory-safe") {
            mstore(inner, n)
        }
    }

    // -- the reference model of a batch ---------------------------------------------------------------

    /// @dev What a batch does to the ghosts, over every agreement it reaches through nesting and every ME
    /// it credits or debits: computed from the ghosts before the call (to predict its outcome) and booked
    /// after it succeeds. Agreements are indexed as in `agreementIds`, MEs by id, periods 1..PERIODS.
    struct Sim {
        bool reversal;
        bool fail; // the ledger must refuse the batch (an inner alliance cannot take a forwarded credit)
        address token;
        uint256 expected; // what the call returns: the total less the debts netted or incurred
        uint256[] amounts; // per ME: the reference credits (revenue) or debits (reversals)
        uint256[] floors; // per ME: the sum of floor(part * share / BPS) over its parts
        uint256[] nparts; // per ME: the parts with a non-zero share
        uint256[][] revenue; // per agreement and period, after the batch
        uint256[][] periodRecouped; // per agreement and period: the recouped part, after the batch
        uint256[] recouped; // per agreement: the recouped total, after the batch
        uint64[] cursor; // per agreement, after the batch
        bool[] touched; // per agreement: settled by the batch (itself, or a forwarded credit)
        uint256[][] forwarded; // per agreement and period: the nested credits forwarded into it
        bytes32[] fwdRefs; // per forwarded event: its derived reference, agreement and amount
        uint256[] fwdIndex;
        uint256[] fwdAmounts;
        uint256 fwdCount;
    }

    uint256 internal constant MAX_FORWARDS = 128; // 6 runs x (4 nested parties + 16 at the 2nd level) = 120

    function _newSim(address token, bool reversal) internal view returns (Sim memory s) {
        uint256 n = agreementIds.length;
        (s.reversal, s.token) = (reversal, token);
        s.amounts = new uint256[](meCount + 1);
        s.floors = new uint256[](meCount + 1);
        s.nparts = new uint256[](meCount + 1);
        s.revenue = new uint256[][](n);
        s.periodRecouped = new uint256[][](n);
        s.forwarded = new uint256[][](n);
        s.recouped = new uint256[](n);
        s.cursor = new uint64[](n);
        s.touched = new bool[](n);
        for (uint256 a; a < n; ++a) {
            bytes32 id = agreementIds[a];
            (s.revenue[a], s.periodRecouped[a], s.forwarded[a]) =
                (new uint256[](PERIODS + 1), new uint256[](PERIODS + 1), new uint256[](PERIODS + 1));
            for (uint32 p = 1; p <= PERIODS; ++p) {
                s.revenue[a][p] = periodRevenue[id][p];
                s.periodRecouped[a][p] = periodRecouped[id][p];
            }
            s.recouped[a] = recoupedOf[id];
            s.cursor[a] = _agreements[id].cursor;
        }
        s.fwdRefs = new bytes32[](MAX_FORWARDS);
        s.fwdIndex = new uint256[](MAX_FORWARDS);
        s.fwdAmounts = new uint256[](MAX_FORWARDS);
    }

    /// @dev The batch one run of consecutive same-period events at a time, as the ledger settles it:
    /// each event cut into its parts by ShapesReference (recoup first, then the bands) and split with
    /// its own offset; at the end of each run every party's run total credited to its ME or, for a
    /// nested party, forwarded to its inner alliance (`_simForward`).
    function _simBatch(
        Sim memory s,
        bytes32 id,
        IAllianceLedger.Terms memory terms,
        uint64 firstSeq,
        uint256[] memory entries
    ) internal view {
        uint256 a = _indexOf(id);
        s.cursor[a] = firstSeq + uint64(entries.length);
        s.touched[a] = true;
        ShapesReference.Shape memory shape = _shape(terms);
        uint256 k;
        while (k < entries.length && !s.fail) {
            uint32 period = uint32(entries[k]);
            uint64 runFirst = firstSeq + uint64(k);
            uint256[] memory run = new uint256[](terms.parties.length);
            for (; k < entries.length && uint32(entries[k]) == period; ++k) {
                _simEvent(s, a, shape, terms, firstSeq + k, period, entries[k] >> 32, run);
            }
            _simPay(s, id, terms, runFirst, period, run, 0);
        }
    }

    /// @dev One event (or reversal) of agreement `a`: its parts, their split into `run` (per party), the
    /// rounding bounds of the parties credited directly, the period's and agreement's new state.
    function _simEvent(
        Sim memory s,
        uint256 a,
        ShapesReference.Shape memory shape,
        IAllianceLedger.Terms memory terms,
        uint256 seq,
        uint32 period,
        uint256 amount,
        uint256[] memory run
    ) internal pure {
        uint256[] memory tierParts = _simParts(s, a, shape, period, amount);
        uint256 offset = SplitReference.offsetOf(seq);
        for (uint256 t; t < tierParts.length; ++t) {
            if (tierParts[t] == 0) continue;
            uint16[] memory table = t == 0 ? shape.recoupShares : ShapesReference.tierTable(shape, t - 1);
            _simPart(s, terms, run, tierParts[t], table, offset);
        }
    }

    /// @dev The parts of one event (or reversal) of agreement `a` (ShapesReference), and the period's and
    /// agreement's state after it.
    function _simParts(Sim memory s, uint256 a, ShapesReference.Shape memory shape, uint32 period, uint256 amount)
        internal
        pure
        returns (uint256[] memory tierParts)
    {
        ShapesReference.State memory st = ShapesReference.State({
            periodRevenue: s.revenue[a][period],
            periodRecouped: s.periodRecouped[a][period],
            recouped: s.recouped[a]
        });
        ShapesReference.State memory next;
        (tierParts, next) = s.reversal
            ? ShapesReference.reversalParts(shape, st, amount)
            : ShapesReference.eventParts(shape, st, amount);
        (s.revenue[a][period], s.periodRecouped[a][period], s.recouped[a]) =
            (next.periodRevenue, next.periodRecouped, next.recouped);
    }

    /// @dev One part split by `table` with `offset` into `run`, with the rounding bound of each party
    /// credited directly (a nested party's bound is its inner alliance's parties').
    function _simPart(
        Sim memory s,
        IAllianceLedger.Terms memory terms,
        uint256[] memory run,
        uint256 part,
        uint16[] memory table,
        uint256 offset
    ) internal pure {
        uint256[] memory split = SplitReference.split(part, table, offset);
        for (uint256 i; i < split.length; ++i) {
            run[i] += split[i];
            if (terms.nested.length != 0 && terms.nested[i] != bytes32(0)) continue;
            uint32 meId = terms.parties[i];
            s.floors[meId] += part * table[i] / BPS;
            if (table[i] != 0) s.nparts[meId] += 1;
        }
    }

    /// @dev The end of a run of agreement `id`: each party's total to its ME, or forwarded.
    function _simPay(
        Sim memory s,
        bytes32 id,
        IAllianceLedger.Terms memory terms,
        uint64 runFirst,
        uint32 period,
        uint256[] memory run,
        uint256 depth
    ) internal view {
        for (uint256 i; i < run.length && !s.fail; ++i) {
            uint256 c = run[i];
            if (c == 0) continue;
            if (terms.nested.length != 0 && terms.nested[i] != bytes32(0)) {
                bytes32 ref = keccak256(abi.encode(id, runFirst, terms.parties[i]));
                _simForward(s, ref, terms.nested[i], period, c, depth + 1);
            } else {
                s.amounts[terms.parties[i]] += c;
            }
        }
    }

    /// @dev A nested party's run credit settled as one event of its inner alliance (its next sequence
    /// number, a reference derived from the outer run and the party, the same period), by the inner
    /// alliance's active terms, recursively. Refused when the inner alliance is not active, has a
    /// dissolved party or has closed the period, or sits deeper than MAX_NESTING_DEPTH.
    function _simForward(
        Sim memory s,
        bytes32 ref,
        bytes32 inner,
        uint32 period,
        uint256 amount,
        uint256 depth
    ) internal view {
        GhostAgreement storage g = _agreements[inner];
        if (depth > MAX_NESTING_DEPTH || g.status != IAllianceLedger.AgreementStatus.Active || periodClosed[inner][period]) {
            s.fail = true;
            return;
        }
        IAllianceLedger.Terms memory terms = _termsOf(inner, g.active);
        if (_anyDissolved(terms.parties)) {
            s.fail = true;
            return;
        }
        uint256 a = _indexOf(inner);
        uint64 seq = s.cursor[a];
        s.cursor[a] = seq + 1;
        s.touched[a] = true;
        uint256 f = s.fwdCount++;
        s.fwdRefs[f] = ref;
        s.fwdIndex[f] = a;
        s.fwdAmounts[f] = amount;
        s.forwarded[a][period] += amount;
        uint256[] memory run = new uint256[](terms.parties.length);
        _simEvent(s, a, _shape(terms), terms, seq, period, amount, run);
        _simPay(s, inner, terms, seq, period, run, depth);
    }

    /// @dev What a batch moves between balances and debts: for revenue the debts it nets (each ME's
    /// debt, up to its credits at every level), for reversals the debts it creates (each ME's debits
    /// beyond its balance).
    function _debtChange(Sim memory s) internal view returns (uint256 moved) {
        for (uint32 meId = 1; meId < s.amounts.length; ++meId) {
            uint256 amount = s.amounts[meId];
            if (amount == 0) continue;
            if (s.reversal) {
                uint256 balance = _ghostBalance(meId, s.token);
                if (amount > balance) moved += amount - balance;
            } else {
                uint256 debt = _ghostDebt(meId, s.token);
                moved += amount < debt ? amount : debt;
            }
        }
    }

    /// @dev Books a simulated batch in the ghosts.
    function _applySim(Sim memory s) internal {
        address token = s.token;
        for (uint32 meId = 1; meId < s.amounts.length; ++meId) {
            if (s.amounts[meId] == 0 && s.floors[meId] == 0 && s.nparts[meId] == 0) continue;
            if (s.reversal) {
                debited[meId][token] += s.amounts[meId];
                debitFloorSum[meId][token] += s.floors[meId];
                debitParts[meId][token] += s.nparts[meId];
            } else {
                credited[meId][token] += s.amounts[meId];
                floorSum[meId][token] += s.floors[meId];
                parts[meId][token] += s.nparts[meId];
            }
        }
        for (uint256 a; a < s.touched.length; ++a) {
            if (!s.touched[a]) continue;
            bytes32 id = agreementIds[a];
            for (uint32 p = 1; p <= PERIODS; ++p) {
                periodRevenue[id][p] = s.revenue[a][p];
                periodRecouped[id][p] = s.periodRecouped[a][p];
            }
            recoupedOf[id] = s.recouped[a];
            _agreements[id].cursor = s.cursor[a];
        }
        for (uint256 f; f < s.fwdCount; ++f) {
            bytes32 id = agreementIds[s.fwdIndex[f]];
            bytes32 ref = s.fwdRefs[f];
            _countCredit(id, ref);
            _originals[id].push(ref);
            settledAmount[id][ref] = s.fwdAmounts[f];
        }
        if (s.fwdCount != 0) accepted["nestedForward"]++;
    }

    /// @dev What the ledger holds before a batch, for `_checkShapes`: per touched agreement its
    /// recouped total, and per (agreement, period) with a forwarded credit the period's revenue.
    function _observe(Sim memory s) internal view returns (uint256[] memory v) {
        uint256 n = s.touched.length;
        v = new uint256[](n * (PERIODS + 1));
        for (uint256 a; a < n; ++a) {
            if (!s.touched[a]) continue;
            bytes32 id = agreementIds[a];
            v[a * (PERIODS + 1)] = ledger.agreementOf(id).recouped;
            for (uint32 p = 1; p <= PERIODS; ++p) {
                if (s.forwarded[a][p] != 0) v[a * (PERIODS + 1) + p] = ledger.periodOf(id, p).revenue;
            }
        }
    }

    /// @dev The shape invariants, right after an accepted batch (in the same transaction's aftermath,
    /// before any other call): the recouped total never exceeds the largest recoup of the versions in
    /// force so far and never decreases except by a reversal (nor grows by one); every credit forwarded
    /// to a nested party is the inner alliance's new revenue in that period, and the inner alliances'
    /// parties hold what the reference split credited them.
    function _checkShapes(Sim memory s, uint256[] memory before) internal {
        for (uint256 a; a < s.touched.length; ++a) {
            if (!s.touched[a]) continue;
            bytes32 id = agreementIds[a];
            uint256 recouped = ledger.agreementOf(id).recouped;
            uint256 old = before[a * (PERIODS + 1)];
            if (recouped > maxRecoupOf[id]) _violation("recoup: the recouped total exceeds the recoup");
            if (!s.reversal && recouped < old) _violation("recoup: the recouped total decreased without a reversal");
            if (s.reversal && recouped > old) _violation("recoup: a reversal raised the recouped total");
            for (uint32 p = 1; p <= PERIODS; ++p) {
                uint256 forwarded = s.forwarded[a][p];
                if (forwarded == 0) continue;
                uint256 revenue = ledger.periodOf(id, p).revenue;
                if (revenue != before[a * (PERIODS + 1) + p] + forwarded) {
                    _violation(string.concat("nested: the inner alliance's revenue grew by ", vm.toString(revenue - before[a * (PERIODS + 1) + p]), " where its nested party was credited ", vm.toString(forwarded)));
                }
            }
        }
        if (s.fwdCount == 0) return;
        for (uint32 meId = 1; meId < s.amounts.length; ++meId) {
            if (s.amounts[meId] == 0) continue;
            if (ledger.balanceOf(meId, s.token) != _ghostBalance(meId, s.token) || ledger.debtOf(meId, s.token) != _ghostDebt(meId, s.token)) {
                _violation("nested: a party of an inner alliance was not credited its reference split in the same transaction");
            }
        }
    }

    function _indexOf(bytes32 id) internal view returns (uint256 a) {
        while (agreementIds[a] != id) ++a;
    }

    /// @dev The terms as ShapesReference's plain arrays.
    function _shape(IAllianceLedger.Terms memory terms) internal pure returns (ShapesReference.Shape memory shape) {
        uint256 k = terms.bands.length;
        (shape.shares, shape.targets, shape.bandShares) = (terms.shares, new uint128[](k), new uint16[][](k));
        for (uint256 j; j < k; ++j) {
            (shape.targets[j], shape.bandShares[j]) = (terms.bands[j].target, terms.bands[j].shares);
        }
        (shape.recoup, shape.recoupShares) = (terms.recoup, terms.recoupShares);
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

    /// @dev The one place the handler builds Terms for agreement `self`: over 2..4 active MEs
    /// (ascending), random shares summing to 10,000 (zero shares included); 0-4 bands with ascending
    /// targets (one band, the classic target and excess table, most often); a recoup with its table one
    /// time in three; one time in three one or two parties nested (each an existing agreement in the same
    /// token, the nesting kept only where the ledger's rules allow it unless `anyNesting`). Empty when
    /// too few MEs are active.
    function _newTerms(uint256 seed, address token, bytes32 self, bool anyNesting)
        internal
        view
        returns (IAllianceLedger.Terms memory terms)
    {
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
        uint256 shape = uint256(keccak256(abi.encode(seed, "shape")));
        // Bands: none 2/8, one 3/8, two, three or four 1/8 each; targets strictly ascending.
        uint256 k = shape % 8 < 2 ? 0 : shape % 8 < 5 ? 1 : shape % 8 - 3;
        terms.bands = new IAllianceLedger.Band[](k);
        uint256 target;
        for (uint256 j; j < k; ++j) {
            uint256 r = uint256(keccak256(abi.encode(seed, "target", j)));
            target += bound(r >> 2, 1, r % 4 == 0 ? 1_000 : 1e9);
            terms.bands[j] =
                IAllianceLedger.Band({target: uint128(target), shares: _shares(uint256(keccak256(abi.encode(seed, "band", j))), n)});
        }
        if ((shape >> 8) % 3 == 0) {
            // A recoup over four scales, so that some are paid back at once and some over many events.
            uint256 r = uint256(keccak256(abi.encode(seed, "recoup")));
            terms.recoup = uint128(bound(r >> 2, 1, r % 4 == 0 ? 100 : r % 4 == 1 ? 1e5 : r % 4 == 2 ? 1e9 : 1e13));
            terms.recoupShares = _shares(uint256(keccak256(abi.encode(seed, "recoupShares"))), n);
        }
        if ((shape >> 16) % 3 == 0) {
            terms.nested = _newNesting(shape >> 24, terms, self, anyNesting);
            // Nested terms without a nested party (nothing to nest in yet) only one time in four.
            if (!_anyNested(terms.nested) && (shape >> 20) % 4 != 0) delete terms.nested;
        }
    }

    /// @dev One entry per party: one or two parties nested, each in an existing agreement (other than
    /// `self`) in the terms' token, one that can settle if there is one; a new agreement takes the token
    /// of the first agreement it nests. Unless `anyNesting`, an entry the ledger would refuse (a cycle,
    /// too deep) is left out. Can be all zero (nested terms without a nested party).
    function _newNesting(uint256 r, IAllianceLedger.Terms memory terms, bytes32 self, bool anyNesting)
        internal
        view
        returns (bytes32[] memory nested)
    {
        nested = new bytes32[](terms.parties.length);
        bool fresh = _agreements[self].status == IAllianceLedger.AgreementStatus.None;
        for (uint256 m; m < 1 + (r & 1); ++m) {
            uint256 flags = (fresh && m == 0 ? 1 : 0) | (anyNesting ? 2 : 0);
            _nestParty(terms, nested, (r >> (8 + 8 * m)) % nested.length, r >> (32 + 8 * m), self, flags);
        }
    }

    /// @dev Party `i` nested in the first agreement from `start` on (one that can settle, if any) that
    /// `_nest` accepts.
    function _nestParty(
        IAllianceLedger.Terms memory terms,
        bytes32[] memory nested,
        uint256 i,
        uint256 start,
        bytes32 self,
        uint256 flags
    ) internal view {
        uint256 count = agreementIds.length;
        for (uint256 pass; pass < 2; ++pass) {
            for (uint256 c; c < count; ++c) {
                bytes32 candidate = agreementIds[(start + c) % count];
                if (candidate == self || pass == 0 && !_canSettle(candidate, 1)) continue;
                if (_nest(terms, nested, i, candidate, self, flags)) return;
            }
        }
    }

    /// @dev Party `i` nested in `candidate` if the token matches (or may be taken: `flags` bit 0) and,
    /// unless any nesting goes (`flags` bit 1), the ledger's rules allow it.
    function _nest(
        IAllianceLedger.Terms memory terms,
        bytes32[] memory nested,
        uint256 i,
        bytes32 candidate,
        bytes32 self,
        uint256 flags
    ) internal view returns (bool) {
        address token = _agreements[candidate].token;
        if (token != terms.token) {
            if (flags & 1 == 0) return false;
            terms.token = token;
        }
        nested[i] = candidate;
        if (flags & 2 != 0 || _nestingError(self, nested) == bytes4(0)) return true;
        nested[i] = bytes32(0);
        return false;
    }

    function _anyNested(bytes32[] memory nested) internal pure returns (bool) {
        for (uint256 i; i < nested.length; ++i) {
            if (nested[i] != bytes32(0)) return true;
        }
        return false;
    }

    /// @dev The error the ledger's nesting walk gives `nested` for agreement `root` over the inner
    /// alliances in force (AllianceLedgerShapes._checkNesting, on the ghost graph): bytes4(0) if none.
    function _nestingError(bytes32 root, bytes32[] memory nested) internal view returns (bytes4) {
        for (uint256 i; i < nested.length; ++i) {
            bytes32 inner = nested[i];
            if (inner == bytes32(0)) continue;
            if (inner == root) return IAllianceLedger.AgreementNestingCycle.selector;
            bytes4 err = _walkNesting(root, inner, 1);
            if (err != bytes4(0)) return err;
        }
        return bytes4(0);
    }

    function _walkNesting(bytes32 root, bytes32 id, uint256 level) internal view returns (bytes4) {
        bytes32[] storage below = _inner[id];
        if (below.length == 0) return bytes4(0);
        for (uint256 j; j < below.length; ++j) {
            if (below[j] == root) return IAllianceLedger.AgreementNestingCycle.selector;
        }
        if (level + 1 > MAX_NESTING_DEPTH) return IAllianceLedger.AgreementNestingTooDeep.selector;
        for (uint256 j; j < below.length; ++j) {
            bytes4 err = _walkNesting(root, below[j], level + 1);
            if (err != bytes4(0)) return err;
        }
        return bytes4(0);
    }

    /// @dev Books the activation of `terms` for `id`: the inner alliances in force, the largest recoup.
    function _bookActivation(bytes32 id, IAllianceLedger.Terms memory terms) internal {
        delete _inner[id];
        for (uint256 i; i < terms.nested.length; ++i) {
            bytes32 inner = terms.nested[i];
            if (inner == bytes32(0)) continue;
            bool seen;
            for (uint256 j; j < _inner[id].length; ++j) {
                seen = seen || _inner[id][j] == inner;
            }
            if (!seen) _inner[id].push(inner);
        }
        if (terms.recoup > maxRecoupOf[id]) maxRecoupOf[id] = terms.recoup;
    }

    /// @dev Whether a batch of `id` can be accepted as far as the agreements go: active, no dissolved
    /// party, and the same for every inner alliance it may forward to (at most MAX_NESTING_DEPTH deep).
    function _canSettle(bytes32 id, uint256 depth) internal view returns (bool) {
        GhostAgreement storage g = _agreements[id];
        if (depth > MAX_NESTING_DEPTH || g.status != IAllianceLedger.AgreementStatus.Active) return false;
        IAllianceLedger.Terms memory terms = _termsOf(id, g.active);
        if (_anyDissolved(terms.parties)) return false;
        for (uint256 i; i < terms.nested.length; ++i) {
            if (terms.nested[i] != bytes32(0) && !_canSettle(terms.nested[i], depth + 1)) return false;
        }
        return true;
    }

    function _setTerms(bytes32 id, uint32 version, IAllianceLedger.Terms memory terms) internal {
        _termsData[id][version] = abi.encode(terms);
    }

    /// @dev The terms of `version` (empty terms when none were recorded).
    function _termsOf(bytes32 id, uint32 version) internal view returns (IAllianceLedger.Terms memory terms) {
        bytes memory data = _termsData[id][version];
        if (data.length != 0) terms = abi.decode(data, (IAllianceLedger.Terms));
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

    /// @dev Seven times in eight an active agreement without a dissolved party (nor one in the inner
    /// alliances it forwards to), if there is one (so that
    /// most batches can be accepted); otherwise any agreement.
    function _pickLive(uint256 seed) internal view returns (bytes32 id, GhostAgreement storage ghost) {
        uint256 n = agreementIds.length;
        if (n != 0 && seed % 8 != 0) {
            for (uint256 a; a < n; ++a) {
                bytes32 candidate = agreementIds[(seed >> 3) % n + a < n ? (seed >> 3) % n + a : (seed >> 3) % n + a - n];
                GhostAgreement storage g = _agreements[candidate];
                if (_canSettle(candidate, 0)) return (candidate, g);
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

    /// @dev A period for an event: seven times in eight an open one (if any; open in the inner alliances
    /// in force too, if there is one), otherwise any of the four.
    function _period(bytes32 id, uint256 seed) internal view returns (uint32) {
        uint32 p = uint32(bound(seed, 1, PERIODS));
        if (seed >> 128 & 7 == 0) return p;
        uint32 open;
        for (uint32 i; i < PERIODS; ++i) {
            uint32 q = (p + i - 1) % PERIODS + 1;
            if (periodClosed[id][q]) continue;
            if (_openBelow(id, q, 0)) return q;
            if (open == 0) open = q;
        }
        return open != 0 ? open : p;
    }

    /// @dev Whether every inner alliance in force below `id` has `period` open.
    function _openBelow(bytes32 id, uint32 period, uint256 depth) internal view returns (bool) {
        if (depth > MAX_NESTING_DEPTH) return true;
        bytes32[] storage inner = _inner[id];
        for (uint256 j; j < inner.length; ++j) {
            if (periodClosed[inner[j]][period] || !_openBelow(inner[j], period, depth + 1)) return false;
        }
        return true;
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
