"""ERM: the plain recipe with the reference default augmentation (the MaskGen reference recipe, Diaz et al. 2026)."""
from dgbench.method import Method
from dgbench.registry import register_method


@register_method("erm")
class ERM(Method):
    """Empirical risk minimisation on the source domain; every hook is the default."""
