# Shared by the procurator-ci VM tests: prepended to each test's script.
import json
import re
import typing
from typing import Any

API = "http://server:3000"
PUSH_URL = "procurator-ci@server:/var/lib/procurator-ci/repos/demo.git"
FINAL = {"success", "failed", "cancelled"}
QUEUED = re.compile(r"procurator-ci: build #(\d+) (?:already )?queued for (\S+) \(([0-9a-f]{7,40})\)(.*)")


# typing.Protocol by its module: the driver's prelude binds `Protocol` from
# typing_extensions, and mypy before 1.18 (nixos-25.11 has 1.17) refuses to
# bind the name again from typing ("Incompatible import of "Protocol"").
class Node(typing.Protocol):
    """What the helpers use of a test node. The driver's class for nodes is
    `Machine` in nixos-25.11 and `BaseMachine` on master, so naming either
    breaks the other; every node matches this."""

    def execute(self, command: str) -> tuple[int, str]: ...


def start() -> None:
    start_all()
    server.wait_for_unit("procurator-ci.service")
    server.wait_for_open_port(3000)
    server.wait_for_unit("sshd.service")
    client.wait_for_unit("multi-user.target")
    client.succeed("git init /root/demo", f"git -C /root/demo remote add origin {PUSH_URL}")


def api(path: str) -> Any:
    return json.loads(client.succeed(f"curl --fail --silent --show-error '{API}{path}'"))


def settled_health() -> Any:
    """The health once the first pre-flight has run (`starting` before)."""
    health: dict[str, Any] = {}

    def settled(_last_try: bool) -> bool:
        health.update(api("/api/health"))
        return health["status"] != "starting"

    retry(settled, 120)
    return health


def commit(flake: str, message: str) -> str:
    """Commits `flake` as the working copy's flake.nix; returns the commit id."""
    client.succeed(
        f"cp {flake} /root/demo/flake.nix",
        "git -C /root/demo add flake.nix",
        f"git -C /root/demo commit --allow-empty --message '{message}'",
    )
    return client.succeed("git -C /root/demo rev-parse HEAD").strip()


def push(branch: str) -> str:
    """Pushes HEAD to `branch` over SSH; returns what the pusher saw."""
    return client.succeed(f"git -C /root/demo push --force origin HEAD:refs/heads/{branch} 2>&1")


def queued_build(output: str, branch: str, commit_id: str) -> int:
    """The build id from the hook's line in a push's output."""
    match = QUEUED.search(output)
    assert match, f"the hook printed no queued line:\n{output}"
    assert match.group(2) == branch and commit_id.startswith(match.group(3)), match.group(0)
    assert API in match.group(4), f"no link to {API}: {match.group(0)}"
    return int(match.group(1))


def wait_for_status(build_id: int, statuses: set[str]) -> Any:
    build: dict[str, Any] = {}

    def reached(_last_try: bool) -> bool:
        build.update(api(f"/api/builds/{build_id}"))
        return build["status"] in statuses

    retry(reached, 300)
    return build
