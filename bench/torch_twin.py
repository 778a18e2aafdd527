"""What the recipes' PyTorch twins share: the Learner's one-cycle schedule applied to a
torch optimizer, and one optimizer step, so that every twin trains the way
`Learner.fit_one_cycle` does (lr and Adam's beta1 set before each batch)."""


def set_one_cycle(optimizer, lr_at, mom_at, pos):
    """Set lr and beta1 of every group to the schedules' values at progress `pos` (0..1)."""
    for group in optimizer.param_groups:
        group["lr"], group["betas"] = lr_at(pos), (mom_at(pos), group["betas"][1])


def optimizer_step(torch, model, optimizer, loss, clip=0.0):
    """Backward from `loss`, clip the gradient norm at `clip` (when > 0), and step."""
    optimizer.zero_grad()
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
