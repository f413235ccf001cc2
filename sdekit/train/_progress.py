"""The per-epoch progress bar of `fit`."""

from typing import Any

from tqdm.auto import tqdm


def epoch_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar over epochs, starting at `initial` when a run is resumed.

    With `enabled=True` tqdm still hides itself when its stream is not a terminal
    (`disable=None`), so logs of batch jobs are not filled with carriage returns.
    """
    return tqdm(
        total=total,
        initial=initial,
        unit="epoch",
        disable=None if enabled else True,
        dynamic_ncols=True,
    )


def postfix(
    train_metrics: dict[str, float], valid_metrics: dict[str, float] | None
) -> dict[str, str]:
    """The bar's postfix: training loss, then every validation metric."""
    out = {"loss": f"{train_metrics['loss']:.4g}"}
    for name, value in (valid_metrics or {}).items():
        out[f"valid_{name}"] = f"{value:.4g}"
    return out
