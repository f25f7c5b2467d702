"""``ledger alliance ...``: agreements between MEs, signed by every party."""

from __future__ import annotations

import click

from ledger import words
from ledger.names import shown

from .context import App, account_option, pass_app
from .output import echo_listing, json_option


@click.group()
def alliance():
    """Propose, sign, submit, amend and end alliance agreements.

    An agreement takes effect only when every party's registered signer has signed its exact terms
    (EIP-712). Each party signs with its own Ape account; the key never leaves Ape's account store.

    \b
    Example:
      ledger alliance propose smart-kitchen --party fridge=4000 --party oven=3000 \\
          --party recipe-app=1500 --party logistics=1500 \\
          --target 300000 --excess fridge=3000 --excess oven=2500 --excess recipe-app=3000 --excess logistics=1500
      ledger alliance sign smart-kitchen --account dev3        # once per party
      ledger alliance submit smart-kitchen
    """


def _terms_options(func):
    options = [
        click.option("--party", "parties", multiple=True, required=True, metavar="ME=BPS",
                     help="A party and its share in basis points (10000 = 100%); repeat for each party."),
        click.option("--target", metavar="AMOUNT",
                     help="Revenue target per period, in token units; above it the --excess table applies."),
        click.option("--excess", multiple=True, metavar="ME=BPS", help="A party's share of revenue above the target."),
        click.option("--band", "bands", multiple=True, metavar="TARGET:ME=BPS,...",
                     help="A band: from TARGET (token units per period) up to the next band's target, revenue goes "
                          "by this table; repeat for up to 4 bands, targets ascending (instead of --target/--excess)."),
        click.option("--recoup", metavar="AMOUNT",
                     help="An investment paid back first: revenue goes by the --recoup-share table until AMOUNT "
                          "(token units, across all periods) is reached; the bands apply from then on."),
        click.option("--recoup-share", "recoup_shares", multiple=True, metavar="ME=BPS",
                     help="A party's share of the revenue that pays the --recoup amount back."),
        click.option("--nested", "nested", multiple=True, metavar="ME=ALLIANCE",
                     help="Party ME is an alliance: what it is credited goes on to ALLIANCE, split by that "
                          "alliance's own terms at settlement (same token; at most 2 levels deep, no cycles)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _terms(s, token: str, parties, target, excess, bands=(), recoup=None, recoup_shares=(), nested=()):
    from ledger.errors import InputError
    from ledger.services.alliances import build_terms, parse_band, parse_nested, parse_table

    shares = parse_table(parties, s.chain, "--party")
    excess_table = parse_table(excess, s.chain, "--excess") if excess else {}
    target_units = s.parse_units(target, token, "--target") if target else 0
    band_list = []
    for j, item in enumerate(bands, start=1):
        band_target, table = parse_band(item, s.chain, f"--band {j}")
        units = s.parse_units(band_target, token, f"--band {j} target")
        if units <= 0:
            raise InputError(f"--band {j} {item!r}: the target must be above 0")
        band_list.append((units, table))
    recoup_units = s.parse_units(recoup, token, "--recoup") if recoup else 0
    recoup_table = parse_table(recoup_shares, s.chain, "--recoup-share") if recoup_shares else {}
    nested_table = parse_nested(nested, s.chain, shares) if nested else {}
    return build_terms(token, shares, target_units, excess_table, bands=band_list, recoup=recoup_units,
                       recoup_shares=recoup_table, nested=nested_table)  # fmt: skip


def _check_token(s, token: str) -> None:
    """The settlement token must be an ERC-20 contract: one that has code and answers decimals() and
    balanceOf(); anything else would make the alliance's revenue unsettleable and its balances unreadable."""
    from ledger.errors import InputError

    if int(token, 16) == 0 or not s.chain.has_code(token):
        raise InputError(f"--token {token}: no contract at this address on this chain")
    try:
        s.decimals(token)
        s.chain.token_balance(token, s.chain.address)
    except Exception:  # noqa: BLE001 - any failure to answer means it is not a usable ERC-20
        raise InputError(
            f"--token {token}: the contract does not answer decimals() and balanceOf(); not an ERC-20"
        ) from None


def _after_proposal(name: str, version: int, terms, s) -> None:
    names = ", ".join(shown(s.chain.me(i).name) for i in terms.parties)
    click.echo(f"proposed version {version} of alliance {shown(name, quote=True)}; every party must sign it: {names}")
    click.echo(
        f"next: `ledger alliance sign {name} --account ACCOUNT` for each party, then `ledger alliance submit {name}`"
    )


@alliance.command()
@click.argument("name")
@_terms_options
@click.option("--token", metavar="ADDRESS", help="Settlement token (default: the local test token).")
@account_option("platform", "Proposer: the platform account or a party's signer (default: the platform account).")
@pass_app
def propose(app: App, name, parties, target, excess, bands, recoup, recoup_shares, nested, token, account_alias):
    """Propose alliance NAME: its parties, shares, and optionally a period target with an excess table,
    several target bands (--band), an investment paid back first (--recoup), and parties that are
    alliances themselves (--nested). See docs/agreements.md.

    NAME follows the rules of ME names: printable text of at most 32 bytes, stored in NFC form, no
    control or invisible characters, no space at either end, and no lookalike of an existing alliance.

    \b
    Example:
      ledger alliance propose smart-kitchen --party fridge=4000 --party oven=3000 \\
          --party recipe-app=1500 --party logistics=1500 \\
          --target 300000 --excess fridge=3000 --excess oven=2500 --excess recipe-app=3000 --excess logistics=1500
      ledger alliance propose oven-line --party oven=6000 --party platform=4000 \\
          --band 1000000:oven=5000,platform=5000 --band 2000000:oven=3000,platform=7000 \\
          --recoup 250000 --recoup-share oven=10000 --nested platform=platform-nodes
    """
    from ledger.errors import LedgerError
    from ledger.services.alliances import propose as propose_terms

    with app.session() as s:
        token = s.address(token, "--token") if token else s.record.token
        if not token:
            raise LedgerError("give --token: the ERC-20 the alliance settles in")
        _check_token(s, token)
        terms = _terms(s, token, parties, target, excess, bands, recoup, recoup_shares, nested)
        version = propose_terms(s.chain, name, terms, sender=s.role_account("platform", account_alias), amend=False,
                                from_block=s.record.block)  # fmt: skip
        _after_proposal(name, version, terms, s)


@alliance.command()
@click.argument("name")
@_terms_options
@account_option(
    "platform",
    "Proposer: the platform account, or the signer of a party of the version in force "
    "(of the latest proposal while none ever was); default: the platform account.",
)
@pass_app
def amend(app: App, name, parties, target, excess, bands, recoup, recoup_shares, nested, account_alias):
    """Propose new terms for alliance NAME (a new version). The version in force stays in force until
    every party of the new version has signed it and it is submitted. Earlier proposals stay valid:
    whichever pending version is fully signed can be submitted (`submit --version N`).

    \b
    Example:
      ledger alliance amend smart-kitchen --party fridge=4500 --party recipe-app=3000 --party logistics=2500
    """
    from ledger.errors import LedgerError
    from ledger.models import AgreementStatus
    from ledger.services.alliances import propose as propose_terms

    with app.session() as s:
        agreement = s.chain.agreement(name)
        if agreement.status == AgreementStatus.TERMINATED:
            raise LedgerError(f"alliance {name!r} is terminated; it cannot be amended")
        terms = _terms(s, agreement.token, parties, target, excess, bands, recoup, recoup_shares, nested)
        version = propose_terms(s.chain, name, terms, sender=s.role_account("platform", account_alias), amend=True)
        _after_proposal(name, version, terms, s)


_version_option = click.option(
    "--version", "version", type=click.IntRange(min=1), metavar="N",
    help="The pending version (default: the newest one waiting for signatures).",
)  # fmt: skip


@alliance.command()
@click.argument("name")
@click.option("--account", "accounts", multiple=True, required=True, metavar="ACCOUNT",
              help="The party's signer account (Ape alias); repeat to sign for several parties.")  # fmt: skip
@_version_option
@pass_app
def sign(app: App, name, accounts, version):
    """Sign the proposal waiting on alliance NAME with a party's own key.

    Before signing it prints what is signed, in words: the alliance and version, every party with its
    shares up to and above the target, the target and the token, and what changes from the version in
    force. The signature is kept in the local signature store until `submit`; `ledger alliance show`
    lists who has signed. To submit on another machine, send the output of `ledger alliance
    export-signatures NAME` there and feed it to `ledger alliance import-signature NAME --file FILE`.

    \b
    Example:
      ledger alliance sign smart-kitchen --account dev3
      ledger alliance sign smart-kitchen --account dev3 --version 2
    """
    from ledger.services import alliances

    with app.session() as s:
        agreement = s.chain.agreement(name)
        version = alliances.approvable_version(agreement, version)
        for line in _what_is_signed(s, agreement, version, s.chain.terms_of(agreement.id, version)):
            click.echo(line)
        for alias in accounts:
            signed = alliances.sign(s.chain, s.signatures, name, s.account(alias), version=version)
            click.echo(f"{alias} signed version {version} for {', '.join(map(shown, signed))}")
        _signature_progress(s, name, version)


def _what_is_signed(s, agreement, version: int, terms) -> list[str]:
    """The approval of ``version`` in words, and what it changes from the version in force."""
    from .output import pct

    old = s.chain.terms_of(agreement.id, agreement.active_version) if agreement.active_version else None
    ids = set(terms.parties) | set(old.parties if old else ())
    names = {me.id: shown(me.name) for me in s.chain.mes_by_id(sorted(ids))}
    symbol = s.symbol(terms.token)

    def target_text(t) -> str:
        return f"{s.units(t.target, t.token)} {symbol} per period" if t.target else "none"

    lines = [
        f"You are signing the approval of version {version} of alliance {shown(agreement.name, quote=True)} "
        f"(ledger {s.chain.address}, chain {s.chain.chain_id}):",
        f"  token: {shown(symbol)} ({terms.token})",
        *_terms_lines(s, terms, names),
    ]
    if old is None:
        lines.append("  changes: no version is in force yet; these terms would be the first")
        return lines
    changes = []
    old_at = {p: i for i, p in enumerate(old.parties)}
    new_at = {p: i for i, p in enumerate(terms.parties)}
    for me_id in terms.parties:
        if me_id not in old_at:
            changes.append(f"{names[me_id]} joins")
    for me_id in old.parties:
        if me_id not in new_at:
            changes.append(f"{names[me_id]} leaves (had {pct(old.shares[old_at[me_id]])})")
    for me_id in terms.parties:
        if me_id in old_at:
            before, after = old.shares[old_at[me_id]], terms.shares[new_at[me_id]]
            if before != after:
                changes.append(f"{names[me_id]} {pct(before)} -> {pct(after)}")
            old_ex = old.excess_shares[old_at[me_id]] if old.target else None
            new_ex = terms.excess_shares[new_at[me_id]] if terms.target else None
            if old_ex is not None and new_ex is not None and old_ex != new_ex:
                changes.append(f"{names[me_id]} above the target {pct(old_ex)} -> {pct(new_ex)}")
    if old.target != terms.target:
        changes.append(f"target {target_text(old)} -> {target_text(terms)}")
    if old.bands[1:] != terms.bands[1:]:
        changes.append(f"bands {_bands_text(s, old)} -> {_bands_text(s, terms)}")
    if (old.recoup, old.recoup_shares) != (terms.recoup, terms.recoup_shares):
        changes.append("recoup " + _recoup_text(s, old) + " -> " + _recoup_text(s, terms))
    if old.nested_parties != terms.nested_parties:
        changes.append(f"alliances among the parties {_nested_text(old, names)} -> {_nested_text(terms, names)}")
    where = f"from version {agreement.active_version} in force"
    lines.append(f"  changes {where}: {'; '.join(changes)}" if changes else f"  changes {where}: none (same terms)")
    return lines


def _bands_text(s, terms) -> str:
    if not terms.bands:
        return "none"
    symbol = s.symbol(terms.token)
    return ", ".join(f"band {j} from {s.units(b.target, terms.token)} {symbol}" for j, b in
                     enumerate(terms.bands, start=1))  # fmt: skip


def _recoup_text(s, terms) -> str:
    if not terms.recoup:
        return "none"
    return f"{s.units(terms.recoup, terms.token)} {s.symbol(terms.token)}"


def _nested_text(terms, names) -> str:
    from ledger.models import bytes32_to_text

    items = [f"{names.get(me_id, me_id)} = alliance {shown(bytes32_to_text(inner))}"
             for me_id, inner in terms.nested_parties.items()]  # fmt: skip
    return ", ".join(items) or "none"


def _terms_lines(s, terms, names) -> list[str]:
    """The terms in words, every band, the recoup and which parties are alliances (what a signer reads)."""
    from ledger.models import bytes32_to_text

    from .output import pct

    symbol = s.symbol(terms.token)
    lines = []
    if len(terms.bands) <= 1:
        target = f"{s.units(terms.target, terms.token)} {symbol} per period" if terms.target else "none"
        lines.append(f"  target: {target}")
    else:
        lines.append(f"  bands per period (every period starts from zero): base up to "
                     f"{s.units(terms.bands[0].target, terms.token)} {symbol}, {_bands_text(s, terms)}")  # fmt: skip
    if terms.recoup:
        lines.append(f"  recoup first: {_recoup_text(s, terms)} across all periods (by the recoup shares), then the "
                     f"{'bands' if terms.bands else 'shares'} apply")  # fmt: skip
    nested = terms.nested_parties
    for i, me_id in enumerate(terms.parties):
        if len(terms.bands) <= 1:
            above = f", {pct(terms.excess_shares[i])} above the target" if terms.target else ""
            share = "up to the target" if terms.target else "of all revenue"
            text = f"{pct(terms.shares[i])} {share}{above}"
        else:
            text = f"{pct(terms.shares[i])} base, " + ", ".join(
                f"{pct(b.shares[i])} band {j}" for j, b in enumerate(terms.bands, start=1)
            )
        if terms.recoup:
            text += f", {pct(terms.recoup_shares[i])} of the recoup"
        if me_id in nested:
            text += (
                f" (an alliance: goes on to alliance {shown(bytes32_to_text(nested[me_id]), quote=True)}, "
                "split by its own terms)"
            )
        lines.append(f"  party {names[me_id]}: {text}")
    return lines


@alliance.command(name="export-signatures")
@click.argument("name")
@pass_app
def export_signatures(app: App, name):
    """Print the approval signatures collected here for NAME's pending versions, to import on the machine
    that submits: `ledger alliance import-signature NAME --file FILE` takes this output as it is.
    Lines: `ME 0xSIGNATURE`, under a `# version N` comment per version.

    \b
    Example:
      ledger alliance export-signatures smart-kitchen > sigs.txt
    """
    from ledger.services.alliances import APPROVAL

    with app.session() as s:
        agreement = s.chain.agreement(name)
        for version in agreement.pending_versions:
            stored = s.signatures.get(agreement.id, APPROVAL, version)
            owners_signed = any(
                s.signatures.get_owners(agreement.id, APPROVAL, version, me_id)
                for me_id in s.chain.terms_of(agreement.id, version).parties
            )
            if not stored and not owners_signed:
                continue
            click.echo(f"# alliance {shown(name)} version {version}")
            for me_id, signature in sorted(stored.items()):
                click.echo(f"{shown(s.chain.me(me_id).name)} 0x{signature.hex()}")
            for me_id in s.chain.terms_of(agreement.id, version).parties:
                for _, signature in sorted(s.signatures.get_owners(agreement.id, APPROVAL, version, me_id).items()):
                    click.echo(f"{shown(s.chain.me(me_id).name)} 0x{signature.hex()}")  # a Safe owner's signature


@alliance.command(name="import-signature")
@click.argument("name")
@click.argument("signatures", nargs=-1, metavar="[SIGNATURE]...")
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), metavar="FILE",
              help="Signatures as `export-signatures` prints them (`ME 0x...` lines); - for stdin.")  # fmt: skip
@pass_app
def import_signature(app: App, name, signatures, file):
    """Add parties' signatures made on another machine (hex). Each must recover to the registered signer
    of a party of a version waiting for signatures (the signature says which version).

    \b
    Example:
      ledger alliance import-signature smart-kitchen 0x5f1c...1b
      ledger alliance import-signature smart-kitchen --file sigs.txt
    """
    from ledger.errors import InputError
    from ledger.services import alliances

    items: list[tuple[str | None, str, str]] = [(None, sig, f"argument {i + 1}") for i, sig in enumerate(signatures)]
    if file is not None:
        for number, line in enumerate(file.read().splitlines(), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            if len(parts) > 2:
                raise InputError(f"{file.name} line {number}: expected `ME 0xSIGNATURE` or `0xSIGNATURE`")
            items.append((parts[0] if len(parts) == 2 else None, parts[-1], f"{file.name} line {number}"))
    if not items:
        raise click.UsageError("give a SIGNATURE or --file FILE")
    with app.session() as s:
        versions = set()
        for me_name, signature, where in items:
            try:
                version, signed = alliances.add_signature(s.chain, s.signatures, name, signature, me_name=me_name)
            except InputError as err:
                raise InputError(f"{where}: {err}") from None
            versions.add(version)
            click.echo(f"imported the signature of {', '.join(map(shown, signed))} for version {version}")
        for version in sorted(versions):
            _signature_progress(s, name, version)


def _signature_progress(s, name, version: int):
    from ledger.services.alliances import APPROVAL, signature_status

    agreement = s.chain.agreement(name)
    if version not in agreement.pending_versions:
        return
    rows = signature_status(
        s.chain, s.signatures, agreement, APPROVAL, version, s.chain.terms_of(agreement.id, version)
    )
    waiting = [r.me for r in rows if not r.signed]
    done = len(rows) - len(waiting)
    if waiting:
        waiting_for = ", ".join(map(shown, waiting))
        click.echo(f"{done} of {len(rows)} parties have signed version {version}; waiting for {waiting_for}")
    else:
        more = f" --version {version}" if version != agreement.pending_versions[-1] else ""
        click.echo(
            f"all {len(rows)} parties have signed version {version}; next: `ledger alliance submit {name}{more}`"
        )


@alliance.command()
@click.argument("name")
@account_option("platform", "Account that sends the activation (any account may; default: the platform account).")
@click.option("--version", "version", type=click.IntRange(min=1), metavar="N",
              help="The pending version to put in force (default: the newest one every party has signed).")  # fmt: skip
@pass_app
def submit(app: App, name, account_alias, version):
    """Put a pending version of alliance NAME in force, once every party has signed it.

    Any version newer than the one in force can be put in force (any version, while none ever was);
    doing so supersedes the version in force and every older pending version, for good.

    \b
    Example:
      ledger alliance submit smart-kitchen
      ledger alliance submit smart-kitchen --version 2
    """
    from ledger.services.alliances import submit as submit_version

    with app.session() as s:
        version = submit_version(
            s.chain, s.signatures, name, sender=s.role_account("platform", account_alias), version=version
        )
    click.echo(f"alliance {name!r} version {version} is in force")


@alliance.command()
@click.argument("name")
@click.option("--account", "accounts", multiple=True, metavar="ACCOUNT",
              help="A party's signer agreeing to end the alliance; repeat for several parties.")  # fmt: skip
@click.option(
    "--sender", "sender_alias", metavar="ACCOUNT", help="Account that sends the termination (default: platform)."
)
@pass_app
def terminate(app: App, name, accounts, sender_alias):
    """Agree to end alliance NAME. Every party's signer must agree; the alliance ends (no further
    settlement) when the last one does. Balances already credited stay withdrawable.

    \b
    Example:
      ledger alliance terminate smart-kitchen --account dev3 --account dev4
    """
    from ledger.services import alliances

    with app.session() as s:
        signers = [s.account(alias) for alias in accounts]
        signed, ended = alliances.terminate(
            s.chain, s.signatures, name, signers, sender=s.role_account("platform", sender_alias)
        )
        if signed:
            click.echo(f"termination signed for {', '.join(map(shown, signed))}")
        if ended:
            click.echo(f"alliance {name!r} is terminated")
            return
        agreement = s.chain.agreement(name)
        rows = alliances.signature_status(
            s.chain, s.signatures, agreement, alliances.TERMINATION, agreement.active_version,
            s.chain.terms_of(agreement.id, agreement.active_version),
        )  # fmt: skip
        waiting = [shown(r.me) for r in rows if not r.signed]
        click.echo(
            f"{len(rows) - len(waiting)} of {len(rows)} parties agree to end it; waiting for {', '.join(waiting)}"
        )


@alliance.command(name="list")
@json_option
@pass_app
def list_(app: App, as_json):
    """Every alliance with its status, versions and parties.

    \b
    Example:
      ledger alliance list
    """
    from ledger.services.alliances import alliance_names

    rows = []
    with app.reader() as s:
        for name in alliance_names(s.chain, s.record.block):
            agreement = s.chain.agreement(name)
            version = agreement.active_version or agreement.latest_version
            terms = s.chain.terms_of(agreement.id, version)
            parties = ", ".join(shown(s.chain.me(i).name) for i in terms.parties)
            target = s.units(terms.target, terms.token) if terms.target else ""
            rows.append([name, agreement.status.name.lower(), agreement.active_version, agreement.latest_version,
                         parties, target, agreement.next_seq])  # fmt: skip
    headers = ["alliance", "status", "in force", "latest", "parties", "target", "events"]
    data = [dict(zip(headers, row, strict=True)) for row in rows]
    empty = "no alliances yet (`ledger alliance propose NAME --party ME=BPS ...`)"
    echo_listing(as_json, data, headers, rows, empty=empty, right={2, 3, 5, 6})


@alliance.command()
@click.argument("name")
@json_option
@pass_app
def show(app: App, name, as_json):
    """One alliance: status, token, each version's parties, shares and tiers, and who has signed.

    \b
    Example:
      ledger alliance show smart-kitchen
    """
    from ledger.models import bytes32_to_text
    from ledger.services import alliances

    with app.session() as s:
        agreement = s.chain.agreement(name)
        versions = []
        for version in range(1, agreement.latest_version + 1):
            terms = s.chain.terms_of(agreement.id, version)
            if version == agreement.active_version:
                state = "terminated" if agreement.status.name == "TERMINATED" else "in force"
            elif version > agreement.active_version and agreement.status.name != "TERMINATED":
                state = "waiting for signatures"
            else:
                state = "superseded" if version < agreement.active_version else "never activated"
            signed = None
            if state == "waiting for signatures":
                signed = alliances.signature_status(
                    s.chain, s.signatures, agreement, alliances.APPROVAL, version, terms
                )
            elif state == "in force":
                ending = alliances.signature_status(
                    s.chain, s.signatures, agreement, alliances.TERMINATION, version, terms
                )
                signed = ending if any(r.signed for r in ending) else None
            parties = []
            nested = terms.nested_parties
            for i, me_id in enumerate(terms.parties):
                parties.append({
                    "me": s.chain.me(me_id).name, "me_id": me_id, "share_bps": terms.shares[i],
                    "excess_bps": terms.excess_shares[i] if terms.target else None,
                    "band_bps": [b.shares[i] for b in terms.bands],
                    "recoup_bps": terms.recoup_shares[i] if terms.recoup else None,
                    "alliance": bytes32_to_text(nested[me_id]) if me_id in nested else None,
                    "signed": None if signed is None else signed[i].signed,
                })  # fmt: skip
            versions.append({
                "version": version, "state": state, "token": terms.token,
                "target": s.units(terms.target, terms.token) if terms.target else None,
                "bands": [s.units(b.target, terms.token) for b in terms.bands],
                "recoup": s.units(terms.recoup, terms.token) if terms.recoup else None,
                "parties": parties,
                "signatures_for": None if signed is None else ("approval" if state != "in force" else "termination"),
            })  # fmt: skip
        symbol = s.symbol(agreement.token)
        recouped = s.units(agreement.recouped, agreement.token)
    if as_json:
        from .output import echo_json

        echo_json({
            "alliance": agreement.name, "status": agreement.status.name.lower(), "token": agreement.token,
            "active_version": agreement.active_version, "latest_version": agreement.latest_version,
            "events_settled": agreement.next_seq, "recouped": s.units(agreement.recouped, agreement.token),
            "versions": versions,
        })  # fmt: skip
        return
    from .output import pct, table

    click.echo(f"alliance {shown(agreement.name)}: {agreement.status.name.lower()}, token {shown(symbol)} "
               f"({agreement.token})")  # fmt: skip
    click.echo(f"version in force: {agreement.active_version or 'none'}; latest: {agreement.latest_version}; "
               f"revenue events settled: {agreement.next_seq}")  # fmt: skip
    for v in versions:
        several = len(v["bands"]) > 1
        if several:
            target = ", bands from " + ", ".join(f"{b} {symbol}" for b in v["bands"]) + " per period"
        else:
            target = f", target {v['target']} {symbol} per period" if v["target"] else ""
        if v["recoup"]:
            target += f", recoup {v['recoup']} {symbol} first"
            if v["state"] in ("in force", "terminated"):
                target += f" ({recouped} {symbol} paid back so far)"
        click.echo(f"\nversion {v['version']} ({v['state']}){target}")
        if several:
            tiers = ["base"] + [f"band {j} (from {b})" for j, b in enumerate(v["bands"], start=1)]
        else:
            tiers = ["share"] + (["above target"] if v["target"] else [])
        headers = ["party", *(["recoup"] if v["recoup"] else []), *tiers]
        nested_any = any(p["alliance"] for p in v["parties"])
        if nested_any:
            headers.append("an alliance: goes on to")
        if v["signatures_for"]:
            headers.append(f"signed {v['signatures_for']}")
        rows = []
        for p in v["parties"]:
            row = [p["me"], *([pct(p["recoup_bps"])] if v["recoup"] else []), pct(p["share_bps"]),
                   *(pct(b) for b in p["band_bps"])]  # fmt: skip
            if nested_any:
                row.append(p["alliance"] or "")
            if v["signatures_for"]:
                row.append("yes" if p["signed"] else "no")
            rows.append(row)
        numbers = 1 + (1 if v["recoup"] else 0) + len(tiers)
        click.echo(table(headers, rows, right=set(range(1, numbers))))


@alliance.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the file against the chain and say what would be proposed.")
@account_option("platform")
@pass_app
def import_(app: App, file, dry_run, account_alias):
    """Propose every alliance of FILE as version 1 (platform role); the parties then sign and submit as
    usual. JSON lines, one alliance per line:
    {"name": "smart-kitchen", "token": "0x...", "target": "300000", "parties": [{"me": "fridge",
    "share": 4000, "excess": 3000}, ...]} (token: default the deployment's; target and excess together,
    or neither). Or CSV, one row per party, an alliance's rows together:
    `alliance,party,share,excess,target,token`. The whole file is checked first, every problem printed
    by row; an alliance that exists with the same terms is skipped, with other terms refused.

    \b
    Example:
      ledger alliance import alliances.jsonl --dry-run
      ledger alliance import alliances.jsonl
    """
    from pathlib import Path

    from ledger.services.imports import import_alliances

    with app.session() as s:
        sender = None if dry_run else s.role_account("platform", account_alias)
        summary = import_alliances(s.chain, Path(file), sender=sender, default_token=s.record.token,
                                   decimals_of=s.decimals, dry_run=dry_run, from_block=s.record.block)  # fmt: skip
    new = summary.rows - summary.skipped
    if dry_run:
        click.echo(
            f"dry run: {words.count(new, 'alliance')} would be proposed, {summary.skipped} "
            f"{words.plural(summary.skipped, 'exists', 'exist')} already; nothing sent"
        )
    else:
        click.echo(
            f"proposed {words.count(summary.sent, 'alliance')} (version 1); {summary.skipped} existed already (skipped)"
        )
        if summary.sent:
            click.echo("next: each party signs (`ledger alliance sign NAME --account ACCOUNT`), then "
                       "`ledger alliance submit NAME`")  # fmt: skip
