# The whole loop: a push over SSH, the hook's answer to the pusher, the queue,
# `nix flake check`, the result in the API, the web page, the badge, the
# journal, systemd's status line, and the unit's hardening score.
{ pkgs, ... }:
let
  testFlake = import ./lib/test-flake.nix pkgs;
in
{
  name = "procurator-ci-whole-loop";
  imports = [ ./lib/nodes.nix ];

  testScript = builtins.readFile ./lib/helpers.py + ''
    start()

    with subtest("the daemon answers and reports its status to systemd"):
        assert settled_health()["status"] == "ok"
        page = client.succeed(f"curl --fail --silent --show-error {API}/")
        assert "<html" in page.lower(), page[:500]
        assert api("/api/repos/demo")["name"] == "demo"
        status = server.succeed("systemctl show --property=StatusText --value procurator-ci.service")
        assert status.strip() != "", "the daemon sent no STATUS="

    with subtest("a pushed passing check ends in success"):
        commit_id = commit("${testFlake.passing}", "a passing check")
        build_id = queued_build(push("main"), "main", commit_id)
        build = wait_for_status(build_id, FINAL)
        assert build["status"] == "success", build
        assert (build["repo"], build["branch"], build["commit"]) == ("demo", "main", commit_id), build

    with subtest("a pushed failing check ends in failed, with the check's output in its log"):
        commit_id = commit("${testFlake.failing}", "a failing check")
        failed_id = queued_build(push("main"), "main", commit_id)
        build = wait_for_status(failed_id, FINAL)
        assert build["status"] == "failed" and build["failure_kind"] == "check", build
        build_log = client.succeed(f"curl --fail --silent --show-error {API}/api/builds/{failed_id}/logs")
        assert "${testFlake.failMarker}" in build_log, build_log[-2000:]

    with subtest("the badge answers"):
        badge = client.succeed(f"curl --fail --silent --show-error '{API}/api/repos/demo/badge.svg?branch=main'")
        assert "<svg" in badge, badge[:500]

    with subtest("the journal holds the build's entries with its id as a field"):
        lines = server.succeed(f"journalctl --output=json BUILD_ID={failed_id}").splitlines()
        entries = [json.loads(line) for line in lines]
        assert any(e.get("_SYSTEMD_UNIT") == "procurator-ci.service" for e in entries), entries[:5]
        assert all(e["BUILD_ID"] == str(failed_id) for e in entries), entries[:5]

    with subtest("the unit's exposure is at most 2.0"):
        server.succeed("systemd-analyze security --threshold=20 --no-pager procurator-ci.service >&2")
  '';
}
