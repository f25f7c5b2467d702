"""``ledger demo``: the smart-kitchen alliance, from nothing to payouts, on the local chain."""

from __future__ import annotations

import random

import click

from ledger import words

from .context import App

ALLIANCE = "smart-kitchen"
PERIOD = 202611
PLATFORM_ME = ("kitchen-platform", "dev1")
# (ME, dev account that is its signer and payout address, share, share above the target)
MES = [
    ("fridge", "dev3", 4000, 3000),
    ("oven", "dev4", 3000, 2500),
    ("recipe-app", "dev5", 1500, 3000),
    ("logistics", "dev6", 1500, 1500),
]
EVENTS = 3_000
TARGET_PER_EVENT = 100  # token units: the monthly target is 100 per generated event (300,000 for 3,000)


def revenue_rows(count: int = EVENTS, seed: int = PERIOD) -> list[tuple[str, str, str, int]]:
    """A month of kitchen sales: deterministic, amounts from 5.00 to 250.00 in whole cents."""
    rng = random.Random(seed)
    rows = []
    for n in range(1, count + 1):
        cents = rng.randint(500, 25_000)
        rows.append((f"SK-{PERIOD}-{n:05d}", ALLIANCE, f"{cents // 100}.{cents % 100:02d}", PERIOD))
    return rows


@click.command()
@click.option("--events", type=click.IntRange(1, 100_000), default=EVENTS, show_default=True,
              help="Revenue events in the generated month.")  # fmt: skip
@click.pass_context
def demo(ctx: click.Context, events: int):
    """Run the smart-kitchen alliance end to end on the local chain: start the chain if needed, deploy,
    register a platform and four MEs with their own dev keys, propose the alliance with a monthly
    target, collect every signature, settle a generated month of revenue, close the period, print
    the payouts and the check that tokens held equal balances owed.

    Running it again reuses what exists and settles nothing twice.

    \b
    Example:
      ledger demo
    """
    app: App = ctx.obj
    from ledger.chain.node import LocalNode
    from ledger.errors import LedgerError

    if not app.settings.is_local:
        raise LedgerError("the demo runs on the local chain only (drop --network)")
    node = LocalNode(app.settings)
    status, started = node.start()
    if started:
        where = f"kept in {node.store.folder}" if node.persistent else f"{node.name}, not persistent"
        click.echo(f"started the local chain at {status.url} ({where})")
    else:
        click.echo(f"using the local chain at {status.url} (block {status.block})")
    csv_path = app.settings.data_dir / "demo" / f"revenue-{PERIOD}.csv"
    with app.session(deployed=False) as s:
        _run(s, csv_path, events)
    click.echo("")
    group = ctx.parent.command
    ctx.invoke(group.get_command(ctx, "payouts"), alliance=ALLIANCE, period_number=PERIOD, fmt="table")
    ctx.invoke(group.get_command(ctx, "balance"))
    click.echo("\nNext, try (after `source .venv/bin/activate`, which puts `ledger` on your PATH):")
    down = "state is kept; `ledger chain up` resumes" if node.persistent else f"{node.name} keeps no state"
    click.echo(next_steps(app.settings, csv_path, down))


def next_steps(settings, csv_path, down: str) -> str:
    """The commands to try next, each carrying the data folder and port the demo ran with (from options
    or LEDGER_DATA_DIR / LEDGER_PORT) and every argument shell-quoted, so each line can be pasted as it
    is, in this shell or another."""
    import shlex

    defaults = type(settings).model_fields
    root = ["ledger"]
    if settings.data_dir != defaults["data_dir"].default:
        root += ["--data-dir", str(settings.data_dir)]
    if settings.port != defaults["port"].default:
        root += ["--port", str(settings.port)]
    steps = [
        (["alliance", "show", ALLIANCE], ""),
        (["payouts", "--me", "fridge", "--format", "csv", "-o", f"fridge-{PERIOD}.csv"], ""),
        (["settle", str(csv_path)], "settles nothing twice"),
        (["withdraw", "fridge", "--account", "dev3"], ""),
        (["balance"], ""),
        (["audit"], "check the whole history from the chain alone"),
        (["chain", "status"], ""),
        (["chain", "down"], down),
    ]
    lines = [" ".join(shlex.quote(part) for part in root + args) for args, _ in steps]
    width = min(60, max(len(line) for line in lines)) + 2  # notes aligned, unless a line is long
    return "\n".join(
        f"  {line.ljust(max(width, len(line) + 2))}# {note}" if note else f"  {line}"
        for line, (_, note) in zip(lines, steps, strict=True)
    )


def _run(s, csv_path, count: int) -> None:
    from ledger.chain.transact import TxPolicy
    from ledger.errors import NotFoundError
    from ledger.services import alliances
    from ledger.services.deploy import deploy_or_reuse
    from ledger.services.settlement import Settler

    from .context import ROLE_DEFAULTS_LOCAL

    target = str(count * TARGET_PER_EVENT)

    roles = {role: s.account(alias) for role, alias in ROLE_DEFAULTS_LOCAL.items()}
    chain, record, reused = deploy_or_reuse(
        s.store, admin=roles["admin"], platform=roles["platform"], finance=roles["finance"],
        sender=roles["admin"], aliases=dict(ROLE_DEFAULTS_LOCAL),
    )  # fmt: skip
    chain.policy = TxPolicy.from_settings(s.settings)
    click.echo(f"{'reused' if reused else 'deployed'} the ledger at {record.ledger} and test token {record.token}")

    from ledger.services.registration import register_me

    def ensure_me(name: str, alias: str, parent: int) -> int:
        signer = s.account(alias).address
        try:
            me_id = chain.me_id_by_name(name)
        except NotFoundError:
            me_id, _ = register_me(chain, name, signer, signer, parent, sender=roles["platform"])
            click.echo(f"registered ME {name} (id {me_id}), signer and payout {alias} {signer}")
            return me_id
        click.echo(f"ME {name} exists (id {me_id})")
        return me_id

    platform_id = ensure_me(*PLATFORM_ME, 0)
    ids = {name: ensure_me(name, alias, platform_id) for name, alias, _, _ in MES}

    token = record.token
    decimals = int(chain.token_at(token).decimals())
    try:
        agreement = chain.agreement(ALLIANCE)
    except NotFoundError:
        agreement = None
    if agreement is None:
        from ledger.money import parse_amount

        terms = alliances.build_terms(
            token,
            {ids[name]: share for name, _, share, _ in MES},
            parse_amount(target, decimals),
            {ids[name]: excess for name, _, _, excess in MES},
        )
        version = alliances.propose(chain, ALLIANCE, terms, sender=roles["platform"], amend=False)
        click.echo(f"proposed {ALLIANCE} version {version}: target {target} ATD per month; above it the excess table")
        store = alliances.SignatureStore(s.settings.signatures_dir, record.chain_id, record.ledger)
        for name, alias, _, _ in MES:
            alliances.sign(chain, store, ALLIANCE, s.account(alias))
            click.echo(f"  {name} signed with its own key ({alias})")
        alliances.submit(chain, store, ALLIANCE, sender=roles["platform"])
        click.echo(f"{ALLIANCE} is in force: every party signed version {version}")
    else:
        click.echo(f"alliance {ALLIANCE} exists ({agreement.status.name.lower()}, version {agreement.active_version})")

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rows = revenue_rows(count)
    with open(csv_path, "w", newline="") as handle:
        handle.write("reference,alliance,amount,period\n")
        for ref, alliance, amount, period in rows:
            handle.write(f"{ref},{alliance},{amount},{period}\n")
    click.echo(f"generated {len(rows)} revenue events for period {PERIOD} in {csv_path}")

    from ledger.revenue_file import read_rows, to_events

    raw, problems = read_rows(csv_path)
    events = to_events(raw, lambda _name: decimals, problems)
    settler = Settler(chain, roles["finance"], batch_gas=s.settings.batch_gas, from_block=record.block)
    _, closed = chain.period(chain.agreement_id(ALLIANCE), PERIOD)
    if closed:
        click.echo(f"period {PERIOD} is already closed; its revenue was settled before")
    else:
        work, skipped = settler.prepare(events)
        needed = sum(item.amount for item in work)
        have = chain.token_balance(token, roles["finance"].address)
        if have < needed:
            chain.mint(roles["finance"].address, needed - have, sender=roles["finance"])
        total = sum(item.count for item in work)
        with click.progressbar(length=max(total, 1), label="settling", file=click.get_text_stream("stderr")) as bar:
            summary = settler.run(prepared=(work, skipped), progress=bar.update)
        click.echo(
            f"settled {words.count(summary.settled, 'event')} in {words.count(summary.batches, 'batch')} "
            f"({summary.gas_used:,} gas), "
            f"{summary.skipped} already settled before"
        )
        chain.close_period(chain.agreement_id(ALLIANCE), PERIOD, sender=roles["finance"])
        revenue, _ = chain.period(chain.agreement_id(ALLIANCE), PERIOD)
        from ledger.money import format_amount

        click.echo(f"closed period {PERIOD}: revenue {format_amount(revenue, decimals)} ATD (target {target})")
