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
/// Rounding rule ("rotating systematic rounding"). A part `a` of a revenue event is split over a share
/// table s_1..s_n (basis points, sum 10,000) by cumulative floors shifted by an offset:
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
/// Parts (tiers). An event of amount `a` is cut into parts, in this order: first the recoup part
/// min(a, R - recouped) when the version has a recoup amount R not yet reached (`recouped` = the
/// agreement's recouped total across all periods and versions), split by the recoup table; then the rest
/// across the tiers base, band 1, ..., band k by the period's banded revenue before the event (the
/// period's revenue less its recouped part): the part below band 1's target by the base table, the part
/// between band j's and band j+1's targets by band j's table, the part above band k's target by band k's
/// table. Bands restart from zero every period; the recouped total never resets. Every part is split by
/// the rule above with the same offset `o`; each part's credits add up to the part and the parts add up
/// to `a`, so an event's credits add up to its amount to the last unit.
///
/// Exactly-once. Each agreement has a sequence cursor. A batch names the sequence number of its first
/// event and is accepted only if it equals the cursor, which then advances by the batch size. A retried,
/// re-submitted or concurrently submitted batch therefore reverts with `SettlementOutOfSequence`; a
/// client that reads the cursor and the settled references (from `RevenueSettled`) before submitting
/// can never credit a reference twice, because any batch settled in between moves the cursor.
///
/// Reversals (`settleReversals`). A reversal has a reference of its own and takes the next sequence
/// number of the same cursor, a positive amount `x` and the period it is booked in (open). It un-books
/// the top `x` of the period's revenue: first the period's banded revenue from the top (the part above
/// band k's target by band k's table, then band k-1's, ..., then the base table), then the period's
/// recouped part by the recoup table (by the base table when the version has no recoup; either way
/// lowering the period's and the agreement's recouped totals, so a recoup can be earned again), and what
/// exceeds the period's revenue by the base table; each part split by the same rotating rounding with
/// the reversal's own sequence number. The period's revenue becomes
/// `R - min(x, R)`. The debits add up to `x` exactly. A party's debit comes out of its
/// balance; what the balance does not cover becomes the party's debt (`DebtIncurred`). Debts are netted
/// from the party's next credits before they become withdrawable (`DebtNetted`): finance pays in only
/// the credits not netted. What balances cover goes back to the caller (finance) at once. Reversals of
/// an agreement whose version in force has nested parties are refused (`ReversalNestedUnsupported`):
/// reverse in the inner alliance directly.
/// The link to the reversed event (it exists, belongs to the same agreement, and the reversals of it
/// together never exceed it) is not stored on chain: the client checks it from the logs before sending,
/// and `ledger audit` checks it from the logs (`RevenueReversed` carries every original reference).
///
/// Nested alliances. A party of an agreement may be an alliance itself: `terms.nested[i]` names the
/// agreement (the inner alliance) whose own active terms split what party i is credited. Such agreements
/// settle through `settleNested` (`settle` refuses them). At the end of each run of the outer batch
/// (consecutive same-period events), a nested party's credit c > 0 (all tiers) is not credited to its ME:
/// it becomes one revenue event of the inner alliance, in the same period, with the inner alliance's next
/// sequence number and the derived reference `keccak256(abi.encode(outerId, runFirstSeq, meId))`, split
/// by the inner alliance's terms (its bands, recoup and nesting apply) in the same transaction
/// (`RevenueSettled` and the credited event of the inner alliance, then `NestedSettled`). Finance pays in
/// the outer total once. Nesting is acyclic and at most MAX_NESTING_DEPTH levels deep below any
/// agreement (checked at proposal and activation; at settlement for inner alliances re-nested later).
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

    /// @notice A band of the period's banded revenue: from `target` up to the next band's target (or
    /// without limit for the last band), revenue is split by `shares`.
    /// @param target the band's lower edge in token base units, > 0; targets strictly ascending
    /// @param shares basis points per party (in the order of `Terms.parties`); sum 10,000
    struct Band {
        uint128 target;
        uint16[] shares;
    }

    /// @notice The terms of one agreement version. Parties are ME ids in strictly ascending order.
    /// EIP-712 type: `Terms(address token,uint32[] parties,uint16[] shares,Band[] bands,uint128 recoup,
    /// uint16[] recoupShares,bytes32[] nested)Band(uint128 target,uint16[] shares)`.
    /// @param token the ERC-20 settlement token (the same for every version of an agreement)
    /// @param parties ME ids, strictly ascending, MIN_PARTIES to MAX_PARTIES of them
    /// @param shares the base table: basis points per party for the period's banded revenue below the
    /// first band's target (all of it without bands); sum 10,000
    /// @param bands 0 to MAX_BANDS bands, targets > 0 and strictly ascending, each table n entries summing
    /// to 10,000 (one band is the classic target with its excess table)
    /// @param recoup 0 for none; else the amount (at most 2**120 - 1) paid back first, by `recoupShares`,
    /// until the agreement's recouped total (all periods and versions) reaches it
    /// @param recoupShares empty when `recoup` is 0; else n entries summing to 10,000
    /// @param nested empty, or n entries: bytes32(0) for a party credited itself, else the id of the
    /// agreement (same token) whose own active terms split what this party is credited
    struct Terms {
        address token;
        uint32[] parties;
        uint16[] shares;
        Band[] bands;
        uint128 recoup;
        uint16[] recoupShares;
        bytes32[] nested;
    }

    /// @notice The active version and terms of an inner alliance, passed to `settleNested`.
    struct InnerTerms {
        bytes32 agreementId;
        uint32 version;
        Terms terms;
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
        /// the agreement's recouped total across all periods and versions (revenue split by a recoup table)
        uint128 recouped;
    }

    /// @notice A period of an agreement. Its banded revenue (what bands measure) is `revenue - recouped`.
    struct Period {
        /// the period's whole revenue settled (less reversals)
        uint128 revenue;
        bool closed;
        /// the part of `revenue` that went by the recoup table
        uint120 recouped;
    }

    // ------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------

    /// @notice A required address (`field`: admin, payout, signer, token) is the zero address.
    error LedgerZeroAddress(string field);

    /// @notice An ME name is empty or longer than MAX_NAME_BYTES bytes.
    error MENameInvalid(string name);
    /// @notice The name is already registered, by ME `meId`.
    error MENameTaken(string name, uint32 meId);
    /// @notice No ME has id `meId`.
    error MEUnknown(uint32 meId);
    /// @notice The ME is not active (it was dissolved).
    error MENotActive(uint32 meId, MEStatus status);
    /// @notice A key signer's consent does not recover to it (`recovered`: the key that did sign, or 0).
    error MEConsentInvalid(uint32 meId, address recovered, address signer);
    /// @notice `registerMEs` got empty arrays or arrays of unequal length (their lengths).
    error MEBatchInvalid(uint256 names, uint256 payouts, uint256 signers, uint256 parents);
    /// @notice The ME's signer is a contract (a Safe) and its ERC-1271 `isValidSignature` refused the
    /// consent now (no key can be recovered from a contract signature, so none is named).
    error MEConsentRefused(uint32 meId, address signer);

    /// @notice The agreement id is zero.
    error AgreementIdInvalid();
    /// @notice `proposeAgreements` got empty arrays or arrays of unequal length.
    error AgreementBatchInvalid(uint256 agreementIds, uint256 terms);
    /// @notice `createAgreement` names an agreement that already exists.
    error AgreementExists(bytes32 agreementId);
    /// @notice No agreement has this id.
    error AgreementUnknown(bytes32 agreementId);
    /// @notice The agreement has no version in force (`status`: Proposed or Terminated).
    error AgreementNotActive(bytes32 agreementId, AgreementStatus status);
    /// @notice The agreement was terminated; nothing can change it any more.
    error AgreementTerminated(bytes32 agreementId);
    /// @notice The terms name `count` parties, outside [min, max].
    error AgreementPartyCount(uint256 count, uint256 min, uint256 max);
    /// @notice The base table has `shares` entries for `parties` parties.
    error AgreementTableLength(uint256 parties, uint256 shares);
    /// @notice The base table (`excessTable` false) sums to `sum`, not 10,000. (`excessTable` is kept
    /// for compatibility: band tables report `AgreementBandSharesSum`.)
    error AgreementSharesSum(bool excessTable, uint256 sum);
    /// @notice The terms have `count` bands, more than `max` (MAX_BANDS).
    error AgreementBandCount(uint256 count, uint256 max);
    /// @notice Band `band` (1-based) has a target that is zero or not above the previous band's
    /// (`previous`, 0 for band 1).
    error AgreementBandTarget(uint256 band, uint128 previous, uint128 target);
    /// @notice Band `band` (1-based) has a table of `shares` entries for `parties` parties.
    error AgreementBandTableLength(uint256 band, uint256 parties, uint256 shares);
    /// @notice Band `band`'s (1-based) table sums to `sum`, not 10,000.
    error AgreementBandSharesSum(uint256 band, uint256 sum);
    /// @notice The recoup is invalid: `recoup` above 2**120 - 1, or a recoup table of `recoupShares`
    /// entries that is not empty while `recoup` is 0 or not one entry per party while it is not.
    error AgreementRecoupInvalid(uint128 recoup, uint256 recoupShares);
    /// @notice The recoup table sums to `sum`, not 10,000.
    error AgreementRecoupSharesSum(uint256 sum);
    /// @notice `nested` must be empty or have one entry per party.
    error AgreementNestedLength(uint256 parties, uint256 nested);
    /// @notice A nested id names no agreement.
    error AgreementNestedUnknown(bytes32 inner);
    /// @notice The nested agreement `inner` settles in `token`, not in this agreement's token.
    error AgreementNestedToken(bytes32 inner, address token);
    /// @notice Nesting `inner` into `agreementId` would make a cycle (`inner` reaches `agreementId`, or is it).
    error AgreementNestingCycle(bytes32 agreementId, bytes32 inner);
    /// @notice The agreement would have alliances `depth` levels below it, more than MAX_NESTING_DEPTH.
    error AgreementNestingTooDeep(bytes32 agreementId, uint256 depth);
    /// @notice The agreement's version in force has nested parties: settle it with `settleNested`.
    error AgreementNestedTermsRequired(bytes32 agreementId);
    /// @notice The party is listed twice.
    error AgreementDuplicateParty(uint32 meId);
    /// @notice Parties must be strictly ascending: `meId` follows `previous`.
    error AgreementPartiesUnordered(uint32 previous, uint32 meId);
    /// @notice An amendment must keep the agreement's token.
    error AgreementTokenChanged(address token, address proposed);
    /// @notice A caller without the platform role proposed a new agreement without being a party's signer.
    error AgreementProposerNotParty(address caller);
    /// @notice A caller without the platform role proposed a version without being the signer of a party
    /// of the current version.
    error AgreementProposerNotCurrentParty(bytes32 agreementId, uint32 currentVersion, address caller);
    /// @notice Version `version` was never proposed (`latest` is the newest).
    error AgreementVersionUnknown(bytes32 agreementId, uint32 version, uint32 latest);
    /// @notice Version `version` is older than the version in force `active` and can never be activated.
    error AgreementVersionSuperseded(bytes32 agreementId, uint32 version, uint32 active);
    /// @notice Settlement must name the version in force `active`.
    error AgreementVersionNotActive(bytes32 agreementId, uint32 version, uint32 active);
    /// @notice The version is already in force.
    error AgreementVersionAlreadyActive(bytes32 agreementId, uint32 version);
    /// @notice The terms passed do not hash to the commitment of `version`.
    error AgreementTermsMismatch(bytes32 agreementId, uint32 version);
    /// @notice One signature per party is required.
    error AgreementSignatureCount(uint256 parties, uint256 signatures);
    /// @notice A key signer's signature does not recover to it (`recovered`: the key that did sign, or 0).
    error AgreementSignatureInvalid(bytes32 agreementId, uint32 version, uint32 meId, address recovered);
    /// @notice The party's signer is a contract (a Safe) and its ERC-1271 `isValidSignature` refused the
    /// signature when this transaction ran.
    error AgreementSignatureRefused(bytes32 agreementId, uint32 version, uint32 meId, address signer);
    /// @notice A party of the agreement is dissolved: no activation or settlement until a new version
    /// without it is in force.
    error AgreementPartyDissolved(bytes32 agreementId, uint32 meId);

    /// @notice A batch is empty or its arrays differ in length.
    error SettlementBatchInvalid(bytes32 agreementId, uint256 refs, uint256 entries);
    /// @notice The batch's first sequence number is not the agreement's cursor `expected`.
    error SettlementOutOfSequence(bytes32 agreementId, uint64 expected, uint64 given);
    /// @notice `settleNested` got no `InnerTerms` for the nested agreement `innerId`.
    error SettlementInnerTermsMissing(bytes32 innerId);
    /// @notice The agreement's nesting (through inner alliances re-nested after its activation) is deeper
    /// than MAX_NESTING_DEPTH.
    error SettlementNestingTooDeep(bytes32 agreementId);
    /// @notice An event's amount is 0 or not below 2**128 (or a period's revenue would pass 2**128 - 1).
    error RevenueAmountInvalid(bytes32 agreementId, uint64 seq, uint256 amount);
    /// @notice An event's reference is zero.
    error RevenueReferenceEmpty(bytes32 agreementId, uint64 seq);
    /// @notice An event's period is 0.
    error PeriodInvalid(bytes32 agreementId, uint64 seq);
    /// @notice The period is closed.
    error PeriodAlreadyClosed(bytes32 agreementId, uint32 period);
    /// @notice A reversal batch's `originals` differs in length from its `refs`.
    error ReversalBatchInvalid(bytes32 agreementId, uint256 refs, uint256 originals);
    /// @notice A reversal's original reference is zero.
    error ReversalOriginalEmpty(bytes32 agreementId, uint64 seq);
    /// @notice The agreement's version in force has nested parties: reverse in the inner alliance.
    error ReversalNestedUnsupported(bytes32 agreementId);
    /// @notice An ME's balance or debt would pass 2**128 - 1.
    error AccountOverflow(uint32 meId, address token);
    /// @notice The token delivered `received`, not `expected` (a fee-on-transfer token).
    error TokenTransferShortfall(address token, uint256 expected, uint256 received);

    /// @notice Only the ME's payout address may withdraw its balance.
    error WithdrawCallerNotPayout(uint32 meId, address caller, address payout);
    /// @notice The ME has no balance in `token`.
    error NothingToWithdraw(uint32 meId, address token);
    /// @notice A payout run needs at least one ME.
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

    /// @notice A batch of revenue events was settled (or one event of a nested alliance, see
    /// `NestedSettled`). Event `k` has sequence number `firstSeq + k`,
    /// reference `refs[k]` and `entries[k] = amount << 32 | period`.
    event RevenueSettled(
        bytes32 indexed agreementId, uint32 indexed version, uint64 firstSeq, bytes32[] refs, uint256[] entries
    );
    /// @notice What each party (in the order of the version's `parties`) was credited by the run of
    /// `count` consecutive events from `firstSeq`, all in `period`, for a version with at most one band
    /// and no recoup: by the base table and by band 1's table (zeros without a band).
    event PartiesCredited(
        bytes32 indexed agreementId,
        uint32 indexed period,
        uint32 version,
        uint64 firstSeq,
        uint64 count,
        uint256[] baseCredits,
        uint256[] excessCredits
    );
    /// @notice What each party was credited by a run of an agreement whose version in force has two or
    /// more bands or a recoup: `credits[t * n + i]` is party i's credit in tier t, n = number of parties,
    /// tiers in this order: recoup (only when the terms have a recoup), base, band 1, ..., band k.
    event PartiesCreditedByTier(
        bytes32 indexed agreementId,
        uint32 indexed period,
        uint32 version,
        uint64 firstSeq,
        uint64 count,
        uint256[] credits
    );
    /// @notice Party `meId` of `agreementId` (the run of events from `firstSeq`) is the nested alliance
    /// `inner`: its credit `amount` was settled as `inner`'s event `innerSeq` (reference
    /// `keccak256(abi.encode(agreementId, firstSeq, meId))`) instead of reaching the ME's balance.
    event NestedSettled(
        bytes32 indexed agreementId,
        uint64 firstSeq,
        uint32 indexed meId,
        bytes32 indexed inner,
        uint64 innerSeq,
        uint256 amount
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
    /// `count` consecutive reversals from `firstSeq`, all booked in `period`: by the base table and by
    /// band 1's table (versions with at most one band and no recoup).
    event PartiesDebited(
        bytes32 indexed agreementId,
        uint32 indexed period,
        uint32 version,
        uint64 firstSeq,
        uint64 count,
        uint256[] baseDebits,
        uint256[] excessDebits
    );
    /// @notice `PartiesCredited`'s counterpart for reversals with two or more bands or a recoup: the
    /// same layout as `PartiesCreditedByTier`.
    event PartiesDebitedByTier(
        bytes32 indexed agreementId,
        uint32 indexed period,
        uint32 version,
        uint64 firstSeq,
        uint64 count,
        uint256[] debits
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

    /// @notice Settles a batch of revenue events of an agreement whose version in force has nested parties
    /// (finance role), like `settle`, splitting each nested party's credit by its inner alliance's terms
    /// in the same transaction (see the contract notes). Finance pays in the outer total (less debts
    /// repaid at any level) once.
    /// @param inner the active version and terms of every agreement reachable through `terms.nested`, in
    /// any order (each checked against its commitment; a missing one reverts `SettlementInnerTermsMissing`)
    function settleNested(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries,
        InnerTerms[] calldata inner
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

    /// @notice The number of MEs registered; ids run from 1 to this.
    function meCount() external view returns (uint32);
    /// @notice The ME's record (status None for an unknown id).
    function meOf(uint32 meId) external view returns (ME memory);
    /// @notice The id of the ME registered under `name` exactly, or 0.
    function meIdByName(string calldata name) external view returns (uint32);
    /// @notice The agreement's status, versions, sequence cursor (`nextSeq`) and recouped total.
    function agreementOf(bytes32 agreementId) external view returns (Agreement memory);
    /// @notice The EIP-712 struct hash of the terms of `version` (0 for an unknown version).
    function termsHashOf(bytes32 agreementId, uint32 version) external view returns (bytes32);
    /// @notice A period's revenue, recouped part and whether it is closed.
    function periodOf(bytes32 agreementId, uint32 period) external view returns (Period memory);
    /// @notice The nested agreement ids of the version in force (empty when it has none).
    function nestedOf(bytes32 agreementId) external view returns (bytes32[] memory);
    /// @notice What the ledger owes the ME in `token` (withdrawable).
    function balanceOf(uint32 meId, address token) external view returns (uint256);
    /// @notice The sum of all MEs' balances in `token`; the ledger holds at least this much of it.
    function totalOwed(address token) external view returns (uint256);
    /// @notice What the ME owes finance in `token` (from reversals its balance did not cover).
    function debtOf(uint32 meId, address token) external view returns (uint256);
    /// @notice The sum of all MEs' debts in `token`.
    function totalDebt(address token) external view returns (uint256);
    /// @notice The EIP-712 struct hash of `terms` (the commitment stored per version).
    function hashTerms(Terms calldata terms) external pure returns (bytes32);
    /// @notice The EIP-712 digest each party's signer signs to approve `version` with terms `termsHash`.
    function approvalDigest(bytes32 agreementId, uint32 version, bytes32 termsHash) external view returns (bytes32);
    /// @notice The EIP-712 digest each party's signer signs to end the agreement at `version`.
    function terminationDigest(bytes32 agreementId, uint32 version) external view returns (bytes32);
    /// @notice The EIP-712 digest an ME's current signer signs to consent to a new payout and signer.
    function meUpdateDigest(uint32 meId, address payout, address signer, uint32 nonce) external view returns (bytes32);
}
