"""What a person may set when starting each kind of job."""

from django import forms


class FetchForm(forms.Form):
    pages = forms.IntegerField(min_value=1, max_value=100, initial=15)
    # Not an argument of the task: its run_after (view.start).
    delay = forms.IntegerField(
        min_value=0,
        max_value=3600,
        initial=0,
        label="Start after",
        help_text="Seconds: the job waits, READY, until then.",
    )


class PrimesForm(forms.Form):
    limit = forms.IntegerField(min_value=2, max_value=5_000_000, initial=300_000)


class RecordsForm(forms.Form):
    records = forms.CharField(
        max_length=200,
        initial="3 1 4 1 5 n/a 9",
        help_text="Numbers separated by spaces; anything else fails the job.",
    )

    def clean_records(self) -> list[str]:
        return self.cleaned_data["records"].split()
