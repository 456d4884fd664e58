"""an invitation's use is a narrow row of its own: used_invitations

Revision ID: 0006_used_invitations
Revises: 0005_invitation_group_of_round
Create Date: 2026-11-28 14:10:00

invitations.is_used becomes a table, used_invitations (round_id, invitation_id), with one row
per used invitation: a cast inserts it beside its ballot (the primary key refuses a second
use), and the mixes that keep PostgreSQL's transaction ids from relinking ballots and
invitations rewrite these narrow rows (one index, one foreign key) instead of the invitations
(four indexes and a foreign key each). A unique (round_id, id) on invitations is what the new
rows point at. Data is kept: every used invitation gets its row, in random order, and the
downgrade puts the flag back from the rows. On PostgreSQL the used invitations are rewritten in
random order first, as a mix did (a round open during the upgrade would otherwise keep its
latest casts' xmin on them); the closing VACUUM FULL clears the old versions.
"""
import sqlalchemy as sa
from alembic import op


revision = '0006_used_invitations'
down_revision = '0005_invitation_group_of_round'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        # A used invitation's row carries the xmin of its cast (or of the latest mix): rewrite
        # them all in random order in this transaction, as a mix did, since no mix will again.
        op.execute("CREATE TEMP TABLE used_before_0006 ON COMMIT DROP AS"
                   " SELECT * FROM invitations WHERE is_used")
        op.execute("DELETE FROM invitations WHERE is_used")
        op.execute("INSERT INTO invitations SELECT * FROM used_before_0006 ORDER BY random()")
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_invitations_round_id_id', ['round_id', 'id'])
    op.create_table(
        'used_invitations',
        sa.Column('round_id', sa.Integer(), nullable=False),
        sa.Column('invitation_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['round_id', 'invitation_id'],
                                ['invitations.round_id', 'invitations.id'],
                                name='fk_used_invitations_round_id_invitations'),
        sa.PrimaryKeyConstraint('round_id', 'invitation_id', name='pk_used_invitations'),
        sqlite_with_rowid=False,
    )
    # Random order: on PostgreSQL the rows' physical order must not follow the invitations'.
    op.execute("INSERT INTO used_invitations (round_id, invitation_id)"
               " SELECT round_id, id FROM invitations WHERE is_used ORDER BY random()")
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_column('is_used')


def downgrade():
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_used', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.execute("UPDATE invitations SET is_used = true WHERE id IN"
               " (SELECT invitation_id FROM used_invitations)")
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.alter_column('is_used', server_default=None)
    op.drop_table('used_invitations')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_constraint('uq_invitations_round_id_id', type_='unique')
