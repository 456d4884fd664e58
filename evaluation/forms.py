"""Staff forms. Numbers stay text here: the round-spec validator is the one judge of values."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import (
    BooleanField, EmailField, FieldList, Form, FormField, IntegerField, PasswordField, SelectField,
    SelectMultipleField, StringField, SubmitField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

BLANK_ROWS = 3
#: The round spec's trimming methods as pages name them (the settings form, the round page).
TRIM_METHODS = {"none": _l("None"), "drop_extremes": _l("Drop the k highest and k lowest"),
                "proportion": _l("Drop a proportion from each end")}


class SignInForm(FlaskForm):
    """E-mail and password."""

    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])
    submit = SubmitField(_l("Sign in"))


class ActionForm(FlaskForm):
    """A bare form for POST buttons: only the CSRF token."""


class NewRoundForm(FlaskForm):
    """A new draft: blank with defaults, copied from a round, or from a round-spec file."""

    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)])
    period = StringField(_l("Period"), validators=[Optional(), Length(max=64)])
    template = SelectField(_l("Start from"), coerce=int, default=0)
    spec_file = FileField(_l("Or a round-spec file (JSON)"),
                          validators=[Optional(), FileAllowed(["json"], _l("A .json file"))])

    def validate(self, extra_validators=None) -> bool:
        """A round started from the defaults takes its title and period from this form; a copy
        or a spec file brings its own."""
        valid = super().validate(extra_validators)
        if self.template.data or self.spec_file.data:
            return valid
        for field, message in ((self.title, _l("Give the round a title.")),
                               (self.period, _l("Give the period, for example 2026."))):
            if not (field.data or "").strip():
                field.errors = [*field.errors, message]
                valid = False
        return valid


class MultiCheckboxField(SelectMultipleField):
    """Checkboxes for a multiple choice."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class SettingsForm(FlaskForm):
    """Title, period, scale and rules."""

    title = StringField(_l("Title"), validators=[Length(max=200)])
    period = StringField(_l("Period"), validators=[Length(max=64)])
    dont_know = BooleanField(_l("Offer “don't know” (non-scoring)"))
    item_min = StringField(_l("Item scale from"))
    item_max = StringField(_l("Item scale to"))
    trim_method = SelectField(_l("Trimming"), choices=[
        SelectChoice(key, label) for key, label in TRIM_METHODS.items()])
    trim_k = StringField(_l("k"))
    trim_proportion = StringField(_l("Proportion"))
    trim_min_n = StringField(_l("Trim from this many ballots up"))
    dissatisfied = MultiCheckboxField(_l("Grades counted as dissatisfied"), choices=[])
    threshold = StringField(_l("Dissatisfaction threshold (e.g. 1/3)"))
    strict = BooleanField(_l("Strictly more than the threshold (off: at or above)"))
    min_group_size = StringField(_l("Minimum ballots to show a group"))
    excellent_quota = StringField(_l("Excellent quota on one ballot (blank: none)"))
    kpi_weight = StringField(_l("KPI weight in the report card"))
    bands = StringField(_l("Forced distribution, e.g. 3:5:2 (blank: none)"))
    reason_required = BooleanField(_l("A reason is required for a dissatisfied grade"))
    validity = SelectField(_l("Suspicious ballots"), choices=[
        SelectChoice("warn", _l("Warn")), SelectChoice("invalidate", _l("Invalidate"))])


class GradeRow(Form):
    key = StringField(_l("Key"))
    label_zh = StringField(_l("Label (中文)"))
    label_en = StringField(_l("Label (English)"))
    score = StringField(_l("Score"))
    dissatisfied = BooleanField(_l("Dissatisfied"))


class DimensionRow(Form):
    key = StringField(_l("Key"))
    label_zh = StringField(_l("Label (中文)"))
    label_en = StringField(_l("Label (English)"))
    weight = StringField(_l("Weight (optional)"))


class ItemRow(Form):
    key = StringField(_l("Key"))
    label_zh = StringField(_l("Label (中文)"))
    label_en = StringField(_l("Label (English)"))
    dimension = StringField(_l("Dimension key"))


class GroupRow(Form):
    key = StringField(_l("Key"))
    label_zh = StringField(_l("Label (中文)"))
    label_en = StringField(_l("Label (English)"))
    weight = StringField(_l("Weight"))
    cadres = StringField(_l("Rates only these cadre keys (blank: all)"))


class CadreRow(Form):
    key = StringField(_l("Key"))
    name = StringField(_l("Name"))
    post = StringField(_l("Post"))
    unit = StringField(_l("Unit"))
    kpi = StringField(_l("KPI (0-100)"))


class GradesForm(FlaskForm):
    rows = FieldList(FormField(GradeRow), min_entries=0)


class QuestionnaireForm(FlaskForm):
    dimensions = FieldList(FormField(DimensionRow), min_entries=0)
    items = FieldList(FormField(ItemRow), min_entries=0)


class GroupsForm(FlaskForm):
    rows = FieldList(FormField(GroupRow), min_entries=0)


class CadresForm(FlaskForm):
    rows = FieldList(FormField(CadreRow), min_entries=0)


class ImportCadresForm(FlaskForm):
    file = FileField(_l("CSV or XLSX file"), validators=[
        FileRequired(), FileAllowed(["csv", "xlsx"], _l("A .csv or .xlsx file"))])

#: Words shown through _() with a value from the database; listed so that extraction finds them.
DYNAMIC_WORDS = [
    _l("draft"), _l("open"), _l("closed"), _l("published"), _l("archived"),
    _l("admin"), _l("organiser"), _l("analyst"), _l("warn"), _l("invalidate"),
]


class SlipsForm(FlaskForm):
    """How many printable QR slips, for which group."""

    group = SelectField(_l("Rater group"), choices=[])
    count = IntegerField(_l("Number of slips"), default=10, validators=[
        InputRequired(_l("Give a number from 1 to 500.")),
        NumberRange(min=1, max=500, message=_l("Give a number from 1 to 500."))])


class InviteForm(FlaskForm):
    """A group and a CSV or XLSX file of e-mail addresses to send ballot links to."""

    # Own ids: the round page shows this form beside the slips form, which has a `group` too.
    group = SelectField(_l("Rater group"), choices=[], id="invite-group")
    file = FileField(_l("Addresses (CSV or XLSX)"), id="invite-file", validators=[
        FileRequired(_l("Choose a file")), FileAllowed(["csv", "xlsx"], _l("A .csv or .xlsx file"))])


def group_choices(round_) -> list[SelectChoice]:
    """The round's rater groups as choices of a group select, labelled in both languages."""
    return [SelectChoice(g.key, f"{g.label_zh} / {g.label_en}") for g in round_.groups]
