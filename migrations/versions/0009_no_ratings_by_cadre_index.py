"""ratings lose their index by cadre (participation), which every cast paid for

Revision ID: 0009_no_ratings_by_cadre_index
Revises: 0008_cheaper_mix_counts
Create Date: 2026-11-28 20:10:00

ix_ratings_participation_id took one entry per cadre at a random place (a rating's key starts
with the random ballot id) on every ballot cast: on SQLite 15 of the 22 pages a cast's commit
wrote to the log at the example's size, on PostgreSQL a dozen index insertions. No query reads
ratings by cadre alone: results and the seal read them by ballot. Only deleting a participation
looked rows up through it (for the foreign key's cascade); a round's participations can be
deleted only while it is a draft, which holds no ratings, and that delete now scans the ratings
table, as deleting a grade always has. Nothing else changes; the downgrade builds the index
again.
"""
from alembic import op


revision = '0009_no_ratings_by_cadre_index'
down_revision = '0008_cheaper_mix_counts'
branch_labels = None
depends_on = None

INDEX = 'ix_ratings_participation_id'


def upgrade():
    op.drop_index(INDEX, table_name='ratings')


def downgrade():
    op.create_index(INDEX, 'ratings', ['participation_id'], unique=False)
