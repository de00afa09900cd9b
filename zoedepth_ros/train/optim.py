"""What trains, and at which rate: freezing parts of the model, the AdamW parameter groups of the
official recipe and its one-cycle schedule. The model names its parts (ZoeDepth.parameter_groups);
the configuration gives each part its learning rate."""

from __future__ import annotations


def freeze(model, mcfg: dict) -> None:
    """Exclude the parts model.freeze_encoder / model.freeze_decoder name from training."""
    frozen = {"encoder", "pos_enc"} if mcfg["freeze_encoder"] else set()
    if mcfg["freeze_decoder"]:
        frozen.add("decoder")
    for part, params in model.parameter_groups().items():
        for param in params:
            param.requires_grad_(part not in frozen)


def param_groups(model, ocfg: dict) -> list[dict]:
    """AdamW groups of the official recipe: metric head at lr, decoder at lr x decoder_lr_scale,
    encoder and relative position tables at their scales. Frozen parameters are left out."""
    scale = {"metric_head": 1.0, "decoder": ocfg["decoder_lr_scale"], "encoder": ocfg["encoder_lr_scale"],
             "pos_enc": ocfg["pos_enc_lr_scale"]}
    parts = model.parameter_groups()
    params = {group: [p for p in parts[group] if p.requires_grad] for group in scale}
    return [{"name": group, "params": params[group], "lr": ocfg["lr"] * scale[group]}
            for group in scale if params[group]]


def optimizer_and_schedule(groups: list[dict], cfg: dict, total_steps: int):
    """AdamW over `groups` and the one-cycle schedule (stepped per optimizer step) that peaks at
    each group's learning rate."""
    import torch

    optimizer = torch.optim.AdamW(groups, lr=cfg["optim"]["lr"], weight_decay=cfg["optim"]["weight_decay"])
    s = cfg["schedule"]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps,
        pct_start=s["pct_start"], div_factor=s["div_factor"], final_div_factor=s["final_div_factor"],
        cycle_momentum=s["cycle_momentum"], base_momentum=s["base_momentum"], max_momentum=s["max_momentum"])
    return optimizer, scheduler
