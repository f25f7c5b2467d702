// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ME Alliance Ledger
/// @notice Micro-enterprise (ME) identities, alliance agreements signed by every party, exactly-once
/// settlement of revenue events into per-ME balances, and pull withdrawals.
/// @dev Invariant, for every token: `token.balanceOf(ledger) >= totalOwed(token) == sum of the MEs'
/// balances`, `totalDebt(token) == sum of the MEs' debts`, and no ME has both a balance and a debt in
/// one token (equality with the holdings unless someone sends tokens to the ledger without settling
/// them). Debts are what MEs owe finance, not tokens the ledger owes: they never lower the holdings.
///
/// Rounding rule ("rotating systematic rounding"). A part `a` of a revenue event (the part below the
/// period target, or the part above it) is split over a share table s_1..s_n (basis points, sum 10,000)
/// by cumulative floors shifted by an offset:
///     credit_i = floor((o + a * S_i) / 10_000) - floor((o + a * S_(i-1)) / 10_000),  S_i = s_1 + ... + s_i
///     o        = (seq * 6_181) mod 10_000,  seq = the event's sequence number in its agreement
/// The credits add up to `a` exactly (S_n = 10,000 and o < 10,000); each party receives
/// floor(a * s_i / 10,000) or one unit more; a party with a zero share receives nothing. Because the
/// offset walks the unit interval by the golden-ratio step, the extra units rotate among the parties in
/// proportion to their shares, so splitting revenue into many tiny events does not shift value to a
/// majority party (the low-decimal rounding issue reported in the 0xSplits v2 audit). The offset is public:
/// whoever chooses each event's amount knowing its sequence number (the finance role) could steer the
/// rounding unit of each event, less than one base unit per event; finance is trusted to report revenue
/// as it happened.
///
/// Exactly-once. Each agreement has a sequence cursor. A batch names the sequence number of its first
/// event and is accepted only if it equals the cursor, which then advances by the batch size. A retried,
/// re-submitted or concurrently submitted batch therefore reverts with `SettlementOutOfSequence`; a
/// client that reads the cursor and the settled references (from `RevenueSettled`) before submitting
/// can never credit a reference twice, because any batch settled in between moves the cursor.
///
/// Reversals (`settleReversals`). A reversal has a reference of its own and takes the next sequence
/// number of the same cursor, a positive amount `x` and the period it is booked in (open). With the
/// period's revenue so far `R` and target `T`, it un-books the top `x` of the period's revenue: the part
/// above the target, `min(x, max(0, R - T))`, is debited by the excess table, the rest by the base table,
/// each part split by the same rotating rounding with the reversal's own sequence number; the period's
/// revenue becomes `R - min(x, R)`. The debits add up to `x` exactly. A party's debit comes out of its
/// balance; what the balance does not cover becomes the party's debt (`DebtIncurred`). Debts are netted
/// from the party's next credits before they become withdrawable (`DebtNetted`): finance pays in only
/// the credits not netted. What balances cover goes back to the caller (finance) at once.
/// The link to the reversed event (it exists, belongs to the same agreement, and the reversals of it
/// together never exceed it) is not stored on chain: the client checks it from the logs before sending,
/// and `ledger audit` checks it from the logs (`RevenueReversed` carries every original reference).
interface IAllianceLedger {
    // ------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------

    enum MEStatus {
        None,
        Active,
        Dissolved
    }

    enum AgreementStatus {
        None,
        Proposed,
        Active,
        Terminated
    }

    /// @notice The terms of one agreement version. Parties are ME ids in strictly ascending order.
    /// @param token the ERC-20 settlement token (the same for every version of an agreement)
    /// @param parties ME ids, strictly ascending, 2 to MAX_PARTIES of them
    /// @param shares basis points per party for revenue up to the period target; sum 10,000
    /// @param target per-period revenue target in token base units; 0 when the agreement has no tier
    /// @param excessShares basis points per party for revenue above the target; sum 10,000, or empty
    /// when target is 0
    struct Terms {
        address token;
        uint32[] parties;
        uint16[] shares;
        uint128 target;
        uint16[] excessShares;
    }

    struct ME {
        address payout;
        uint32 parent;
        MEStatus status;
        uint32 nonce;
        address signer;
        string name;
    }

    struct Agreement {
        address token;
        AgreementStatus status;
        uint32 activeVersion;
        uint32 latestVersion;
        uint64 nextSeq;
    }

    struct Period {
        uint128 revenue;
        bool closed;
    }

    // ------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------

    error LedgerZeroAddress(string field);

    error MENameInvalid(string name);
    error MENameTaken(string name, uint32 meId);
    error MEUnknown(uint32 meId);
    error MENotActive(uint32 meId, MEStatus status);
    /// @notice A key signer's consent does not recover to it (`recovered`: the key that did sign, or 0).
    error MEConsentInvalid(uint32 meId, address recovered, address signer);
    error MEBatchInvalid(uint256 names, uint256 payouts, uint256 signers, uint256 parents);
    /// @notice The ME's signer is a contract (a Safe) and its ERC-1271 `isValidSignature` refused the
    /// consent now (no key can be recovered from a contract signature, so none is named).
    error MEConsentRefused(uint32 meId, address signer);

    error AgreementIdInvalid();
    error AgreementBatchInvalid(uint256 agreementIds, uint256 terms);
    error AgreementExists(bytes32 agreementId);
    error AgreementUnknown(bytes32 agreementId);
    error AgreementNotActive(bytes32 agreementId, AgreementStatus status);
    error AgreementTerminated(bytes32 agreementId);
    error AgreementPartyCount(uint256 count, uint256 min, uint256 max);
    error AgreementTableLength(uint256 parties, uint256 shares);
    error AgreementSharesSum(bool excessTable, uint256 sum);
    error AgreementTierInvalid(uint128 target, uint256 excessShares);
    error AgreementDuplicateParty(uint32 meId);
    error AgreementPartiesUnordered(uint32 previous, uint32 meId);
    error AgreementTokenChanged(address token, address proposed);
    error AgreementProposerNotParty(address caller);
    error AgreementProposerNotCurrentParty(bytes32 agreementId, uint32 currentVersion, address caller);
    error AgreementVersionUnknown(bytes32 agreementId, uint32 version, uint32 latest);
    error AgreementVersionSuperseded(bytes32 agreementId, uint32 version, uint32 active);
    error AgreementVersionNotActive(bytes32 agreementId, uint32 version, uint32 active);
    error AgreementVersionAlreadyActive(bytes32 agreementId, uint32 version);
    error AgreementTermsMismatch(bytes32 agreementId, uint32 version);
    error AgreementSignatureCount(uint256 parties, uint256 signatures);
    /// @notice A key signer's signature does not recover to it (`recovered`: the key that did sign, or 0).
    error AgreementSignatureInvalid(bytes32 agreementId, uint32 version, uint32 meId, address recovered);
    /// @notice The party's signer is a contract (a Safe) and its ERC-1271 `isValidSignature` refused the
    /// signature when this transaction ran.
    error AgreementSignatureRefused(bytes32 agreementId, uint32 version, uint32 meId, address signer);
    error AgreementPartyDissolved(bytes32 agreementId, uint32 meId);

    error SettlementBatchInvalid(bytes32 agreementId, uint256 refs, uint256 entries);
    error SettlementOutOfSequence(bytes32 agreementId, uint64 expected, uint64 given);
    error RevenueAmountInvalid(bytes32 agreementId, uint64 seq, uint256 amount);
    error RevenueReferenceEmpty(bytes32 agreementId, uint64 seq);
    error PeriodInvalid(bytes32 agreementId, uint64 seq);
    error PeriodAlreadyClosed(bytes32 agreementId, uint32 period);
    error ReversalBatchInvalid(bytes32 agreementId, uint256 refs, uint256 originals);
    error ReversalOriginalEmpty(bytes32 agreementId, uint64 seq);
    error AccountOverflow(uint32 meId, address token);
    error TokenTransferShortfall(address token, uint256 expected, uint256 received);

    error WithdrawCallerNotPayout(uint32 meId, address caller, address payout);
    error NothingToWithdraw(uint32 meId, address token);
    error PayoutBatchEmpty(address token);

    // ------------------------------------------------------------------------------------------------
    // Events: together they rebuild the whole history from logs alone
    // ------------------------------------------------------------------------------------------------

    event MERegistered(uint32 indexed meId, string name, address payout, address signer, uint32 parent);
    /// @notice The ME's payout and signer changed, with the consent of its previous signer.
    event MEUpdated(uint32 indexed meId, address payout, address signer, uint32 nonce);
    event MEDissolved(uint32 indexed meId);

    /// @notice A version of an agreement was proposed: its full terms and their EIP-712 struct hash.
    event AgreementProposed(
        bytes32 indexed agreementId, uint32 indexed version, bytes32 termsHash, Terms terms, address proposer
    );
    /// @notice Every party's signer approved `version`; it replaces the previous active version.
    /// `signatures[i]` is the EIP-712 `Approval` signature of the signer of `terms.parties[i]`.
    event AgreementActivated(bytes32 indexed agreementId, uint32 indexed version, bytes[] signatures);
    /// @notice Every party of the version in force agreed to end the agreement.
    event AgreementEnded(bytes32 indexed agreementId, uint32 indexed version, bytes[] signatures);

    /// @notice A batch of revenue events was settled. Event `k` has sequence number `firstSeq + k`,
    /// reference `refs[k]` and `entries[k] = amount << 32 | period`.
    event RevenueSettled(
        bytes32 indexed agreementId, uint32 indexed version, uint64 firstSeq, bytes32[] refs, uint256[] entries
    );
    /// @notice What each party (in the order of the version's `parties`) was credited by the run of
    /// `count` consecutive events from `firstSeq`, all in `period`: below and above the target.
    event PartiesCredited(
        bytes32 indexed agreementId,
        uint32 indexed period,
        uint32 version,
        uint64 firstSeq,
        uint64 count,
        uint256[] baseCredits,
        uint256[] excessCredits
    );
    /// @notice A batch of reversals was settled. Reversal `k` has sequence number `firstSeq + k`, its own
    /// reference `refs[k]`, `entries[k] = amount << 32 | period` (the period it is booked in) and reverses
    /// the event with reference `originals[k]`.
    event RevenueReversed(
        bytes32 indexed agreementId,
        uint32 indexed version,
        uint64 firstSeq,
        bytes32[] refs,
        uint256[] entries,
        bytes32[] originals
    );
    /// @notice What each party (in the order of the version's `parties`) was debited by the run of
    /// `count` consecutive reversals from `firstSeq`, all booked in `period`: below and above the target.
    event PartiesDebited(
        bytes32 indexed agreementId,
        uint32 indexed period,
        uint32 version,
        uint64 firstSeq,
        uint64 count,
        uint256[] baseDebits,
        uint256[] excessDebits
    );
    /// @notice A debit larger than the ME's balance: the balance went to 0 and `amount` became debt.
    event DebtIncurred(uint32 indexed meId, address indexed token, uint256 amount);
    /// @notice `amount` of a credit to the ME repaid its debt instead of reaching its balance (the run of
    /// the `PartiesCredited` event that follows in the same transaction).
    event DebtNetted(uint32 indexed meId, address indexed token, uint256 amount);
    event PeriodClosed(bytes32 indexed agreementId, uint32 indexed period, uint128 revenue);
    /// @notice An ME's balance left the ledger to its payout address `to`: by `withdraw`, or paid by a
    /// `payout` run.
    event Withdrawn(uint32 indexed meId, address indexed token, address to, uint256 amount);
    /// @notice A `payout` run could not pay the ME (its payout address reverted, or the token refused the
    /// transfer): the ME keeps `amount` as its balance, to be paid by a later run or withdrawn.
    event PayoutSkipped(uint32 indexed meId, address indexed token, address payout, uint256 amount);

    // ------------------------------------------------------------------------------------------------
    // ME registry
    // ------------------------------------------------------------------------------------------------

    /// @notice Registers an ME (platform role). `parent` is 0 or the id of the ME it was spawned from.
    function registerME(string calldata name, address payout, address signer, uint32 parent)
        external
        returns (uint32 meId);

    /// @notice Registers several MEs in one transaction (platform role), in order, each exactly as
    /// `registerME` would (an ME may name as parent one registered earlier in the same call). Reverts as a
    /// whole on the first refused one, or `MEBatchInvalid` when the arrays are empty or of unequal length.
    /// @return firstId the id of the first ME; the others follow consecutively
    function registerMEs(
        string[] calldata names,
        address[] calldata payouts,
        address[] calldata signers,
        uint32[] calldata parents
    ) external returns (uint32 firstId);

    /// @notice Changes an ME's payout and signer (platform role) with the consent of its current signer:
    /// an EIP-712 `MEUpdate(meId, payout, signer, nonce)` signature, checked like approvals (see
    /// {activateAgreement}: ECDSA for a key, ERC-1271 for a contract signer, now).
    function updateME(uint32 meId, address payout, address signer, bytes calldata consent) external;

    /// @notice Dissolves an ME (platform role). It keeps its balances and can still withdraw them.
    function dissolveME(uint32 meId) external;

    // ------------------------------------------------------------------------------------------------
    // Agreements
    // ------------------------------------------------------------------------------------------------

    /// @notice Proposes the first version of a new agreement, or an amendment (a new version) of an
    /// existing one. Caller: the platform role; or, for a new agreement, the signer of one of the proposed
    /// parties; or, for an existing agreement, the signer of one of its current parties: those of the
    /// version in force, or of the latest proposal while no version was ever activated. So an ME outside
    /// an alliance cannot add versions to it, even naming itself as a party.
    /// @param current the terms of that current version (checked against its commitment, reverting with
    /// `AgreementTermsMismatch`); read only when a non-platform caller proposes for an existing agreement,
    /// otherwise pass empty terms
    function proposeAgreement(bytes32 agreementId, Terms calldata terms, Terms calldata current)
        external
        returns (uint32 version);

    /// @notice Proposes version 1 of several new agreements, or new versions of existing ones, in one
    /// transaction (platform role), each exactly as `proposeAgreement` by the platform would. Reverts as a
    /// whole on the first refused one, or `AgreementBatchInvalid` when the arrays are empty or of unequal
    /// length.
    function proposeAgreements(bytes32[] calldata agreementIds, Terms[] calldata terms) external;

    /// @notice Activates a pending version with every party's EIP-712 `Approval` signature, in party
    /// order. Anyone may submit: the signatures are the authorisation. Any version newer than the one in
    /// force (any version, while none was ever activated) can be activated, so a later proposal never
    /// makes a fully signed version unusable. Activating a version supersedes the one in force and every
    /// older pending version: those can never be activated again (`AgreementVersionSuperseded`).
    ///
    /// A signature counts when it is an ECDSA signature of the digest by the party's signer, or, for a
    /// signer with code, when the signer's `isValidSignature(digest, signature)` (ERC-1271, through
    /// OpenZeppelin's `SignatureChecker`) accepts it. `AgreementSignatureInvalid` names the key that did
    /// sign; `AgreementSignatureRefused` says a contract signer refused. For a Safe the signature is its
    /// owners' signatures of the Safe's `SafeMessage` over the digest, checked by its fallback handler.
    /// A contract signature is revocable: it is checked when this transaction runs, against the
    /// contract's state then (for a Safe: its owners and threshold at that block). Owners changed after
    /// signing can make the collected signature worthless; a signature accepted here stays accepted (the
    /// activation happened), and nothing re-checks it later. An EIP-7702 delegated account has code and a
    /// key: its key's ECDSA signature counts as before the delegation, and otherwise its delegate is asked
    /// through ERC-1271.
    function activateAgreement(bytes32 agreementId, uint32 version, Terms calldata terms, bytes[] calldata signatures)
        external;

    /// @notice Proposes and activates version 1 of a new agreement in one transaction.
    function createAgreement(bytes32 agreementId, Terms calldata terms, bytes[] calldata signatures) external;

    /// @notice Ends an agreement with every party's EIP-712 `Termination` signature over the version in
    /// force (or the latest proposed one, if none was ever activated). Anyone may submit.
    function terminateAgreement(bytes32 agreementId, Terms calldata terms, bytes[] calldata signatures) external;

    // ------------------------------------------------------------------------------------------------
    // Settlement and balances
    // ------------------------------------------------------------------------------------------------

    /// @notice Settles a batch of revenue events under the active `version` (finance role), pulling the
    /// batch total less the parties' debts it repaid from the caller with `transferFrom` (returned). See the contract notes for the rounding rule and
    /// the exactly-once cursor.
    /// @param firstSeq must equal `agreementOf(agreementId).nextSeq`, the agreement's sequence cursor
    /// @param refs the finance system's reference of each event, non-zero
    /// @param entries `amount << 32 | period` per event; 0 < amount < 2**128, period > 0
    function settle(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries
    ) external returns (uint256 paidIn);

    /// @notice Settles a batch of reversals under the active `version` (finance role), on the same
    /// sequence cursor as `settle`. Debits the parties (see the contract notes), and pays back to the
    /// caller what their balances covered. The link to each original is checked off chain (see notes).
    /// @param firstSeq must equal the agreement's `nextSeq`
    /// @param refs each reversal's own reference, non-zero
    /// @param entries `amount << 32 | period` per reversal; 0 < amount < 2**128, period open
    /// @param originals the reference of the settled event each reversal reverses, non-zero
    /// @return returned the tokens sent back to the caller (the debits the balances covered)
    function settleReversals(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries,
        bytes32[] calldata originals
    ) external returns (uint256 returned);

    /// @notice Closes a period of an agreement (finance role): later events for it are rejected.
    function closePeriod(bytes32 agreementId, uint32 period) external;

    /// @notice Pays an ME's whole balance in `token` to its payout address; only that address may call.
    function withdraw(uint32 meId, address token) external returns (uint256 amount);

    /// @notice Pays each listed ME's whole balance in `token` to the ME's own payout address (anyone may
    /// call: the money can only go where the ME's signer agreed). Per ME, in list order: a zero balance is
    /// passed over; otherwise the balance is cleared, the tokens sent with a non-reverting transfer and
    /// `Withdrawn` emitted; a transfer that fails (a receiver that reverts, a token that blocks the
    /// address or returns false) restores the balance and emits `PayoutSkipped`, and the run goes on.
    /// Reverts only for an empty list (`PayoutBatchEmpty`), the zero token, or an unknown ME id
    /// (`MEUnknown`). An ME listed twice is paid once (its balance is zero the second time).
    /// @return paid the total sent
    function payout(address token, uint32[] calldata meIds) external returns (uint256 paid);

    // ------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------

    function meCount() external view returns (uint32);
    function meOf(uint32 meId) external view returns (ME memory);
    function meIdByName(string calldata name) external view returns (uint32);
    function agreementOf(bytes32 agreementId) external view returns (Agreement memory);
    function termsHashOf(bytes32 agreementId, uint32 version) external view returns (bytes32);
    function periodOf(bytes32 agreementId, uint32 period) external view returns (Period memory);
    function balanceOf(uint32 meId, address token) external view returns (uint256);
    function totalOwed(address token) external view returns (uint256);
    function debtOf(uint32 meId, address token) external view returns (uint256);
    function totalDebt(address token) external view returns (uint256);
    function hashTerms(Terms calldata terms) external pure returns (bytes32);
    function approvalDigest(bytes32 agreementId, uint32 version, bytes32 termsHash) external view returns (bytes32);
    function terminationDigest(bytes32 agreementId, uint32 version) external view returns (bytes32);
    function meUpdateDigest(uint32 meId, address payout, address signer, uint32 nonce) external view returns (bytes32);
}
