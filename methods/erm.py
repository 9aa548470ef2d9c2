"""ERM: the plain recipe with the reference default augmentation (methods.md §1.3, §4.1)."""
from dgbench.method import Method
from dgbench.registry import register_method


@register_method("erm")
class ERM(Method):
    """Empirical risk minimisation on the source domain; every hook is the default."""
