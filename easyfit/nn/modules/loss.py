"""torch.nn.modules.loss: the loss layers and their base _Loss (defined in easyfit.nn.loss)."""
from ..loss import (_Loss, CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss,
                    BCEWithLogitsLoss, BCELoss)

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
           "BCEWithLogitsLoss", "BCELoss"]
