"""a rating holds its item scores, packed: item_ratings goes

Revision ID: 0007_packed_item_scores
Revises: 0006_used_invitations
Create Date: 2026-11-28 16:20:00

ratings.scores holds a cadre's item scores on one ballot, one unsigned 16-bit big-endian number
per item of the round in questionnaire order, 0xFFFF where none was given (see
evaluation.packed_scores); a cast writes one row per cadre instead of one per cadre and item.
Data is kept both ways: every rating gets its scores from item_ratings, and the downgrade puts
them back as rows. An item score that cannot be packed (an item of another round than its
ballot's, a value above 65534: the application never wrote either) stops the upgrade before
anything changes. The conversion runs in Python, the same on both databases, a round and some
20,000 ratings at a time. On SQLite the ratings table is rebuilt (WITHOUT ROWID, as before) to
make the new column NOT NULL, and again by the downgrade to drop it.
"""
import struct

import sqlalchemy as sa
from alembic import op


revision = '0007_packed_item_scores'
down_revision = '0006_used_invitations'
branch_labels = None
depends_on = None

#: A blank item in the packed form; the scale tops out at 1000 (evaluation.specs).
MISSING = 0xFFFF
#: Ratings converted per step (and their item scores held in memory meanwhile).
RATINGS_PER_STEP = 20_000


def _pack(values):
    return struct.pack(f">{len(values)}H", *(MISSING if v is None else v for v in values))


def _unpack(packed):
    return struct.unpack(f">{len(packed) // 2}H", packed)


def _rounds(conn):
    """(its item ids in questionnaire order, its ballot ids in steps) of every round with
    ballots; a step holds about RATINGS_PER_STEP ratings."""
    for round_id in conn.execute(sa.text("SELECT DISTINCT round_id FROM ballots")).scalars().all():
        items = conn.execute(sa.text("SELECT id FROM items WHERE round_id = :r ORDER BY position"),
                             {"r": round_id}).scalars().all()
        ballots = conn.execute(sa.text("SELECT id FROM ballots WHERE round_id = :r ORDER BY id"),
                               {"r": round_id}).scalars().all()
        cadres = conn.execute(sa.text("SELECT count(*) FROM participations WHERE round_id = :r"),
                              {"r": round_id}).scalar()
        step = max(1, RATINGS_PER_STEP // max(1, cadres))
        yield items, [ballots[k:k + step] for k in range(0, len(ballots), step)]


def _in_chunk(sql):
    return sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))


def upgrade():
    conn = op.get_bind()
    # Checked before anything changes (SQLite commits each step as it goes).
    unfit = conn.exec_driver_sql(
        "SELECT count(*) FROM item_ratings s JOIN ballots b ON b.id = s.ballot_id"
        " JOIN items i ON i.id = s.item_id"
        f" WHERE i.round_id <> b.round_id OR s.value >= {MISSING}").scalar()
    if unfit:
        raise RuntimeError(f"{unfit} item scores name an item of another round than their "
                           f"ballot's, or exceed {MISSING - 1}: nothing was changed; fix or "
                           "delete them, then upgrade again")
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scores', sa.LargeBinary(), nullable=True))
    for items, chunks in _rounds(conn):
        position = {item_id: k for k, item_id in enumerate(items)}
        for ids in chunks:
            scores = {key: [None] * len(items) for key in conn.execute(_in_chunk(
                "SELECT ballot_id, participation_id FROM ratings WHERE ballot_id IN :ids"),
                {"ids": ids})}
            for ballot, participation, item, value in conn.execute(_in_chunk(
                    "SELECT ballot_id, participation_id, item_id, value FROM item_ratings"
                    " WHERE ballot_id IN :ids"), {"ids": ids}):
                scores[ballot, participation][position[item]] = value
            if scores:
                conn.execute(sa.text("UPDATE ratings SET scores = :s"
                                     " WHERE ballot_id = :b AND participation_id = :p"),
                             [{"b": b, "p": p, "s": _pack(v)} for (b, p), v in scores.items()])
    op.drop_table('item_ratings')
    with op.batch_alter_table('ratings', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.alter_column('scores', existing_type=sa.LargeBinary(), nullable=False)


def downgrade():
    conn = op.get_bind()
    op.create_table(
        'item_ratings',
        sa.Column('ballot_id', sa.String(length=32), nullable=False),
        sa.Column('participation_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('value', sa.Integer(), nullable=False),
        sa.CheckConstraint('value >= 0', name=op.f('ck_item_ratings_value')),
        sa.ForeignKeyConstraint(['ballot_id', 'participation_id'],
                                ['ratings.ballot_id', 'ratings.participation_id'],
                                name='fk_item_ratings_ballot_id_ratings', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_ratings_item_id_items'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('ballot_id', 'participation_id', 'item_id',
                                name=op.f('pk_item_ratings')),
        sqlite_with_rowid=False,
    )
    for items, chunks in _rounds(conn):
        for ids in chunks:
            rows = [{"b": ballot, "p": participation, "i": item, "v": value}
                    for ballot, participation, packed in conn.execute(_in_chunk(
                        "SELECT ballot_id, participation_id, scores FROM ratings"
                        " WHERE ballot_id IN :ids"), {"ids": ids})
                    for item, value in zip(items, _unpack(packed)) if value != MISSING]
            if rows:
                conn.execute(sa.text("INSERT INTO item_ratings (ballot_id, participation_id,"
                                     " item_id, value) VALUES (:b, :p, :i, :v)"), rows)
    with op.batch_alter_table('ratings', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.drop_column('scores')
