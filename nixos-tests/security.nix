# Security: only authorised keys push, and they get nothing but git; mutating
# API requests need the token; the service writes only to its own directories.
{ pkgs, ... }:
let
  testFlake = import ./lib/test-flake.nix pkgs;
in
{
  name = "procurator-ci-security";
  imports = [ ./lib/nodes.nix ];

  # A member of the service's group, and someone who is not.
  nodes.server.users.users = {
    alice = {
      isNormalUser = true;
      extraGroups = [ "procurator-ci" ];
    };
    mallory.isNormalUser = true;
  };

  testScript = builtins.readFile ./lib/helpers.py + ''
    def post_status(path: str, body: dict[str, str], token: str | None) -> int:
        auth = f"--header 'Authorization: Bearer {token}'" if token is not None else ""
        return int(client.succeed(
            "curl --silent --output /dev/null --write-out '%{http_code}' --request POST"
            f" --header 'Content-Type: application/json' {auth} --data '{json.dumps(body)}' {API}{path}"
        ))


    start()
    token = server.succeed("cat /run/procurator-ci-test/api-token").strip()

    with subtest("a key that is not authorised cannot push"):
        client.succeed("ssh-keygen -q -t ed25519 -N \"\" -f /root/intruder")
        commit_id = commit("${testFlake.passing}", "pushed by an intruder")
        output = client.fail(
            "GIT_SSH_COMMAND='ssh -i /root/intruder -o IdentitiesOnly=yes'"
            " git -C /root/demo push origin HEAD:refs/heads/intruder 2>&1"
        )
        assert "Permission denied (publickey)" in output, output
        assert api("/api/builds?repo=demo&branch=intruder")["builds"] == []

    with subtest("an authorised key pushes, but gets no shell and no forwarding"):
        build_id = queued_build(push("main"), "main", commit_id)
        output = client.fail("ssh procurator-ci@server id 2>&1")
        assert "unrecognized command" in output, output
        output = client.fail("timeout 60 ssh -o ExitOnForwardFailure=yes -N -R 4000:127.0.0.1:22 procurator-ci@server 2>&1")
        assert "remote port forwarding failed" in output, output

    with subtest("mutating API requests need the token"):
        body = {"repo": "demo", "branch": "main", "commit": commit_id}
        assert post_status("/api/builds", body, None) == 401
        assert post_status("/api/builds", body, "not-the-token") == 401
        assert post_status(f"/api/builds/{build_id}/cancel", {}, None) == 401
        assert post_status("/api/repos", {"name": "sneaky", "description": ""}, None) == 401
        assert post_status("/api/builds", body, token) in (200, 201)

    with subtest("the hook's socket is for the service user and group only"):
        mode = server.succeed("stat --format='%a %U %G' /var/lib/procurator-ci/procurator-ci.sock").strip()
        assert mode == "660 procurator-ci procurator-ci", mode

    with subtest("a member of the group queues builds on the socket; others cannot connect"):
        socket_post = (
            "curl --silent --show-error --output /dev/null --write-out '%{http_code}'"
            " --unix-socket /var/lib/procurator-ci/procurator-ci.sock"
            " --header 'Content-Type: application/json'"
            f" --data '{json.dumps({'repo': 'demo', 'branch': 'main', 'commit': commit_id})}'"
            " http://localhost/api/builds"
        )
        as_alice = "setpriv --reuid=alice --regid=users --init-groups"
        assert server.succeed(f"{as_alice} {socket_post}").strip() in ("200", "201")
        server.fail(f"setpriv --reuid=mallory --regid=users --init-groups {socket_post}")

    with subtest("the service writes only to its state, cache and repository directories"):
        server.succeed("install -d -o procurator-ci -g procurator-ci /srv/outside")
        as_user = "setpriv --reuid=procurator-ci --regid=procurator-ci --clear-groups"
        # Outside the service, the user may write there; inside, it may not.
        server.succeed(f"{as_user} touch /srv/outside/probe")
        pid = server.succeed("systemctl show --property=MainPID --value procurator-ci.service").strip()
        in_service = f"nsenter --target={pid} --mount {as_user}"
        for d in ["/var/lib/procurator-ci", "/var/lib/procurator-ci/repos/demo.git", "/var/cache/procurator-ci"]:
            server.succeed(f"{in_service} touch {d}/probe", f"rm {d}/probe")
        for d in ["/srv/outside", "/etc", "/nix/var/nix", "/var/lib", "/root", "/home"]:
            server.fail(f"{in_service} touch {d}/probe")
  '';
}
