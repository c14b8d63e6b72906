"""InputXGradient: input times the gradient of the target logit (Captum ``InputXGradient``)."""

from captum.attr import InputXGradient

from heatlab.explain.methods.common import MethodSpec, plain

SPEC = MethodSpec("InputXGradient", plain(InputXGradient))
