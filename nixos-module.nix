# NixOS module: services.procurator-ci
#
# The flake's `nixosModules.default` (nix/default-module.nix) imports this file
# and defaults `package` to this checkout built by the system's nixpkgs; used
# on its own, `package` defaults to `pkgs.procurator-ci` (e.g. from the flake's
# overlay).
{
  config,
  lib,
  options,
  pkgs,
  ...
}:
let
  cfg = config.services.procurator-ci;
  settingsFormat = pkgs.formats.toml { };

  # systemd creates it and /var/cache/procurator-ci (StateDirectory=,
  # CacheDirectory=); the daemon keeps its database, repositories, logs and
  # socket below the first, and nix's caches in the second.
  stateDir = "/var/lib/procurator-ci";
  tokenCredential = "api-token";
  # Where systemd puts the unit's LoadCredential= files at run time; the
  # generated configuration names notification secrets there.
  credentialsDir = "/run/credentials/procurator-ci.service";
  notifySecretCredential = i: "notify-secret-${toString i}";
  forgeTokenCredential = name: "forge-token-${name}";
  # Forge tokens reach the daemon as credentials too.
  forgeTokens = lib.filterAttrs (_: repo: repo.forge_token_file != null) cfg.repos;
  cacheKeyCredential = "cache-secret-key";
  # A mirrored repository's files, as credentials named after it.
  repoCredential = name: kind: "repo-${name}-${kind}";
  repoSecrets = lib.concatLists (
    lib.mapAttrsToList (
      name: repo:
      lib.optional (repo.upstream_credentials_file != null) {
        credential = repoCredential name "upstream-credentials";
        file = repo.upstream_credentials_file;
      }
      ++ lib.optional (repo.webhook_secret_file != null) {
        credential = repoCredential name "webhook-secret";
        file = repo.webhook_secret_file;
      }
    ) cfg.repos
  );
  secretPath =
    lib.types.nullOr (
      lib.types.pathWith {
        inStore = false;
        absolute = true;
      }
    );
  caching = cfg.cache.serve || cfg.cache.push != [ ];
  # `file://` caches and plain absolute paths (a local store) are directories
  # the daemon writes: the unit's only writable paths besides its own are
  # these, and tmpfiles creates them for the service user before it starts
  # (ReadWritePaths= on a missing path stops the unit with 226/NAMESPACE).
  fileCaches = map (url: builtins.head (lib.splitString "?" (lib.removePrefix "file://" url))) (
    lib.filter (url: lib.hasPrefix "file://" url || lib.hasPrefix "/" url) cfg.cache.push
  );

  # Keys the module derives from the unit; setting them would point the
  # daemon outside the only directories the unit may write.
  managedKeys = [
    "state_dir"
    "cache_dir"
    "database_url"
    "repos_base_path"
    "socket_path"
    "api_token_file"
    "cache_push"
    "cache_serve"
    "cache_secret_key_file"
    "cache_keep_builds"
    "cache_push_jobs"
  ];

  # Notification secrets reach the daemon as credentials, like the token: the
  # file the daemon reads is systemd's copy, so the secret itself may stay
  # readable by root alone.
  notifySecrets = lib.filter (entry: entry.secret_file != null) (
    lib.imap0 (i: entry: {
      credential = notifySecretCredential i;
      inherit (entry) secret_file;
    }) cfg.settings.notify
  );
  # Unset options (null) are left to the daemon's defaults.
  generatedSettings =
    lib.filterAttrs (_: value: value != null) (removeAttrs cfg.settings [ "notify" ])
    // {
      # Explicit, so that `procurator-ci backup` and `check-config` run by an
      # administrator (with /etc/procurator-ci/config.toml) find the same
      # state as the unit, which also gets it as $STATE_DIRECTORY.
      state_dir = stateDir;
      cache_push = cfg.cache.push;
      cache_serve = cfg.cache.serve;
      cache_keep_builds = cfg.cache.keepBuilds;
      cache_push_jobs = cfg.cache.pushJobs;
    }
    // lib.optionalAttrs (cfg.cache.secretKeyFile != null) {
      cache_secret_key_file = "${credentialsDir}/${cacheKeyCredential}";
    }
    // lib.optionalAttrs (cfg.settings.notify != [ ]) {
      notify = lib.imap0 (
        i: entry:
        removeAttrs entry [ "secret_file" ]
        // lib.optionalAttrs (entry.secret_file != null) {
          secret_file = "${credentialsDir}/${notifySecretCredential i}";
        }
      ) cfg.settings.notify;
    };

  # The generated file is validated by the daemon itself at build time, so a
  # typo in `settings` fails `nixos-rebuild`, not the service. The build
  # sandbox cannot see files that exist only at run time (the credentials),
  # so `--build-time` checks everything but their contents; the daemon reads
  # them strictly when it starts. A system built for another platform skips
  # the check, since the build machine cannot run the daemon; `checkConfig =
  # false` skips it too.
  unchecked = settingsFormat.generate "procurator-ci-unchecked.toml" generatedSettings;
  configFile =
    if cfg.checkConfig && pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform then
      pkgs.runCommandLocal "procurator-ci.toml"
        {
          inherit unchecked;
        }
        ''
          ${lib.getExe cfg.package} check-config --build-time --config "$unchecked"
          cp "$unchecked" "$out"
        ''
    else
      unchecked;

  port = lib.toInt (lib.last (lib.splitString ":" cfg.settings.bind_address));

  # `restrict` turns off port, agent and X11 forwarding and the pty: a key may
  # run git-shell (the user's login shell) and nothing else. Without it a key
  # could forward a connection to the daemon's socket.
  restrictKey =
    key:
    if builtins.match "(ssh|ecdsa|sk)-.*" key != null then "restrict ${key}" else "restrict,${key}";

  # Whether root's SSH client knows a key for `host`: one of
  # programs.ssh.knownHosts matches it. Entries are known_hosts patterns (`*`
  # and `?` are wildcards, a leading `!` excludes), for a host key or, with
  # certAuthority, for the CA that signs the host's key; OpenSSH compares host
  # names without regard to case.
  knownHostPatterns = lib.mapAttrsToList (name: host: host.hostNames ++ host.extraHostNames) (
    config.programs.ssh.knownHosts
  );
  patternMatches =
    host: pattern:
    builtins.match (lib.replaceStrings [ "\\*" "\\?" ] [ ".*" "." ] (
      lib.escapeRegex (lib.toLower pattern)
    )) (lib.toLower host) != null;
  entryMatches =
    host: patterns:
    let
      excluded = map (lib.removePrefix "!") (lib.filter (lib.hasPrefix "!") patterns);
      included = lib.filter (pattern: !lib.hasPrefix "!" pattern) patterns;
    in
    lib.any (patternMatches host) included && !lib.any (patternMatches host) excluded;
  hostKeyKnown = host: lib.any (entryMatches host) knownHostPatterns;
  machinesWithoutHostKey = lib.filter (
    machine: machine.publicHostKey == null && !hostKeyKnown machine.hostName
  ) cfg.buildMachines;
  machinesWithKeyInStore = lib.filter (
    machine: lib.hasPrefix "${builtins.storeDir}/" (toString (machine.sshKey or ""))
  ) cfg.buildMachines;
  hostNamesOf = machines: lib.concatMapStringsSep ", " (machine: machine.hostName) machines;

  setting =
    type: default: description:
    lib.mkOption {
      inherit type default description;
    };
in
{
  options.services.procurator-ci = {
    enable = lib.mkEnableOption "procurator-ci, a CI daemon that runs `nix flake check` for every `git push`";

    package = lib.mkPackageOption pkgs "procurator-ci" { };

    user = lib.mkOption {
      type = lib.types.str;
      default = "procurator-ci";
      description = ''
        User the daemon runs as. It owns the repositories, so pushes over SSH
        log in as this user (see {option}`services.procurator-ci.authorizedKeys`).
        The module creates the user only under its default name.
      '';
    };

    group = lib.mkOption {
      type = lib.types.str;
      default = "procurator-ci";
      description = ''
        Group of the daemon. Members may connect to the daemon's socket, i.e.
        queue builds, and read the repositories.
      '';
    };

    repos = lib.mkOption {
      type = lib.types.attrsOf (
        lib.types.submodule {
          options.description = lib.mkOption {
            type = lib.types.str;
            default = "";
            description = "Shown on the web page.";
          };
          options.default_branch = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "trunk";
            description = ''
              The branch the repository's `HEAD` names: the one its page's
              headline and its badge (without `?branch`) are about. Kept in
              sync at every start when set; `main` at creation otherwise.
            '';
          };
          options.upstream = lib.mkOption {
            type = lib.types.nullOr lib.types.singleLineStr;
            default = null;
            example = "https://github.com/team/app.git";
            description = ''
              A git URL (`https://`, `ssh://` or `user@host:path`, `git://`,
              `file://`) the repository mirrors: its branches are fetched
              (with prune) and built as pushes are. No password or token in
              it: those go in `upstream_credentials_file`.
            '';
          };
          options.upstream_credentials_file = lib.mkOption {
            type = secretPath;
            default = null;
            example = "/run/keys/app-deploy-token";
            description = ''
              A token (`token` or `user:token`) for an https upstream, or an
              SSH private key for an ssh one, outside the Nix store. Passed to
              the daemon with systemd's `LoadCredential=`.
            '';
          };
          options.poll_interval_secs = lib.mkOption {
            type = lib.types.nullOr lib.types.ints.unsigned;
            default = null;
            example = 60;
            description = "Seconds between looks at the upstream (the daemon's default is 300; 0: webhooks only).";
          };
          options.webhook_secret_file = lib.mkOption {
            type = secretPath;
            default = null;
            example = "/run/keys/app-webhook-secret";
            description = ''
              The secret the forge signs webhooks with (GitHub, Gitea and
              Forgejo: the webhook's secret; GitLab: its secret token),
              outside the Nix store. Passed with `LoadCredential=`.
            '';
          };
          options.build_fork_pull_requests = lib.mkOption {
            type = lib.types.bool;
            default = false;
            description = ''
              Build forks' pull requests without a maintainer's approval
              (untrusted either way: no cache push, no secrets).
            '';
          };
          options.forge = lib.mkOption {
            type = lib.types.nullOr (
              lib.types.enum [
                "github"
                "gitea"
                "forgejo"
                "gitlab"
              ]
            );
            default = null;
            example = "github";
            description = ''
              The forge each build's commit statuses are posted to
              (`procurator-ci` for the build, `procurator-ci/<check>` per
              check). Needs `forge_repo` and `forge_token_file`.
            '';
          };
          options.forge_api_url = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "https://codeberg.org/api/v1";
            description = ''
              The forge's API root: `https://api.github.com` and
              `https://gitlab.com/api/v4` by default; required for Gitea and
              Forgejo (`https://HOST/api/v1`).
            '';
          };
          options.forge_repo = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "team/app";
            description = "The repository on the forge, `owner/name` (GitLab: `group/subgroup/name`).";
          };
          options.forge_token_file = lib.mkOption {
            type = lib.types.nullOr (
              lib.types.pathWith {
                inStore = false;
                absolute = true;
              }
            );
            default = null;
            example = "/run/keys/procurator-ci-github-token";
            description = ''
              The token statuses are posted with (GitHub: a fine-grained token
              with "Commit statuses: write"; Gitea and Forgejo: `write:repository`;
              GitLab: `api`). Passed to the daemon with systemd's
              `LoadCredential=`, like {option}`services.procurator-ci.apiTokenFile`,
              so only root needs to read it.
            '';
          };
          options.forge_check_statuses = lib.mkOption {
            type = lib.types.nullOr (lib.types.ints.between 0 1000);
            default = null;
            example = 50;
            description = ''
              Per-check statuses a build posts at most (25 unless set); a
              build with more checks posts one `procurator-ci/checks`
              summary instead.
            '';
          };
        }
      );
      default = { };
      example = lib.literalExpression ''{ website.description = "our home page"; }'';
      description = ''
        Repositories to manage. The daemon creates each as a bare repository
        `${stateDir}/repos/<name>.git` with its post-receive hook at startup.
        Names match `[A-Za-z0-9][A-Za-z0-9._-]{0,99}` and do not end in `.git`.
      '';
    };

    authorizedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.singleLineStr;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop" ];
      description = ''
        SSH public keys that may push to every managed repository, as
        `procurator-ci@<host>:${stateDir}/repos/<name>.git`. They log in as the
        service user with `git-shell` as its shell and the `restrict` option,
        so they can run git's push and fetch commands and nothing else, and
        the post-receive hook runs as the repositories' owner. Pushing is
        running code: every key here can have `nix flake check` build
        anything in the Nix sandbox of this machine. Needs
        {option}`services.openssh.enable`.
      '';
    };

    apiTokenFile = lib.mkOption {
      type = lib.types.nullOr (
        lib.types.pathWith {
          inStore = false;
          absolute = true;
        }
      );
      default = null;
      example = "/run/keys/procurator-ci-api-token";
      description = ''
        File with the bearer token for the HTTP API's mutating requests,
        outside the Nix store (the store is world-readable). Passed to the
        daemon with systemd's `LoadCredential=`, so only root needs to read it.
        When `null` the daemon creates `${stateDir}/api-token` (mode 0600) on
        first start.
      '';
    };

    cache = {
      serve = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Serve a Nix binary cache under `<public_url>/nix-cache/` with the
          outputs of the builds the daemon ran and their closures (nothing
          else from the store), signed with {option}`services.procurator-ci.cache.secretKeyFile`.
          It obeys `settings.public_read`: a private daemon's cache needs the
          API token, which nix sends from a `netrc-file`.
        '';
      };
      push = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [
          "s3://ci-cache?region=eu-central-1"
          "file:///srv/nix-cache"
        ];
        description = ''
          Store URLs (`nix copy --to`) that the outputs of every successful
          build, with their closures, are pushed to, signed. A failed push is
          retried with backoff and never changes the build's result. The
          directories of `file://` URLs and plain absolute paths become
          writable for the unit, and are created for the service user
          (mode 0755) when missing. Pushes run `nix copy` of
          {option}`nix.package` (tested: Nix 2.8, 2.26, 2.34).
        '';
      };
      secretKeyFile = lib.mkOption {
        type = lib.types.nullOr (
          lib.types.pathWith {
            inStore = false;
            absolute = true;
          }
        );
        default = null;
        example = "/run/keys/procurator-ci-cache.secret";
        description = ''
          The binary cache signing key (`nix key generate-secret --key-name
          ci.example.org-1`), outside the Nix store. Passed to the daemon with
          systemd's `LoadCredential=`, like {option}`services.procurator-ci.apiTokenFile`.
          Required when the cache is served or pushed. The public key
          (`nix key convert-secret-to-public`) is shown on the web page and
          in `GET /api/health`.
        '';
      };
      keepBuilds = lib.mkOption {
        type = lib.types.ints.between 0 1000;
        default = 5;
        description = ''
          The last successful builds per branch whose outputs stay GC roots
          (under the state directory); older roots are removed so that the
          garbage collector can reclaim them.
        '';
      };
      pushJobs = lib.mkOption {
        type = lib.types.ints.between 1 32;
        default = 2;
        description = "Pushes to binary caches that run at once.";
      };
    };

    buildMachines = lib.mkOption {
      # The entries of nix.buildMachines, checked by the same submodule.
      inherit (options.nix.buildMachines) type;
      default = [ ];
      example = lib.literalExpression ''
        [
          {
            hostName = "builder.example.org";
            protocol = "ssh-ng";
            sshUser = "nixremote";
            sshKey = "/etc/nix/builder_ed25519"; # root's, mode 0600, not in the store
            system = "x86_64-linux";
            maxJobs = 8;
            supportedFeatures = [ "big-parallel" ];
          }
        ]
      '';
      description = ''
        Machines the Nix daemon sends builds to. procurator-ci runs
        `nix flake check` through the Nix daemon, so its checks are built
        wherever the daemon builds: the entries are added to
        {option}`nix.buildMachines` as they are, and
        {option}`nix.distributedBuilds` is turned on. They serve every build
        of this machine, not only procurator-ci's; defining
        {option}`nix.buildMachines` directly works the same.

        The daemon connects as root. `sshKey` must be readable by root and
        outside the Nix store (the store is world-readable; the module refuses
        a key there), and root must know the builder's host key: give
        `publicHostKey` or {option}`programs.ssh.knownHosts` (the module warns
        when neither names the host). On the builder, `sshUser` must be in
        `nix.settings.trusted-users`. Use `protocol = "ssh-ng"`. To build
        nothing on this machine, set `nix.settings.max-jobs = 0`.

        Tested with these {option}`nix.package` versions: Nix 2.8 (Debian 12),
        2.26 (Debian 13, also through a nix-daemon with build users and
        `sandbox = true`) and 2.34 (Debian unstable). Lix and Determinate Nix
        are not tested.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Open the port of {option}`services.procurator-ci.settings.bind_address`
        (which must then not be a loopback address to be reachable).
      '';
    };

    checkConfig = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Whether the generated configuration is checked with `procurator-ci
        check-config --build-time` when the system is built, so that an
        unknown key or a bad value fails `nixos-rebuild` rather than the
        service. Like {option}`nix.checkConfig`: turn it off only when the
        build machine cannot run the daemon for a reason the module does not
        detect (a cross build is detected and skips the check by itself).
      '';
    };

    watchdogSec = lib.mkOption {
      type = lib.types.ints.positive;
      default = 30;
      description = ''
        systemd restarts the daemon when it has not reported liveness for this
        many seconds (`WatchdogSec=`).
      '';
    };

    configFile = lib.mkOption {
      type = lib.types.package;
      internal = true;
      readOnly = true;
      description = ''
        The daemon's generated configuration file, checked with
        `procurator-ci check-config --build-time` when the build machine can
        run the daemon. Exposed for the offline rehearsal of that check.
      '';
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        Configuration written to the daemon's TOML file and checked with
        `procurator-ci check-config` at build time. Any key the daemon knows
        may be set; unknown keys fail the build. The state, database,
        repository, socket and token paths are managed by the module.
      '';
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          bind_address = setting lib.types.str "127.0.0.1:3000" "Address and port of the HTTP server and web page, e.g. `[::]:3000`.";
          public_url = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "https://ci.example.org";
            description = ''
              Base of the links the hook prints and the API returns, and the
              host name the daemon answers to besides its addresses (requests
              naming another `Host` get 400). `null`: `http://<bind_address>`,
              with the machine's host name for an all-interfaces address
              (`0.0.0.0:3000` gives `http://<networking.hostName>:3000`).
              Behind a reverse proxy, the address users open.
            '';
          };
          ssh_push_base = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default =
              if cfg.authorizedKeys != [ ] then "${cfg.user}@${config.networking.fqdnOrHostName}:" else null;
            defaultText = lib.literalExpression ''
              if config.services.procurator-ci.authorizedKeys != [ ]
              then "''${config.services.procurator-ci.user}@''${config.networking.fqdnOrHostName}:"
              else null
            '';
            description = "Prefix of the push URLs the web page shows (`<prefix><state dir>/repos/<name>.git`).";
          };
          workers = setting lib.types.ints.positive 1 "Builds run at the same time.";
          max_retries = setting lib.types.ints.unsigned 3 "Retries of a build that failed for infrastructure reasons.";
          build_timeout_secs = setting lib.types.ints.positive 10800 "Wall-clock limit of one build.";
          max_silent_secs = setting lib.types.ints.positive 3600 "A build without output for this long is ended.";
          kill_grace_secs = setting lib.types.ints.positive 10 "Time between SIGTERM and SIGKILL when a build is ended.";
          shutdown_timeout_secs = setting lib.types.ints.positive 30 "Time running builds get to finish when the daemon stops.";
          log_max_bytes = setting lib.types.ints.positive 67108864 "Largest stored log of one build.";
          log_retention_days = setting lib.types.ints.unsigned 90 "Days build logs are kept; 0 keeps them forever.";
          public_read = setting lib.types.bool true "Whether reading the API and the web page needs no token.";
          notify = lib.mkOption {
            default = [ ];
            description = ''
              `[[notify]]` entries: webhooks or commands run when builds end, with
              the keys the daemon documents. A `secret_file` is passed with
              systemd's `LoadCredential=`, like {option}`services.procurator-ci.apiTokenFile`:
              root reads it when the service starts, so it may be readable by
              root alone, and it must not be in the Nix store.
            '';
            type = lib.types.listOf (
              lib.types.submodule {
                freeformType = settingsFormat.type;
                options.secret_file = lib.mkOption {
                  type = lib.types.nullOr (
                    lib.types.pathWith {
                      inStore = false;
                      absolute = true;
                    }
                  );
                  default = null;
                  example = "/run/keys/procurator-ci-webhook-secret";
                  description = "File with the key that signs the webhook's bodies (HMAC-SHA256).";
                };
              }
            );
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.all (
          name: builtins.match "[A-Za-z0-9][A-Za-z0-9._-]{0,99}" name != null && !lib.hasSuffix ".git" name
        ) (lib.attrNames cfg.repos);
        message = "services.procurator-ci.repos: names must match [A-Za-z0-9][A-Za-z0-9._-]{0,99} and not end in .git";
      }
      {
        assertion = !lib.any (key: cfg.settings ? ${key}) managedKeys;
        message = "services.procurator-ci.settings: ${lib.concatStringsSep ", " managedKeys} are set by the module (use apiTokenFile for the token, cache.* for the binary cache)";
      }
      {
        assertion = !caching || cfg.cache.secretKeyFile != null;
        message = "services.procurator-ci.cache: serve and push need cache.secretKeyFile: every served or pushed path is signed";
      }
      {
        assertion = cfg.authorizedKeys == [ ] || config.services.openssh.enable;
        message = "services.procurator-ci.authorizedKeys needs services.openssh.enable";
      }
      {
        assertion = machinesWithKeyInStore == [ ];
        message = "services.procurator-ci.buildMachines: the sshKey of ${hostNamesOf machinesWithKeyInStore} is in the Nix store, which every user can read; give a path outside it";
      }
    ];

    warnings = lib.optional (machinesWithoutHostKey != [ ]) (
      "services.procurator-ci.buildMachines: no host key is declared for ${hostNamesOf machinesWithoutHostKey}:"
      + " set publicHostKey or programs.ssh.knownHosts, or the Nix daemon's SSH connection fails"
      + " unless root's ~/.ssh/known_hosts already holds the key"
    );

    services.procurator-ci.configFile = configFile;

    nix.buildMachines = cfg.buildMachines;
    # A default, as nixpkgs' modules set such options: the user's `false` wins.
    nix.distributedBuilds = lib.mkIf (cfg.buildMachines != [ ]) (lib.mkDefault true);

    services.procurator-ci.settings.repos = lib.mapAttrs (
      name: repo:
      { inherit (repo) description; }
      // lib.optionalAttrs (repo.default_branch != null) { inherit (repo) default_branch; }
      // lib.optionalAttrs (repo.upstream != null) { inherit (repo) upstream; }
      // lib.optionalAttrs (repo.poll_interval_secs != null) { inherit (repo) poll_interval_secs; }
      // lib.optionalAttrs repo.build_fork_pull_requests { build_fork_pull_requests = true; }
      // lib.optionalAttrs (repo.upstream_credentials_file != null) {
        upstream_credentials_file = "${credentialsDir}/${repoCredential name "upstream-credentials"}";
      }
      // lib.optionalAttrs (repo.webhook_secret_file != null) {
        webhook_secret_file = "${credentialsDir}/${repoCredential name "webhook-secret"}";
      }
      // lib.filterAttrs (_: value: value != null) {
        inherit (repo)
          forge
          forge_api_url
          forge_repo
          forge_check_statuses
          ;
      }
      // lib.optionalAttrs (repo.forge_token_file != null) {
        forge_token_file = "${credentialsDir}/${forgeTokenCredential name}";
      }
    ) cfg.repos;

    users.users = lib.mkMerge [
      (lib.mkIf (cfg.user == "procurator-ci") {
        procurator-ci = {
          description = "procurator-ci daemon and git push user";
          isSystemUser = true;
          inherit (cfg) group;
          home = stateDir;
          shell = "${pkgs.git}/bin/git-shell";
        };
      })
      { ${cfg.user}.openssh.authorizedKeys.keys = map restrictKey cfg.authorizedKeys; }
    ];
    users.groups = lib.mkIf (cfg.group == "procurator-ci") { procurator-ci = { }; };

    systemd.tmpfiles.rules = map (dir: "d ${dir} 0755 ${cfg.user} ${cfg.group} - -") fileCaches;

    # For the administrator: `procurator-ci check-config` and
    # `procurator-ci backup DIR` read the unit's configuration by default.
    environment.etc."procurator-ci/config.toml".source = cfg.configFile;
    environment.systemPackages = [ cfg.package ];

    # May use the nix daemon like any user; never a trusted user.
    nix.settings.extra-allowed-users = [ cfg.user ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];

    systemd.services.procurator-ci = {
      description = "procurator-ci: nix flake check for every git push";
      wantedBy = [ "multi-user.target" ];
      wants = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      path = [
        config.nix.package
        pkgs.git
        # ssh:// upstreams.
        pkgs.openssh
      ];
      # nix's caches go to $CACHE_DIRECTORY (CacheDirectory= below), which
      # the daemon passes to nix and git as XDG_CACHE_HOME.
      environment = {
        NIX_REMOTE = "daemon";
      }
      // lib.optionalAttrs (cfg.apiTokenFile != null) {
        PROCURATOR_CI_API_TOKEN_FILE = "%d/${tokenCredential}";
      };

      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        WatchdogSec = cfg.watchdogSec;
        ExecStart = "${lib.getExe cfg.package} serve --config ${cfg.configFile}";
        Restart = "on-failure";
        RestartSec = 2;
        # SIGTERM reaches the daemon alone: it ends its builds' process groups
        # itself and records why. systemd's SIGKILL then reaches whatever is
        # left, after the daemon's own deadline.
        KillMode = "mixed";
        TimeoutStopSec = cfg.settings.shutdown_timeout_secs + cfg.settings.kill_grace_secs + 5;

        User = cfg.user;
        Group = cfg.group;
        StateDirectory = "procurator-ci";
        StateDirectoryMode = "0750";
        CacheDirectory = "procurator-ci";
        CacheDirectoryMode = "0700";
        UMask = "0027";
        # Client connections (max_connections) plus the 256 descriptors the
        # daemon keeps for its socket, database, git and builds; systemd's
        # default soft limit of 1024 would cap connections at 768.
        LimitNOFILE = 65536;
        LoadCredential =
          lib.optional (cfg.apiTokenFile != null) "${tokenCredential}:${cfg.apiTokenFile}"
          ++ map (secret: "${secret.credential}:${secret.secret_file}") notifySecrets
          ++ map (secret: "${secret.credential}:${secret.file}") repoSecrets
          ++ lib.mapAttrsToList (
            name: repo: "${forgeTokenCredential name}:${repo.forge_token_file}"
          ) forgeTokens
          ++ lib.optional (
            cfg.cache.secretKeyFile != null
          ) "${cacheKeyCredential}:${cfg.cache.secretKeyFile}";
        ReadWritePaths = lib.mkIf (fileCaches != [ ]) fileCaches;

        # Hardening. Kept: everything that leaves the nix client (talking to
        # the nix daemon over AF_UNIX, fetching flake inputs) and git working.
        # Dropped, and why:
        # - PrivateNetwork=, IPAddressDeny=: the API listens on the network
        #   and nix fetches flake inputs from anywhere.
        # - DynamicUser=: pushes log in over SSH as this user and the
        #   repositories must keep one owner across restarts.
        # - RestrictAddressFamilies= keeps AF_INET/AF_INET6 for the same
        #   reasons and AF_UNIX for the nix daemon and the hook's socket.
        # - SystemCallFilter= keeps @resources: the nix client raises its
        #   stack limit with setrlimit() before evaluating.
        # - RootDirectory=/RootImage=: nix and git need the host's /nix/store
        #   and /etc/nix.
        # - RestrictNamespaces= allows user and mount namespaces, and
        #   SystemCallFilter= mount(2): the daemon starts each nix that
        #   evaluates a pushed flake in a mount namespace of its own (in a
        #   user namespace, as this user is not root) where the state
        #   directory and the credentials are absent (README, "Security
        #   model"). Every other namespace stays forbidden.
        CapabilityBoundingSet = "";
        NoNewPrivileges = true;
        PrivateDevices = true;
        PrivateTmp = true;
        PrivateMounts = true;
        PrivateUsers = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = [
          "user"
          "mnt"
        ];
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "mount"
        ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
