"""Termination messages: what kubelet puts in `state.terminated.message` when a container exits.

The container writes its message to `terminationMessagePath` (a file of the attempt, bind-mounted
into the container); kubelet reports at most the last 4096 bytes of it. With the policy
`FallbackToLogsOnError`, an empty file and a non-zero exit code, the message is the tail of the
container's log instead: its last 80 lines, of which at most the last 2048 bytes.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
POLICY_FILE = "File"
POLICY_FALLBACK_TO_LOGS = "FallbackToLogsOnError"
MAX_MESSAGE_BYTES = 4096
MAX_LOG_LINES = 80
MAX_LOG_BYTES = 2048


def read_tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of a file; a missing file reads as empty."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - limit))
            return handle.read(limit)
    except FileNotFoundError:
        return b""


def log_tail(data: bytes, lines: int = MAX_LOG_LINES, limit: int = MAX_LOG_BYTES) -> bytes:
    """The last `lines` lines of `data`, then at most its last `limit` bytes.

    An unterminated last line counts as a line, as it does for `kubectl logs --tail`.
    """
    kept = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    return kept[-limit:] if limit > 0 else b""


def falls_back_to_logs(policy: str, exit_code: int) -> bool:
    return policy == POLICY_FALLBACK_TO_LOGS and exit_code != 0


def choose_message(written: bytes, policy: str, exit_code: int, logged: bytes) -> str:
    """The message from what the container wrote, else (policy permitting) from its log's tail."""
    if written or not falls_back_to_logs(policy, exit_code):
        return written[-MAX_MESSAGE_BYTES:].decode(errors="replace")
    return log_tail(logged).decode(errors="replace")


def termination_message(message_file: Path | None, policy: str, exit_code: int, log_file: Path) -> str:
    try:
        written = read_tail(message_file, MAX_MESSAGE_BYTES) if message_file is not None else b""
    except OSError as error:
        return f"Error on reading termination log {message_file}: {error}"
    logged = b""
    if not written and falls_back_to_logs(policy, exit_code):
        # The last 80 lines capped to their last 2048 bytes always lie within the file's last
        # 2048 bytes, so a long log is never read whole.
        try:
            logged = read_tail(log_file, MAX_LOG_BYTES)
        except OSError as error:
            return f"Error on reading termination message from logs: {error}"
    return choose_message(written, policy, exit_code, logged)
