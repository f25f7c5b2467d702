// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {AllianceLedger} from "../../contracts/AllianceLedger.sol";
import {IAllianceLedger} from "../../contracts/interfaces/IAllianceLedger.sol";
import {FeeOnTransferToken} from "../../contracts/test/FeeOnTransferToken.sol";
import {LedgerTestToken} from "../../contracts/tokens/LedgerTestToken.sol";
import {bound, vm} from "../base/Test.sol";
import {SplitReference} from "../reference/SplitReference.sol";

/// @title LedgerHandler
/// @notice The actor forge's invariant fuzzer drives: every external non-view function here is one
/// action (forge calls them in random order with random arguments). Each action plays a role with
/// `vm.prank`, predicts from the ghost state whether the ledger must accept or refuse the call, makes
/// it, and books the outcome in the ghost state the invariants compare the ledger with.
///
/// Adding an action: write an `act*` function with the `action` modifier that bounds its seeds, calls
/// the ledger through try/catch,
/// calls `_violation` when the outcome contradicts the prediction and updates the ghosts on success.
/// Nothing else needs registering (the invariant test targets every action of this contract).
///
/// Ghost state, kept by the handler independently of the ledger:
/// - per ME and token: what the reference split (SplitReference, one event at a time) credited, what
///   the payout actually received on withdrawal, and the documented rounding bound (the sum of
///   floor(part * share / 10,000) over every part, and the number of parts with a non-zero share);
/// - per agreement: status, latest and active versions with their terms, the sequence cursor, each
///   period's revenue and whether it is closed; per (agreement, reference) how often it was credited;
/// - per token: tokens sent to the ledger without settlement (donations);
/// - `violations`: calls whose outcome contradicted the prediction (an unauthorised call that went
///   through, a retried batch accepted, a valid call refused), with the first one described.
contract LedgerHandler {
    uint256 internal constant BPS = 10_000;
    uint256 public constant MAX_MES = 10;
    uint256 public constant MAX_AGREEMENTS = 6;
    uint32 public constant PERIODS = 4;
    uint256 public constant MAX_BATCH = 6;

    AllianceLedger public immutable ledger;
    address public immutable admin;
    address public immutable platform;
    address public immutable finance;
    address public immutable attacker;
    address[] public tokens; // tokens[0], tokens[1]: plain ERC-20s; tokens[2]: fee on transfer
    address public immutable feeToken;

    // -- MEs ------------------------------------------------------------------------------------------
    uint32 public meCount;
    mapping(uint32 meId => uint256) public signerKey;
    mapping(uint32 meId => address) public payoutOf;
    mapping(uint32 meId => address) public signerOf;
    mapping(uint32 meId => bool) public dissolved;
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

    // The last batch the ledger accepted, for the retry action.
    bytes32 private _lastId;
    uint32 private _lastVersion;
    uint64 private _lastFirstSeq;
    bytes32[] private _lastRefs;
    uint256[] private _lastEntries;

    // -- money ----------------------------------------------------------------------------------------
    mapping(uint32 meId => mapping(address token => uint256)) public credited; // by the reference split
    mapping(uint32 meId => mapping(address token => uint256)) public received; // by payouts, on withdraw
    mapping(uint32 meId => mapping(address token => uint256)) public floorSum; // sum of floor(part*share/BPS)
    mapping(uint32 meId => mapping(address token => uint256)) public parts; // parts with a non-zero share
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
        tokens.push(address(new LedgerTestToken("Eighteen", "EIG", 18, address(this), address(this))));
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
        for (uint256 i; i < 6; ++i) {
            _register(0, 0);
        }
    }

    /// @dev Every action carries this modifier: it counts the calls (the invariant test runs the full
    /// checks every FULL_CHECK_EVERY calls and the cheap ones after every call).
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

    function actRegisterME(uint256 seed) external action {
        if (meCount >= MAX_MES) return;
        _register(seed, seed >> 8);
    }

    /// @notice A new payout (and, two times in three, a new signer) with the current signer's EIP-712
    /// consent; a quarter of the time the consent is signed by someone else and must be refused.
    function actUpdateME(uint256 meSeed, uint256 forgeSeed) external action {
        uint32 meId = uint32(bound(meSeed, 1, meCount));
        // A third of the updates keep the signer (a new payout only): replaying such a consent is refused
        // only because its nonce is spent.
        uint256 newKey = (forgeSeed >> 8) % 3 == 0 ? signerKey[meId] : _newKey();
        address newPayout = vm.addr(_newKey());
        address newSigner = vm.addr(newKey);
        IAllianceLedger.ME memory me = ledger.meOf(meId);
        bool forged = forgeSeed % 4 == 0;
        uint256 key = forged ? _newKey() : signerKey[meId];
        bytes memory consent = _sign(key, ledger.meUpdateDigest(meId, newPayout, newSigner, me.nonce));
        vm.prank(platform);
        try ledger.updateME(meId, newPayout, newSigner, consent) {
            if (forged) return _violation("updateME accepted a consent not signed by the ME's signer");
            signerKey[meId] = newKey;
            signerOf[meId] = newSigner;
            payoutOf[meId] = newPayout;
            (_lastConsentMe, _lastConsentPayout, _lastConsentSigner, _lastConsent) =
                (meId, newPayout, newSigner, consent);
            accepted["updateME"]++;
        } catch (bytes memory err) {
            if (!forged) return _unexpected("updateME", err);
            _expectError("updateME forged", err, IAllianceLedger.MEConsentInvalid.selector);
        }
    }

    /// @notice The last accepted consent submitted again: its nonce is spent.
    function actReplayConsent() external action {
        if (_lastConsentMe == 0) return;
        vm.prank(platform);
        try ledger.updateME(_lastConsentMe, _lastConsentPayout, _lastConsentSigner, _lastConsent) {
            _violation("updateME accepted a replayed consent");
        } catch (bytes memory err) {
            _expectError("updateME replay", err, IAllianceLedger.MEConsentInvalid.selector);
        }
    }

    function actDissolveME(uint256 meSeed) external action {
        if (_activeMEs().length <= 3) return; // keep enough MEs to form agreements
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
        bytes32 id = keccak256(abi.encode("agreement", agreementIds.length + 1));
        IAllianceLedger.Terms memory terms = _newTerms(seed, tokens[seed % tokens.length]);
        if (terms.parties.length == 0) return;
        agreementIds.push(id);
        GhostAgreement storage ghost = _agreements[id];
        if (seed & 0x100 == 0) {
            bytes[] memory sigs = _approvals(id, 1, terms, type(uint256).max);
            vm.prank(finance); // anyone may submit: the signatures are the authorisation
            try ledger.createAgreement(id, terms, sigs) {
                (ghost.token, ghost.status, ghost.latest, ghost.active) =
                    (terms.token, IAllianceLedger.AgreementStatus.Active, 1, 1);
                _setTerms(id, 1, terms);
                accepted["createAgreement"]++;
            } catch (bytes memory err) {
                agreementIds.pop();
                _unexpected("createAgreement", err);
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
    /// odd, one party's approval is signed by a stranger and the activation must be refused.
    function actActivateLatest(uint256 agreementSeed, uint256 forgeSeed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0) || ghost.latest == ghost.active) return;
        uint32 version = ghost.latest;
        IAllianceLedger.Terms memory terms = _termsOf(id, version);
        uint256 forgedIndex = forgeSeed % 2 == 1 ? (forgeSeed >> 1) % terms.parties.length : type(uint256).max;
        bytes[] memory sigs = _approvals(id, version, terms, forgedIndex);
        bool partyGone = _anyDissolved(terms.parties);
        bool mustFail =
            ghost.status == IAllianceLedger.AgreementStatus.Terminated || partyGone || forgedIndex != type(uint256).max;
        vm.prank(finance);
        try ledger.activateAgreement(id, version, terms, sigs) {
            if (mustFail) return _violation("activateAgreement accepted a forged approval or a dissolved party");
            ghost.status = IAllianceLedger.AgreementStatus.Active;
            ghost.active = version;
            accepted["activateAgreement"]++;
        } catch (bytes memory err) {
            if (!mustFail) return _unexpected("activateAgreement", err);
            if (ghost.status == IAllianceLedger.AgreementStatus.Terminated) return;
            // Parties are checked in order: the first dissolved party or forged approval is reported.
            bytes4 got = err.length < 4 ? bytes4(0) : bytes4(err);
            if (partyGone && got == IAllianceLedger.AgreementPartyDissolved.selector) return;
            _expectError("activate forged or dissolved", err, IAllianceLedger.AgreementSignatureInvalid.selector);
        }
    }

    /// @notice Every party of the version in force signs the termination (one call in four; a forged
    /// signature otherwise half the time, which must be refused).
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
        vm.prank(finance);
        try ledger.terminateAgreement(id, terms, sigs) {
            if (forged) return _violation("terminateAgreement accepted a forged signature");
            ghost.status = IAllianceLedger.AgreementStatus.Terminated;
            accepted["terminateAgreement"]++;
        } catch (bytes memory err) {
            if (!forged) return _unexpected("terminateAgreement", err);
            _expectError("terminate forged", err, IAllianceLedger.AgreementSignatureInvalid.selector);
        }
    }

    // =================================================================================================
    // Settlement
    // =================================================================================================

    /// @notice A batch of 1..6 events at the cursor, over random periods (closed ones included) and
    /// amounts from 1 unit to 2**96. Refused exactly when the agreement is not active, a party is
    /// dissolved, a period is closed, or the token delivers less than the total.
    function actSettle(uint256 agreementSeed, uint256 countSeed, uint256 amountSeed, uint256 periodSeed) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0)) return;
        uint256 count = bound(countSeed, 1, MAX_BATCH);
        bytes32[] memory refs = new bytes32[](count);
        uint256[] memory entries = new uint256[](count);
        uint256 total;
        bool closed;
        for (uint256 k; k < count; ++k) {
            uint256 amount = _amount(uint256(keccak256(abi.encode(amountSeed, k))));
            uint32 period = uint32(bound(uint256(keccak256(abi.encode(periodSeed, k))), 1, PERIODS));
            refs[k] = _newRef();
            entries[k] = amount << 32 | period;
            total += amount;
            closed = closed || periodClosed[id][period];
        }
        _settle(id, ghost, ghost.cursor, refs, entries, total, closed);
    }

    /// @notice The last accepted batch submitted again (a client retrying after a lost reply): the
    /// cursor has moved, so it must be refused.
    function actRetryLastBatch() external action {
        if (_lastRefs.length == 0) return;
        IAllianceLedger.Terms memory terms = _termsOf(_lastId, _lastVersion);
        _fund(terms.token, _sum(_lastEntries));
        vm.prank(finance);
        try ledger.settle(_lastId, _lastVersion, _lastFirstSeq, terms, _lastRefs, _lastEntries) {
            for (uint256 k; k < _lastRefs.length; ++k) {
                _countCredit(_lastId, _lastRefs[k]);
            }
            _violation("a retried batch was settled again");
        } catch (bytes memory err) {
            GhostAgreement storage ghost = _agreements[_lastId];
            if (ghost.active != _lastVersion || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
            _expectError("retry", err, IAllianceLedger.SettlementOutOfSequence.selector);
        }
    }

    /// @notice A batch built from a stale (or future) cursor, as a second client that read the cursor
    /// before the first one settled: it must be refused.
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
        vm.prank(finance);
        try ledger.settle(id, ghost.active, firstSeq, terms, refs, entries) {
            _countCredit(id, refs[0]);
            _violation("a batch with a stale or future cursor was settled");
        } catch (bytes memory err) {
            _expectError("stale cursor", err, IAllianceLedger.SettlementOutOfSequence.selector);
        }
    }

    /// @notice Malformed batches at the right cursor: each must be refused with its error.
    function actSettleMalformed(uint256 agreementSeed, uint256 kind) external action {
        (bytes32 id, GhostAgreement storage ghost) = _pick(agreementSeed);
        if (id == bytes32(0) || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
        if (_anyDissolved(_termsOf(id, ghost.active).parties)) return;
        kind = kind % 5;
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
        } else {
            version = ghost.latest + 1; // a version that does not exist
            expected = IAllianceLedger.AgreementVersionNotActive.selector;
        }
        IAllianceLedger.Terms memory terms = _termsOf(id, ghost.active);
        _fund(terms.token, 1e30);
        vm.prank(finance);
        try ledger.settle(id, version, ghost.cursor, terms, refs, entries) {
            _violation("a malformed batch was settled");
        } catch (bytes memory err) {
            _expectError("malformed batch", err, expected);
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
    // Balances
    // =================================================================================================

    function actWithdraw(uint256 meSeed, uint256 tokenSeed) external action {
        uint32 meId = uint32(bound(meSeed, 1, meCount));
        address token = tokens[tokenSeed % tokens.length];
        address payout = payoutOf[meId];
        uint256 owed = credited[meId][token] - received[meId][token];
        uint256 before = LedgerTestToken(token).balanceOf(payout);
        vm.prank(payout);
        try ledger.withdraw(meId, token) returns (uint256 amount) {
            if (owed == 0) return _violation("withdraw paid an ME that was owed nothing");
            uint256 got = LedgerTestToken(token).balanceOf(payout) - before;
            if (amount != owed || token != feeToken && got != amount) {
                _violation("withdraw paid another amount than the ME was owed");
            }
            received[meId][token] += amount;
            accepted["withdraw"]++;
        } catch (bytes memory err) {
            if (owed != 0) return _unexpected("withdraw", err);
            _expectError("withdraw nothing", err, IAllianceLedger.NothingToWithdraw.selector);
        }
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
        kind = kind % 10;
        address caller = seed % 2 == 0 ? attacker : (kind < 3 ? finance : platform);
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
        } else if (kind == 3 || kind == 4) {
            (bytes32 id, GhostAgreement storage ghost) = _pick(seed >> 16);
            if (id == bytes32(0) || ghost.status != IAllianceLedger.AgreementStatus.Active) return;
            if (kind == 3) {
                bytes32[] memory refs = new bytes32[](1);
                uint256[] memory entries = new uint256[](1);
                refs[0] = _newRef();
                uint32 open = _openPeriod(id);
                if (open == 0) return;
                entries[0] = uint256(1_000) << 32 | open;
                vm.prank(caller);
                try ledger.settle(id, ghost.active, ghost.cursor, _termsOf(id, ghost.active), refs, entries) {
                    ok = true;
                } catch {}
            } else {
                vm.prank(caller);
                try ledger.closePeriod(id, 1) {
                    ok = true;
                } catch {}
            }
        } else if (kind == 5) {
            address token = tokens[seed % 2];
            if (credited[meId][token] == received[meId][token]) return;
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
        } else {
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

    /// @notice Conservation, per token: totalOwed == the sum of every ME's balance.
    function checkOwedIsSumOfBalances() external view {
        for (uint256 t; t < tokens.length; ++t) {
            address token = tokens[t];
            uint256 sum;
            for (uint32 meId = 1; meId <= meCount; ++meId) {
                sum += ledger.balanceOf(meId, token);
            }
            _eq(ledger.totalOwed(token), sum, "conservation: totalOwed == sum of balances");
        }
    }

    /// @notice No balance without settlement: what each ME holds plus what it withdrew is exactly what
    /// the reference split credited it. Rounding: that lies within the documented bound, between the sum
    /// of floor(part * share / 10,000) and that sum plus one unit per part with a non-zero share.
    function checkBalancesAndRounding() external view {
        for (uint256 t; t < tokens.length; ++t) {
            address token = tokens[t];
            for (uint32 meId = 1; meId <= meCount; ++meId) {
                uint256 total = ledger.balanceOf(meId, token) + received[meId][token];
                _eq(total, credited[meId][token], "no balance without settlement: balance + withdrawn == reference");
                uint256 floors = floorSum[meId][token];
                if (total < floors) _eq(total, floors, "rounding: below floor(part * share) summed");
                if (total > floors + parts[meId][token]) {
                    _eq(total, floors + parts[meId][token], "rounding: more than one unit per part above the floor");
                }
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
    /// accepted events, so a closed period's revenue never moves.
    function checkPeriods() external view {
        for (uint256 a; a < agreementIds.length; ++a) {
            bytes32 id = agreementIds[a];
            for (uint32 p = 1; p <= PERIODS; ++p) {
                IAllianceLedger.Period memory period = ledger.periodOf(id, p);
                if (period.closed != periodClosed[id][p]) revert("closed periods stay closed (and open ones open)");
                _eq(period.revenue, periodRevenue[id][p], "period revenue == the sum of its settled events");
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

    function _settle(
        bytes32 id,
        GhostAgreement storage ghost,
        uint64 firstSeq,
        bytes32[] memory refs,
        uint256[] memory entries,
        uint256 total,
        bool closedPeriod
    ) internal {
        uint32 version = ghost.active;
        IAllianceLedger.Terms memory terms = _termsOf(id, version);
        bool mustFail = ghost.status != IAllianceLedger.AgreementStatus.Active || closedPeriod
            || _anyDissolved(terms.parties) || (ghost.token == feeToken && total / 100 != 0);
        _fund(ghost.token, total);
        vm.prank(finance);
        try ledger.settle(id, version, firstSeq, terms, refs, entries) returns (uint256 settled) {
            if (mustFail) {
                return _violation("settle accepted a batch for an inactive agreement, a dissolved party, a closed period or short delivery");
            }
            if (settled != total) _violation("settle returned another total than the batch's");
            _book(id, terms, firstSeq, entries);
            for (uint256 k; k < refs.length; ++k) {
                _countCredit(id, refs[k]);
            }
            ghost.cursor = firstSeq + uint64(entries.length);
            (_lastId, _lastVersion, _lastFirstSeq, _lastRefs, _lastEntries) = (id, version, firstSeq, refs, entries);
            accepted["settle"]++;
        } catch (bytes memory err) {
            if (!mustFail) return _unexpected("settle", err);
        }
    }

    /// @dev Books an accepted batch in the ghosts, one event at a time with the reference split.
    function _book(bytes32 id, IAllianceLedger.Terms memory terms, uint64 firstSeq, uint256[] memory entries) internal {
        uint16[] memory excessShares = _excessShares(terms);
        for (uint256 k; k < entries.length; ++k) {
            uint256 amount = entries[k] >> 32;
            uint32 period = uint32(entries[k]);
            uint256 revenue = periodRevenue[id][period];
            uint256[] memory credits = SplitReference.splitEvent(
                firstSeq + k, amount, revenue, terms.shares, _target(terms), excessShares
            );
            (uint256 base, uint256 excess) = SplitReference.tierParts(revenue, amount, _target(terms));
            _bookCredits(terms, credits, base, excess, excessShares);
            periodRevenue[id][period] = revenue + amount;
        }
    }

    function _bookCredits(
        IAllianceLedger.Terms memory terms,
        uint256[] memory credits,
        uint256 base,
        uint256 excess,
        uint16[] memory excessShares
    ) internal {
        for (uint256 i; i < terms.parties.length; ++i) {
            uint32 meId = terms.parties[i];
            credited[meId][terms.token] += credits[i];
            _bound(meId, terms.token, base, terms.shares, i);
            if (excess != 0) _bound(meId, terms.token, excess, excessShares, i);
        }
    }

    /// @dev The documented rounding bound of one part: floor(part * share / BPS), plus at most one unit
    /// when the share is not zero.
    function _bound(uint32 meId, address token, uint256 part, uint16[] memory shares, uint256 i) internal {
        if (part == 0) return;
        floorSum[meId][token] += part * shares[i] / BPS;
        if (shares[i] != 0) parts[meId][token] += 1;
    }

    function _countCredit(bytes32 id, bytes32 ref) internal {
        uint256 times = ++creditedTimes[id][ref];
        if (times > maxCreditedTimes) maxCreditedTimes = times;
    }

    function _register(uint256 seed, uint256 parentSeed) internal {
        uint256 key = _newKey();
        address payout = vm.addr(_newKey());
        uint32 parent = meCount == 0 || seed % 3 != 0 ? 0 : uint32(bound(parentSeed, 1, meCount));
        string memory name = string.concat("me-", vm.toString(uint256(meCount) + 1));
        vm.prank(platform);
        try ledger.registerME(name, payout, vm.addr(key), parent) returns (uint32 meId) {
            if (meId != meCount + 1) return _violation("registerME skipped an id");
            meCount = meId;
            signerKey[meId] = key;
            signerOf[meId] = vm.addr(key);
            payoutOf[meId] = payout;
            accepted["registerME"]++;
        } catch (bytes memory err) {
            _unexpected("registerME", err);
        }
    }

    /// @dev Terms over 2..4 active MEs (ascending), random shares summing to 10,000 (zero shares
    /// included), and a target with an excess table two times in three. Empty when too few are active.
    /// @dev The `current` argument of `proposeAgreement` for the platform, which needs none.
    function _noTerms() internal pure returns (IAllianceLedger.Terms memory none) {}

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

    function _pick(uint256 seed) internal view returns (bytes32 id, GhostAgreement storage ghost) {
        uint256 n = agreementIds.length;
        if (n != 0) id = agreementIds[seed % n];
        ghost = _agreements[id];
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
