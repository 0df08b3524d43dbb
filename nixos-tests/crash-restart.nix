# Crash, restart and watchdog: a build running while the daemon is killed ends
# once, in success; a push while the daemon is stopped is caught up when it
# starts; a frozen daemon is killed and restarted by systemd's watchdog.
{ pkgs, ... }:
let
  testFlake = import ./lib/test-flake.nix pkgs;
in
{
  name = "procurator-ci-crash-restart";
  imports = [ ./lib/nodes.nix ];

  nodes.server = {
    services.procurator-ci.watchdogSec = 5;
    # For the slow check: the sandbox's /bin/sh has no sleep of its own.
    # nixpkgs' coreutils is one binary, bin/coreutils, and bin/sleep is a
    # symlink to it; Nix copies a symlink source into the sandbox as it is,
    # so /bin/sleep would point at a /bin/coreutils that is not there. Bind
    # the binary itself: it runs as sleep when called by that name.
    nix.settings.extra-sandbox-paths = [ "/bin/sleep=${pkgs.coreutils}/bin/coreutils" ];
  };

  testScript = builtins.readFile ./lib/helpers.py + ''
    def main_pid() -> str:
        return server.succeed("systemctl show --property=MainPID --value procurator-ci.service").strip()


    def wait_for_restart(old_pid: str) -> None:
        server.wait_until_succeeds(
            "pid=$(systemctl show --property=MainPID --value procurator-ci.service);"
            f" [ \"$pid\" != 0 ] && [ \"$pid\" != {old_pid} ]"
        )
        server.wait_for_unit("procurator-ci.service")


    start()

    with subtest("a build running when the daemon is killed ends exactly once, in success"):
        commit_id = commit("${testFlake.slow}", "a slow check")
        build_id = queued_build(push("slow"), "slow", commit_id)
        wait_for_status(build_id, {"running"})
        pid = main_pid()
        server.succeed("systemctl kill --signal=KILL procurator-ci.service")
        wait_for_restart(pid)
        build = wait_for_status(build_id, FINAL)
        assert build["status"] == "success", build
        builds = api("/api/builds?repo=demo&branch=slow")["builds"]
        assert [b["id"] for b in builds] == [build_id], builds

    with subtest("a push while the daemon is stopped warns, and is built once it starts"):
        server.succeed("systemctl stop procurator-ci.service")
        commit_id = commit("${testFlake.passing}", "pushed while the daemon is stopped")
        output = push("offline")
        assert "procurator-ci: warning" in output, output
        server.succeed("systemctl start procurator-ci.service")
        server.wait_for_unit("procurator-ci.service")

        def caught_up(_last_try: bool) -> bool:
            return len(api("/api/builds?repo=demo&branch=offline")["builds"]) > 0

        retry(caught_up, 120)
        builds = api("/api/builds?repo=demo&branch=offline")["builds"]
        assert [b["commit"] for b in builds] == [commit_id], builds
        assert wait_for_status(builds[0]["id"], FINAL)["status"] == "success"

    with subtest("a frozen daemon is killed and restarted by the watchdog"):
        pid = main_pid()
        server.succeed(f"kill -STOP {pid}")
        wait_for_restart(pid)
        server.succeed("journalctl --unit=procurator-ci.service | grep 'Watchdog timeout'")
        assert settled_health()["status"] == "ok"
  '';
}
