"""an invitation's group is one of its round's: one composite foreign key

Revision ID: 0005_invitation_group_of_round
Revises: 0004_lighter_casting
Create Date: 2026-11-28 11:40:00

An invitation's two foreign keys (to the round, to the rater group) become one composite key,
(round_id, group_id) -> rater_groups (round_id, id): it says more (the group belongs to the
invitation's round), and PostgreSQL checks one key per row instead of two when a mix rewrites
the used invitations. ix_invitations_group_id goes too: a round's invitations of one group are
found through the (round_id, email) index, and every index is one more to rewrite at each mix.
Deleting a round no longer deletes its invitations by cascade: like a group, a round with links
issued cannot be deleted (Pingyi deletes neither). Data is kept: every invitation's group
already belongs to its round (the application issues them so); an invitation whose group is
another round's stops the upgrade before anything changes.
"""
from alembic import op


revision = '0005_invitation_group_of_round'
down_revision = '0004_lighter_casting'
branch_labels = None
depends_on = None


def upgrade():
    # Checked before anything changes (SQLite commits each step as it goes).
    strays = op.get_bind().exec_driver_sql(
        "SELECT i.id FROM invitations i JOIN rater_groups g ON g.id = i.group_id"
        " WHERE g.round_id <> i.round_id LIMIT 5").fetchall()
    if strays:
        raise RuntimeError("invitations whose group belongs to another round (ids "
                           f"{', '.join(str(i) for (i,) in strays)}): nothing was changed; "
                           "fix or delete them, then upgrade again")
    with op.batch_alter_table('rater_groups', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_rater_groups_round_id_id', ['round_id', 'id'])
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_constraint('fk_invitations_round_id_rounds', type_='foreignkey')
        batch_op.drop_constraint('fk_invitations_group_id_rater_groups', type_='foreignkey')
        batch_op.drop_index('ix_invitations_group_id')
        batch_op.create_foreign_key('fk_invitations_round_id_rater_groups', 'rater_groups',
                                    ['round_id', 'group_id'], ['round_id', 'id'])


def downgrade():
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_constraint('fk_invitations_round_id_rater_groups', type_='foreignkey')
        batch_op.create_index('ix_invitations_group_id', ['group_id'], unique=False)
        batch_op.create_foreign_key('fk_invitations_group_id_rater_groups', 'rater_groups',
                                    ['group_id'], ['id'])
        batch_op.create_foreign_key('fk_invitations_round_id_rounds', 'rounds', ['round_id'],
                                    ['id'], ondelete='CASCADE')
    with op.batch_alter_table('rater_groups', schema=None) as batch_op:
        batch_op.drop_constraint('uq_rater_groups_round_id_id', type_='unique')
