"""Which rows, code and hardware made a figure or table, summarised from the rows themselves.

Every figure carries :func:`caption` (visible) and :func:`metadata` (in the file); every report
opens with :func:`summary`.
"""

from __future__ import annotations

import pandas as pd


def _distinct(df: pd.DataFrame, column: str) -> list[str]:
    if column not in df.columns:
        return []
    return [str(v) for v in dict.fromkeys(df[column].dropna()) if str(v) != ""]


def _join(values: list[str], limit: int = 3) -> str:
    if not values:
        return "unknown"
    return ", ".join(values[:limit]) + (f" (+{len(values) - limit} more)" if len(values) > limit
                                        else "")


def git_text(df: pd.DataFrame) -> str:
    """``1a2b3c4d5e`` or ``1a2b3c4d5e (dirty)``, per distinct commit."""
    out = []
    for sha, rows in df.groupby("git_sha", sort=False):
        dirty = rows["git_dirty"].astype("boolean").fillna(False).any()
        out.append((str(sha)[:10] or "no git") + (" (dirty)" if dirty else ""))
    return _join(out)


def dates(df: pd.DataFrame) -> str:
    """The UTC date span of the rows' start times: ``2026-11-25`` or ``2026-11-24..2026-11-25``."""
    days = sorted({str(v)[:10] for v in df["started_at"] if str(v)})
    if not days:
        return "unknown date"
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def devices(df: pd.DataFrame) -> str:
    pairs = df[["device", "device_name"]].astype(str).drop_duplicates()
    return _join([f"{d} ({n})" if n else d for d, n in pairs.itertuples(index=False)], 2)


def caption(df: pd.DataFrame) -> str:
    """One line under a figure: device, git commit, date, versions, rows."""
    n_ok = int((df["status"] == "ok").sum())
    torch = _join(_distinct(df, "torch_version"), 2)
    return (f"{devices(df)} · git {git_text(df)} · {dates(df)} · torch {torch} · "
            f"seqbench {_join(_distinct(df, 'seqbench_version'), 2)} · "
            f"{len(df)} rows ({n_ok} ok) from {_join(_distinct(df, 'suite'))}")


def metadata(title: str, caption_text: str, fmt: str) -> dict[str, str | None]:
    """File metadata for ``savefig`` in format ``fmt`` (png, svg, pdf). No creation time: a
    figure redrawn from the same rows is byte-identical."""
    import matplotlib
    import seaborn

    from seqbench import __version__

    creator = (f"seqbench {__version__} (matplotlib {matplotlib.__version__}, "
               f"seaborn {seaborn.__version__})")
    if fmt == "png":
        return {"Title": title, "Description": caption_text, "Software": creator}
    if fmt == "svg":
        return {"Title": title, "Description": caption_text, "Creator": creator, "Date": None}
    if fmt == "pdf":
        return {"Title": title, "Subject": caption_text, "Creator": creator,
                "CreationDate": None}
    return {}


def summary(df: pd.DataFrame, suites: list[dict] | None = None) -> list[tuple[str, str]]:
    """(what, value) pairs for a report's provenance header."""
    spec_pairs = df[["suite", "spec_hash"]].astype(str).drop_duplicates()
    specs = [f"{s} ({h[:12]})" for s, h in spec_pairs.itertuples(index=False)]
    for suite in suites or []:
        name = suite.get("suite") or suite.get("name", "?")
        entry = f"{name} ({str(suite.get('spec_hash', ''))[:12]})"
        if entry not in specs:
            specs.append(entry)
    versions = []
    for column, name in (("seqbench_version", "seqbench"), ("python_version", "python"),
                         ("torch_version", "torch"), ("cuda_version", "CUDA"),
                         ("cudnn_version", "cuDNN"), ("mamba_ssm_version", "mamba-ssm")):
        found = _distinct(df, column)
        if found:
            versions.append(f"{name} {' / '.join(found)}")
    statuses = df["status"].value_counts()
    settings = []
    for column in ("dtype", "autocast", "threads", "mem_method", "timing_method"):
        found = _distinct(df, column)
        if found:
            settings.append(f"{column} {' / '.join(found)}")
    return [
        ("devices", devices(df)),
        ("hosts", _join(_distinct(df, "host"))),
        ("git", git_text(df)),
        ("versions", ", ".join(versions) or "unknown"),
        ("specs (spec hash)", _join(specs, 6)),
        ("settings", ", ".join(settings) or "unknown"),
        ("runs", dates(df) + " (UTC)"),
        ("rows", f"{len(df)}: " + ", ".join(f"{n} {s}" for s, n in statuses.items())),
    ]
