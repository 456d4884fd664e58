"""lighter casting: item scores hang on their rating; invitations lose a redundant index; rounds
remember the ballot count of their latest mix

Revision ID: 0004_lighter_casting
Revises: 0003_round_seal
Create Date: 2026-11-28 02:20:00

An item rating's two foreign keys (to the ballot, to the participation) become one composite key
to the rating of that cadre on that ballot: it says more, and PostgreSQL checks one key per score
instead of two when a ballot is cast. ix_invitations_round_id duplicated the leading column of
uq_invitations_round_id (round_id, email). Data is kept: every item rating already has its rating
(the ballot box writes both in one transaction). rounds.mixed_count: see the model.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_lighter_casting'
down_revision = '0003_round_seal'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('item_ratings', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.drop_constraint('fk_item_ratings_ballot_id_ballots', type_='foreignkey')
        batch_op.drop_constraint('fk_item_ratings_participation_id_participations',
                                 type_='foreignkey')
        batch_op.create_foreign_key('fk_item_ratings_ballot_id_ratings', 'ratings',
                                    ['ballot_id', 'participation_id'],
                                    ['ballot_id', 'participation_id'], ondelete='CASCADE')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index('ix_invitations_round_id')
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mixed_count', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_column('mixed_count')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_index('ix_invitations_round_id', ['round_id'], unique=False)
    with op.batch_alter_table('item_ratings', schema=None,
                              table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.drop_constraint('fk_item_ratings_ballot_id_ratings', type_='foreignkey')
        batch_op.create_foreign_key('fk_item_ratings_participation_id_participations',
                                    'participations', ['participation_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_foreign_key('fk_item_ratings_ballot_id_ballots', 'ballots',
                                    ['ballot_id'], ['id'], ondelete='CASCADE')
