"""a used invitation says whether a mix has covered it; rounds.mixed_count goes

Revision ID: 0008_unmixed_used_invitations
Revises: 0007_packed_item_scores
Create Date: 2026-11-28 18:00:00

A mix is due once PINGYI_MIX_EVERY ballots have come since the latest one. Casts found that out
by counting the round's ballots (on PostgreSQL against rounds.mixed_count), so every cast cost
more the more ballots the round held. Now a cast inserts its used_invitations row with mixed
false, a mix rewrites (PostgreSQL) or marks (SQLite) the round's rows mixed, and a partial index
holds only the waiting rows: a cast counts those few.

Every row of a closed (or later) round is marked mixed, as its closing mix would have left it;
the rows of an open round stay waiting, so its next cast mixes at once. The downgrade puts
mixed_count back as the number of mixed rows (the old code counted ballots: the same number,
since a cast wrote both in one transaction).
"""
import sqlalchemy as sa
from alembic import op


revision = '0008_unmixed_used_invitations'
down_revision = '0007_packed_item_scores'
branch_labels = None
depends_on = None

INDEX = 'ix_used_invitations_unmixed'


def upgrade():
    with op.batch_alter_table('used_invitations', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.add_column(sa.Column('mixed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.execute("UPDATE used_invitations SET mixed = true"
               " WHERE round_id IN (SELECT id FROM rounds WHERE status NOT IN ('draft', 'open'))")
    op.create_index(INDEX, 'used_invitations', ['round_id'], unique=False,
                    postgresql_where=sa.text('NOT mixed'), sqlite_where=sa.text('NOT mixed'))
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_column('mixed_count')


def downgrade():
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mixed_count', sa.Integer(), server_default='0',
                                      nullable=False))
    op.execute("UPDATE rounds SET mixed_count = (SELECT count(*) FROM used_invitations u"
               " WHERE u.round_id = rounds.id AND u.mixed)")
    op.drop_index(INDEX, table_name='used_invitations')
    with op.batch_alter_table('used_invitations', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.drop_column('mixed')
