"""Policy panel: the acquisition policy and the surrogate model, each chosen from its registry, with a parameter
form made from the chosen entry's specs."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, PushButton

from ..core.model import MODELS
from ..core.policy import POLICIES
from ..core.run.settings import DEFAULT_MODEL, DEFAULT_POLICY
from .forms import ParamForm


class PolicyPanel(Container):
    def __init__(self):
        self.policy_name = ComboBox(label="policy", choices=POLICIES.names(), value=DEFAULT_POLICY["name"])
        self.params = ParamForm()
        self.apply_policy = PushButton(text="Apply policy")
        self.model_name = ComboBox(label="model", choices=MODELS.names(), value=DEFAULT_MODEL["name"],
                                   tooltip="surrogate model (chosen at Start; recorded in the trace)")
        super().__init__(widgets=[self.policy_name, self.params, self.apply_policy, self.model_name], label="Policy")
        self.policy_name.changed.connect(self._on_name)
        self._on_name()

    def _on_name(self, *_):
        self.params.show(POLICIES.get(self.policy_name.value).params)

    @property
    def policy_param(self):
        """The first parameter's widget (None for a policy without parameters)."""
        return self.params.first()

    def policy(self) -> dict:
        return {"name": self.policy_name.value, "params": self.params.values()}

    def model(self, params: dict | None = None) -> dict:
        return {"name": self.model_name.value, "params": dict(params or {})}
