"""casts count what a mix needs, not the round's whole ballot box; rounds.mixed_count goes

Revision ID: 0008_cheaper_mix_counts
Revises: 0007_packed_item_scores
Create Date: 2026-11-28 18:00:00

A mix is due once PINGYI_MIX_EVERY ballots have come since the latest one. Casts found that out
by counting the round's ballots (on PostgreSQL against rounds.mixed_count), so every cast cost
more the more ballots the round held.

PostgreSQL: a cast inserts its used_invitations row with mixed false, a mix rewrites the round's
rows marked mixed, and a partial index holds only the waiting rows, which a cast counts. Every
row of a sealed round is marked mixed, as its closing mix left it; the rows of any other round
stay waiting, so that an open round's next cast brings a mix.
SQLite: the casts count the round's ballots on the round row (rounds.sqlite_cast_count, set
here to the ballots each round holds), and its used_invitations rows, which carry no
transaction id, are written mixed: all of them are marked so here.

The downgrade puts mixed_count back, on PostgreSQL as the number of mixed rows (the old code
counted ballots: the same number, since a cast wrote both in one transaction), and on SQLite as
0, which is what the old code left there.
"""
import sqlalchemy as sa
from alembic import op


revision = '0008_cheaper_mix_counts'
down_revision = '0007_packed_item_scores'
branch_labels = None
depends_on = None

INDEX = 'ix_used_invitations_unmixed'


def upgrade():
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sqlite_cast_count', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.drop_column('mixed_count')
    with op.batch_alter_table('used_invitations', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.add_column(sa.Column('mixed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    if sqlite:
        op.execute("UPDATE rounds SET sqlite_cast_count ="
                   " (SELECT count(*) FROM ballots WHERE ballots.round_id = rounds.id)")
        op.execute("UPDATE used_invitations SET mixed = true")
    else:
        op.execute("UPDATE used_invitations SET mixed = true"
                   " WHERE round_id IN (SELECT id FROM rounds WHERE seal_head IS NOT NULL)")
    op.create_index(INDEX, 'used_invitations', ['round_id'], unique=False,
                    postgresql_where=sa.text('NOT mixed'), sqlite_where=sa.text('NOT mixed'))


def downgrade():
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mixed_count', sa.Integer(), server_default='0',
                                      nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE rounds SET mixed_count = (SELECT count(*) FROM used_invitations u"
                   " WHERE u.round_id = rounds.id AND u.mixed)")
    op.drop_index(INDEX, table_name='used_invitations')
    with op.batch_alter_table('used_invitations', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.drop_column('mixed')
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_column('sqlite_cast_count')
