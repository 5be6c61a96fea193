"""One module per wizard step. Each step is a view over the wizard's draft config: it gets the
draft and what the workers found (``WizardContext``) as an attribute, and posts a new config up
as ``XStep.Changed``."""
