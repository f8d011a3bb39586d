"""What a test says when a shutdown overran its bound: the tasks still running, and where."""

from __future__ import annotations

import asyncio


def pending_tasks(limit: int = 8) -> str:
    """Each task of the running loop (but the current one) with its innermost frames."""
    lines: list[str] = []
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current:
            continue
        lines.append(repr(task))
        for frame in task.get_stack(limit=limit):
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
    return "\n".join(lines)
