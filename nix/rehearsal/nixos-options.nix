# Typed stand-ins for the NixOS options that nixos-module.nix and the VM
# tests (nixos-tests/*.nix, nixos-tests/lib/*.nix) set or read, for evaluating
# them offline with nixpkgs' `lib` alone (no nixpkgs checkout).
#
# Names, types and defaults follow nixpkgs nixos-25.11; the file each group
# comes from is named above it. Submodules are closed (not freeform) unless
# NixOS's own is freeform, so a misspelt option name fails the evaluation
# with "The option `...' does not exist". Sibling options NixOS declares next
# to the ones we use are declared too (by name, loosely typed where we never
# touch them) so that a configuration NixOS accepts is accepted here.
#
# `pkgs` may be a small stand-in: package defaults use `pkgs.X or` a fake.
#
# The `config` part only repeats what NixOS itself defines for these options
# (defaults set from config, a few of its assertions), nothing of our own.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  fake =
    name:
    pkgs.${name} or {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      meta.mainProgram = name;
    };

  # A package option as lib.mkPackageOption would make it, tolerant of a
  # `pkgs` that lacks the attribute.
  package =
    name: description:
    mkOption {
      type = types.package;
      default = fake name;
      defaultText = lib.literalExpression "pkgs.${name}";
      inherit description;
    };

  option =
    type: default: description:
    mkOption { inherit type default description; };
  bool = default: description: option types.bool default description;
  enable = what: lib.mkEnableOption what;
  strList = description: option (types.listOf types.str) [ ] description;

  writeText = pkgs.writeText or builtins.toFile;

  # ---- nixos/lib/systemd-lib.nix, nixos/lib/systemd-unit-options.nix ----

  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitNames = description: option (types.listOf unitNameType) [ ] description;

  # A unit setting: list definitions are concatenated, anything else must be
  # defined once (or identically).
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if lib.any (def: lib.isList def.value) defs then
        lib.concatMap (def: lib.toList def.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  # Values of [Service] keys NixOS checks (checkService in systemd-unit-options.nix).
  serviceKeyValues = {
    Type = [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "notify-reload"
      "idle"
    ];
    Restart = [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "always"
    ];
  };
  checkService =
    attrs:
    lib.all (key: !(attrs ? ${key}) || lib.elem attrs.${key} serviceKeyValues.${key}) (
      lib.attrNames serviceKeyValues
    );

  serviceModule =
    { name, ... }:
    {
      options = {
        # sharedOptions
        enable = bool true "Whether this unit exists (false makes it a link to /dev/null).";
        overrideStrategy = option (types.enum [
          "asDropinIfExists"
          "asDropin"
        ]) "asDropinIfExists" "Whether the unit is written as a unit file or as a drop-in.";
        requiredBy = unitNames "Units that require this unit.";
        upheldBy = unitNames "Units that uphold this unit.";
        wantedBy = unitNames "Units that want this unit, e.g. `multi-user.target`.";
        aliases = unitNames "Aliases of this unit.";

        # commonUnitOptions
        name = mkOption {
          type = types.str;
          description = "The unit's name, including its extension.";
        };
        description = option types.singleLineStr "" "Description of this unit.";
        documentation = strList "URIs of documentation for this unit.";
        requires = unitNames "Units started with this one; this one stops when they fail.";
        wants = unitNames "Units started with this one.";
        upholds = unitNames "Units kept running while this one runs.";
        after = unitNames "Units this one is started after.";
        before = unitNames "Units this one is started before.";
        bindsTo = unitNames "Like requires, and stop when they disappear.";
        partOf = unitNames "Units whose stop or restart also stops or restarts this one.";
        conflicts = unitNames "Units stopped when this one starts, and vice versa.";
        requisite = unitNames "Units that must already be active.";
        unitConfig = option (types.attrsOf unitOption) { } "Settings of the unit's [Unit] section.";
        onFailure = unitNames "Units activated when this one fails.";
        onSuccess = unitNames "Units activated when this one succeeds.";
        # NixOS: types.int with no default (unset: no StartLimit*= line).
        # Here null stands for unset, so that a whole unit can be forced.
        startLimitBurst = option (types.nullOr types.int) null "Starts allowed within startLimitIntervalSec.";
        startLimitIntervalSec = option (types.nullOr types.int) null "Interval of the unit's start rate limit.";

        # stage2CommonUnitOptions
        restartTriggers = option (types.listOf types.unspecified) [ ] "Items whose change restarts the unit.";
        reloadTriggers = option (types.listOf unitOption) [ ] "Items whose change reloads the unit.";

        # serviceOptions
        environment = option (types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        )) { } "Environment variables of the service's processes.";
        path = option (types.listOf (
          types.oneOf [
            types.package
            types.str
          ]
        )) [ ] "Packages whose bin and sbin are added to the service's PATH.";
        serviceConfig = option (types.addCheck (types.attrsOf unitOption) checkService) { } "Settings of the unit's [Service] section.";
        enableStrictShellChecks = bool false "Whether the service's scripts are checked with shellcheck.";
        enableDefaultPath = bool true "Whether a minimal default PATH is appended to the service's.";
        script = option types.lines "" "Shell commands run as the service's main process.";
        scriptArgs = option types.str "" "Arguments of the main process script.";
        preStart = option types.lines "" "Shell commands run before the main process.";
        postStart = option types.lines "" "Shell commands run after the main process started.";
        reload = option types.lines "" "Shell commands run on reload.";
        preStop = option types.lines "" "Shell commands run to stop the service.";
        postStop = option types.lines "" "Shell commands run after the main process exited.";
        jobScripts = mkOption {
          type = types.coercedTo types.path lib.singleton (types.listOf types.path);
          default = [ ];
          internal = true;
          description = "The unit's job script derivations.";
        };

        # stage2ServiceOptions
        restartIfChanged = bool true "Whether a changed service is restarted on switch.";
        reloadIfChanged = bool false "Whether a changed service is reloaded on switch.";
        stopIfChanged = bool true "Whether a changed service is stopped with the old unit and started with the new.";
        notSocketActivated = bool false "Whether the service is never treated as socket-activated on switch.";
        startAt = mkOption {
          type = types.either types.str (types.listOf types.str);
          default = [ ];
          apply = lib.toList;
          description = "Calendar times at which a timer starts the service.";
        };

        # nixos/modules/security/systemd-confinement.nix
        confinement = {
          enable = bool false "Whether the service runs in a chroot of its closure.";
          fullUnit = bool false "Whether the whole unit's closure is in the chroot.";
          packages = option (types.listOf (types.either types.str types.package)) [ ] "Extra packages in the chroot.";
          binSh = option (types.nullOr types.path) "/bin/sh" "The /bin/sh of the chroot.";
          mode = option (types.enum [
            "full-apivfs"
            "chroot-only"
          ]) "full-apivfs" "How much of the API file systems the chroot gets.";
        };
      };
      config.name = lib.mkDefault "${name}.service";
    };

  # ---- nixos/modules/system/boot/systemd/tmpfiles.nix ----

  tmpfilesEntry =
    { name, ... }:
    {
      options = {
        type = option types.str name "The tmpfiles.d type (d, f, L, ...).";
        mode = option types.str "-" "File mode.";
        user = option types.str "-" "Owner.";
        group = option types.str "-" "Group.";
        age = option types.str "-" "Age after which the file is cleaned up.";
        argument = option types.str "" "The type-specific argument.";
      };
    };

  # ---- nixos/modules/config/users-groups.nix, ssh/sshd.nix (userOptions) ----

  cfgUsers = config.users;

  subIdRange =
    start:
    types.submodule {
      options.${start} = mkOption {
        type = types.int;
        description = "First subordinate id.";
      };
      options.count = option types.int 1 "Number of subordinate ids.";
    };

  shortName =
    what: x:
    if lib.stringLength x < 32 then x else throw "${what} '${x}' is longer than 31 characters";

  userModule =
    { name, config, ... }:
    {
      options = {
        enable = bool true "Whether the account is created.";
        name = mkOption {
          type = types.passwdEntry types.str;
          apply = shortName "Username";
          description = "The account's name (default: the attribute name).";
        };
        description = option (types.passwdEntry types.str) "" "The GECOS field, e.g. the user's full name.";
        uid = option (types.nullOr types.int) null "The account's UID (null: allocated).";
        isSystemUser = bool false "Whether the UID is allocated in the system range.";
        isNormalUser = bool false "Whether this is a real user's account.";
        group = mkOption {
          type = types.str;
          default = "";
          apply = shortName "Group name";
          description = "The user's primary group.";
        };
        extraGroups = strList "The user's auxiliary groups.";
        home = option (types.passwdEntry types.path) "/var/empty" "The user's home directory.";
        homeMode = option (types.strMatching "[0-7]{1,5}") "700" "Mode of the home directory.";
        cryptHomeLuks = option (types.nullOr types.str) null "Encrypted LUKS device with the home directory.";
        pamMount = option (types.attrsOf types.str) { } "Attributes of the user's pam_mount entry.";
        shell = mkOption {
          type = types.nullOr (types.either types.shellPackage (types.passwdEntry types.path));
          default = fake "shadow";
          defaultText = lib.literalExpression "pkgs.shadow";
          description = "The user's login shell.";
        };
        ignoreShellProgramCheck = bool false "Whether the check that the shell's program is enabled is skipped.";
        subUidRanges = option (types.listOf (subIdRange "startUid")) [ ] "Subordinate UIDs of the user.";
        subGidRanges = option (types.listOf (subIdRange "startGid")) [ ] "Subordinate GIDs of the user.";
        autoSubUidGidRange = bool false "Whether subordinate ids are allocated automatically.";
        createHome = bool false "Whether the home directory is created.";
        useDefaultShell = bool false "Whether the shell is users.defaultUserShell.";
        hashedPassword = option (types.nullOr (types.passwdEntry types.str)) null "The hashed password.";
        password = option (types.nullOr types.str) null "The clear-text password.";
        hashedPasswordFile = mkOption {
          type = types.nullOr types.str;
          default = config.passwordFile;
          defaultText = lib.literalExpression "null";
          description = "File with the hashed password.";
        };
        passwordFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          visible = false;
          description = "Deprecated alias of hashedPasswordFile.";
        };
        initialHashedPassword = option (types.nullOr (types.passwdEntry types.str)) null "The initial hashed password.";
        initialPassword = option (types.nullOr types.str) null "The initial clear-text password.";
        packages = option (types.listOf types.package) [ ] "Packages of the user's profile.";
        expires = option (types.nullOr (
          types.strMatching "[[:digit:]]{4}-[[:digit:]]{2}-[[:digit:]]{2}"
        )) null "Date (YYYY-MM-DD) the account expires.";
        linger = option (types.nullOr types.bool) null "Whether the user's units linger (null: unmanaged).";

        # nixos/modules/services/networking/ssh/sshd.nix
        openssh.authorizedKeys = {
          keys = option (types.listOf types.singleLineStr) [ ] "Public keys that may log in as the user.";
          keyFiles = option (types.listOf types.path) [ ] "Files each with a public key that may log in as the user.";
        };
        openssh.authorizedPrincipals = option (types.listOf types.singleLineStr) [ ] "Principals accepted for certificate authentication.";
      };
      config = lib.mkMerge [
        {
          name = lib.mkDefault name;
          shell = lib.mkIf config.useDefaultShell (lib.mkDefault cfgUsers.defaultUserShell);
        }
        (lib.mkIf config.isNormalUser {
          group = lib.mkDefault "users";
          createHome = lib.mkDefault true;
          home = lib.mkDefault "${cfgUsers.defaultUserHome}/${config.name}";
          homeMode = lib.mkDefault "700";
          useDefaultShell = lib.mkDefault true;
          isSystemUser = lib.mkDefault false;
        })
      ];
    };

  groupModule =
    { name, config, ... }:
    {
      options = {
        name = mkOption {
          type = types.passwdEntry types.str;
          description = "The group's name (default: the attribute name).";
        };
        gid = option (types.nullOr types.int) null "The group's GID (null: allocated).";
        members = option (types.listOf (types.passwdEntry types.str)) [ ] "Members listed in /etc/group.";
      };
      config = {
        name = lib.mkDefault name;
        members = lib.mapAttrsToList (_: user: user.name) (
          lib.filterAttrs (_: user: user.enable && lib.elem config.name user.extraGroups) cfgUsers.users
        );
      };
    };

  # ---- nixos/modules/config/nix-remote-build.nix ----

  buildMachine = types.submodule {
    options = {
      hostName = mkOption {
        type = types.str;
        description = "Host name of the build machine.";
      };
      protocol = option (types.enum [
        null
        "ssh"
        "ssh-ng"
      ]) "ssh" "Protocol Nix talks to the build machine.";
      system = option (types.nullOr types.str) null "System type the machine builds for.";
      systems = strList "System types the machine builds for.";
      sshUser = option (types.nullOr types.str) null "User to log in as.";
      sshKey = option (types.nullOr types.str) null "Private key to log in with (not in the store).";
      maxJobs = option types.int 1 "Concurrent jobs the machine takes.";
      speedFactor = option types.numbers.positive 1 "Relative speed of the machine.";
      mandatoryFeatures = strList "Features a derivation must require to be built there.";
      supportedFeatures = strList "Features the machine supports.";
      publicHostKey = option (types.nullOr types.str) null "Base64 of the machine's public host key.";
    };
  };

  # ---- nixos/modules/config/nix.nix ----

  nixConfAtom =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        types.package
      ]
    )
    // {
      description = "Nix config atom (null, bool, int, float, str, path or package)";
    };
  nixSetting =
    type: description:
    mkOption {
      inherit type description;
    };

  # ---- nixos/modules/programs/git.nix ----

  gitIni = types.attrsOf (types.attrsOf types.anything);
  # Attribute-set definitions are merged into one section list entry; list
  # definitions keep their order after it.
  gitConfig = types.either gitIni (types.listOf gitIni) // {
    merge =
      loc: defs:
      [ (gitIni.merge loc (lib.filter (def: !lib.isList def.value) defs)) ]
      ++ lib.concatMap (def: def.value) (lib.filter (def: lib.isList def.value) defs);
  };

  # ---- nixos/modules/services/networking/firewall.nix ----

  sortedPorts = ports: lib.unique (lib.sort lib.lessThan ports);
  portOptions = {
    allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      apply = sortedPorts;
      description = "TCP ports open in the firewall.";
    };
    allowedTCPPortRanges = option (types.listOf (types.attrsOf types.port)) [ ] "TCP port ranges ({ from; to; }) open in the firewall.";
    allowedUDPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      apply = sortedPorts;
      description = "UDP ports open in the firewall.";
    };
    allowedUDPPortRanges = option (types.listOf (types.attrsOf types.port)) [ ] "UDP port ranges ({ from; to; }) open in the firewall.";
  };

  # ---- nixos/modules/system/etc/etc.nix ----

  etcModule =
    {
      name,
      config,
      options,
      ...
    }:
    {
      options = {
        enable = bool true "Whether the file is generated.";
        target = mkOption {
          type = types.str;
          description = "Path relative to /etc (default: the attribute name).";
        };
        text = option (types.nullOr types.lines) null "Text of the file.";
        source = mkOption {
          type = types.path;
          description = "Path of the source file.";
        };
        mode = option types.str "symlink" "`symlink`, `direct-symlink`, or the mode of a copy.";
        uid = option types.int 0 "UID of a copied file.";
        gid = option types.int 0 "GID of a copied file.";
        user = option types.str "+${toString config.uid}" "Owner of a copied file.";
        group = option types.str "+${toString config.gid}" "Group of a copied file.";
      };
      config = {
        target = lib.mkDefault name;
        source = lib.mkIf (config.text != null) (
          lib.mkDerivedConfig options.text (writeText ("etc-" + lib.replaceStrings [ "/" ] [ "-" ] name))
        );
      };
    };

  # ---- nixos/modules/programs/ssh.nix ----

  knownHostModule =
    { name, config, ... }:
    {
      options = {
        certAuthority = bool false "Whether the key is a certificate authority's.";
        hostNames = mkOption {
          type = types.listOf types.str;
          default = [ name ] ++ config.extraHostNames;
          defaultText = lib.literalExpression "[ name ] ++ config.extraHostNames";
          description = "Host names and addresses the key is for.";
        };
        extraHostNames = strList "Host names added to the attribute name (ignored when hostNames is set).";
        publicKey = option (types.nullOr types.str) null "The host's public key.";
        publicKeyFile = option (types.nullOr types.path) null "File with the host's public key.";
      };
    };

  # ---- nixos/modules/services/networking/ssh/sshd.nix ----

  sshdSettingValue = types.nullOr (
    types.oneOf [
      types.bool
      types.int
      types.str
      types.path
      (types.listOf types.str)
    ]
  );
  nullOrListOfStr = description: option (types.nullOr (types.listOf types.str)) null description;
  recommended = list: if config.services.openssh.enableRecommendedAlgorithms then list else null;

  net = config.networking;

  # Groups NixOS always defines (users-groups.nix); not declared here as
  # users.groups entries, only known to the primary-group assertion.
  nixosGroups = [
    "root"
    "wheel"
    "disk"
    "kmem"
    "tty"
    "floppy"
    "uucp"
    "lp"
    "cdrom"
    "tape"
    "audio"
    "video"
    "dialout"
    "nogroup"
    "users"
    "nixbld"
    "utmp"
    "adm"
    "input"
    "kvm"
    "render"
    "sgx"
    "shadow"
    "clock"
  ];
in
{
  options = {

    # ---- nixos/modules/misc/assertions.nix ----
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
      internal = true;
      description = "Conditions ({ assertion; message; }) that must hold.";
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
      internal = true;
      description = "Warnings shown when the system is built.";
    };

    # ---- nixos/modules/config/users-groups.nix ----
    users = {
      mutableUsers = bool true "Whether users and groups may also be changed imperatively.";
      enforceIdUniqueness = bool true "Whether two users or groups may not share an id.";
      manageLingering = bool true "Whether NixOS manages users' lingering.";
      allowNoPasswordLogin = bool false "Whether the check that someone can log in is skipped.";
      defaultUserHome = option types.str "/home" "Parent of normal users' home directories.";
      users = option (types.attrsOf (types.submodule userModule)) { } "User accounts.";
      groups = option (types.attrsOf (types.submodule groupModule)) { } "Groups.";
      # nixos/modules/config/shells-environment.nix
      defaultUserShell = mkOption {
        type = types.either types.path types.shellPackage;
        default = fake "bashInteractive";
        defaultText = lib.literalExpression "pkgs.bashInteractive";
        description = "The shell of users with useDefaultShell.";
      };
    };

    # ---- nixos/modules/system/boot/systemd.nix ----
    systemd.services = option (types.attrsOf (types.submodule serviceModule)) { } "System service units.";

    # ---- nixos/modules/system/boot/systemd/tmpfiles.nix ----
    systemd.tmpfiles = {
      rules = strList "tmpfiles.d(5) lines.";
      settings = option (types.attrsOf (
        types.attrsOf (types.attrsOf (types.submodule tmpfilesEntry))
      )) { } "tmpfiles.d rules as <file>.<path>.<type> = { mode; user; group; age; argument; }.";
      packages = mkOption {
        type = types.listOf types.package;
        default = [ ];
        apply = map lib.getLib;
        description = "Packages with lib/tmpfiles.d rules.";
      };
    };

    nix = {
      # ---- nixos/modules/services/system/nix-daemon.nix ----
      enable = bool true "Whether Nix (the daemon, nix.conf) is set up.";
      package = package "nix" "The Nix package used throughout the system.";
      daemonCPUSchedPolicy = option (types.enum [
        "other"
        "batch"
        "idle"
      ]) "other" "CPU scheduling policy of the daemon's builds.";
      daemonIOSchedClass = option (types.enum [
        "best-effort"
        "idle"
      ]) "best-effort" "IO scheduling class of the daemon's builds.";
      daemonIOSchedPriority = option types.int 4 "IO scheduling priority of the daemon's builds.";
      nrBuildUsers = mkOption {
        type = types.int;
        description = "Number of nixbld users.";
      };

      # ---- nixos/modules/config/nix.nix ----
      checkConfig = bool true "Whether the generated nix.conf is checked.";
      checkAllErrors = bool true "Whether any nix.conf error (not only unknown settings) fails the check.";
      extraOptions = option types.lines "" "Text appended to nix.conf.";
      settings = mkOption {
        default = { };
        description = "nix.conf settings (freeform; a few are typed).";
        type = types.submodule {
          freeformType = types.attrsOf (types.either nixConfAtom (types.listOf nixConfAtom));
          options = {
            max-jobs = option (types.either types.int (types.enum [ "auto" ])) "auto" "Builds run in parallel.";
            auto-optimise-store = bool false "Whether identical store files are hard-linked.";
            cores = option types.int 0 "Cores of one build (0: all).";
            sandbox = option (types.either types.bool (types.enum [ "relaxed" ])) true "Whether builds are sandboxed.";
            extra-sandbox-paths = option (types.listOf types.str) [ ] "Host paths added to the sandbox.";
            substituters = nixSetting (types.listOf types.str) "Binary caches.";
            trusted-substituters = option (types.listOf types.str) [ ] "Binary caches unprivileged users may use.";
            require-sigs = bool true "Whether substituted paths must be signed.";
            trusted-public-keys = nixSetting (types.listOf types.str) "Keys of trusted binary caches.";
            trusted-users = nixSetting (types.listOf types.str) "Users with additional rights on the daemon.";
            system-features = nixSetting (types.listOf types.str) "Features of this machine.";
            allowed-users = option (types.listOf types.str) [ "*" ] "Users that may connect to the daemon.";
          };
        };
      };

      # ---- nixos/modules/config/nix-remote-build.nix ----
      buildMachines = option (types.listOf buildMachine) [ ] "Machines for distributed builds.";
      distributedBuilds = bool false "Whether builds are sent to nix.buildMachines.";
    };

    # ---- nixos/modules/programs/ssh.nix ----
    programs.ssh = {
      enableAskPassword = bool false "Whether SSH_ASKPASS is set (NixOS: services.xserver.enable).";
      systemd-ssh-proxy.enable = bool true "Whether systemd's ssh proxy plugin is used.";
      askPassword = option types.str "${fake "x11_ssh_askpass"}/libexec/x11-ssh-askpass" "Program asking for passwords.";
      forwardX11 = option (types.nullOr types.bool) false "Whether outgoing connections request X11 forwarding.";
      setXAuthLocation = mkOption {
        type = types.bool;
        description = "Whether the path of xauth is set for X11 forwarding.";
      };
      pubkeyAcceptedKeyTypes = strList "Key types for public key authentication.";
      hostKeyAlgorithms = strList "Host key algorithms, in order of preference.";
      extraConfig = option types.lines "" "Text put at the top of ssh_config.";
      startAgent = bool false "Whether ssh-agent is started at login.";
      agentTimeout = option (types.nullOr types.str) null "How long the agent keeps keys.";
      agentPKCS11Whitelist = option (types.nullOr types.str) null "PKCS#11 libraries ssh-add may load.";
      package = package "openssh" "The OpenSSH package.";
      knownHosts = option (types.attrsOf (types.submodule knownHostModule)) { } "System-wide known SSH hosts.";
      knownHostsFiles = option (types.listOf types.path) [ ] "Extra files of known host keys.";
      kexAlgorithms = option (types.nullOr (types.listOf types.str)) null "Key exchange algorithms.";
      ciphers = option (types.nullOr (types.listOf types.str)) null "Ciphers, in order of preference.";
      macs = option (types.nullOr (types.listOf types.str)) null "MAC algorithms, in order of preference.";
    };

    # ---- nixos/modules/programs/git.nix ----
    programs.git = {
      enable = enable "git, a distributed version control system";
      package = package "git" "The git package.";
      config = option gitConfig [ ] "Contents of /etc/gitconfig (an attribute set, or a list of them in order).";
      prompt.enable = enable "sourcing git-prompt.sh";
      lfs = {
        enable = enable "git-lfs (Large File Storage)";
        package = package "git-lfs" "The git-lfs package.";
        enablePureSSHTransfer = enable "git-lfs' pure SSH transfer (git-lfs-transfer)";
      };
    };

    # ---- nixos/modules/services/networking/ssh/sshd.nix ----
    services.openssh = {
      enable = bool false "Whether the OpenSSH daemon runs.";
      package = mkOption {
        type = types.package;
        default = config.programs.ssh.package;
        defaultText = lib.literalExpression "programs.ssh.package";
        description = "OpenSSH package of sshd.";
      };
      allowSFTP = bool true "Whether the SFTP subsystem is enabled.";
      authorizedKeysCommand = option types.str "none" "Program looking up a user's public keys.";
      authorizedKeysCommandUser = option types.str "nobody" "User running authorizedKeysCommand.";
      authorizedKeysFiles = strList "Files authorized keys are read from.";
      authorizedKeysInHomedir = bool true "Whether ~/.ssh/authorized_keys is read.";
      enableRecommendedAlgorithms = bool true "Whether NixOS' curated algorithms are used.";
      extraConfig = option types.lines "" "Text appended to sshd_config.";
      generateHostKeys = mkOption {
        type = types.bool;
        default = config.services.openssh.enable;
        defaultText = lib.literalExpression "services.openssh.enable";
        description = "Whether host keys are generated.";
      };
      hostKeys = option (types.listOf types.attrs) [
        {
          type = "rsa";
          bits = 4096;
          path = "/etc/ssh/ssh_host_rsa_key";
        }
        {
          type = "ed25519";
          path = "/etc/ssh/ssh_host_ed25519_key";
        }
      ] "Host keys ({ type; path; bits?; ... }) generated and used.";
      listenAddresses = option (types.listOf (
        types.submodule {
          options.addr = option (types.nullOr types.str) null "Address to listen on.";
          options.port = option (types.nullOr types.port) null "Port to listen on.";
        }
      )) [ ] "Addresses (and ports) sshd listens on.";
      moduliFile = mkOption {
        type = types.path;
        description = "The moduli file installed as /etc/ssh/moduli.";
      };
      openFirewall = bool true "Whether the ports are opened in the firewall.";
      ports = option (types.listOf types.port) [ 22 ] "Ports sshd listens on.";
      settings = mkOption {
        default = { };
        description = "sshd_config settings (freeform; a few are typed).";
        type = types.submodule {
          freeformType = types.attrsOf sshdSettingValue;
          options = {
            AcceptEnv = nullOrListOfStr "Environment variables accepted from the client.";
            AllowGroups = nullOrListOfStr "Only members of these groups may log in.";
            AllowUsers = nullOrListOfStr "Only these users may log in.";
            AuthorizedPrincipalsFile = option (types.nullOr types.str) "none" "File of accepted certificate principals.";
            Banner = option (types.nullOr types.path) null "File sent before authentication.";
            Ciphers = mkOption {
              type = types.nullOr (types.listOf types.str);
              default = recommended [
                "chacha20-poly1305@openssh.com"
                "aes256-gcm@openssh.com"
                "aes128-gcm@openssh.com"
                "aes256-ctr"
                "aes192-ctr"
                "aes128-ctr"
              ];
              description = "Allowed ciphers.";
            };
            DenyGroups = nullOrListOfStr "Members of these groups may not log in.";
            DenyUsers = nullOrListOfStr "These users may not log in.";
            GatewayPorts = option (types.nullOr types.str) "no" "Whether remote hosts may connect to forwarded ports.";
            KbdInteractiveAuthentication = option (types.nullOr types.bool) true "Whether keyboard-interactive authentication is allowed.";
            KexAlgorithms = mkOption {
              type = types.nullOr (types.listOf types.str);
              default = recommended [
                "mlkem768x25519-sha256"
                "sntrup761x25519-sha512"
                "sntrup761x25519-sha512@openssh.com"
                "curve25519-sha256"
                "curve25519-sha256@libssh.org"
                "diffie-hellman-group-exchange-sha256"
              ];
              description = "Allowed key exchange algorithms.";
            };
            LogLevel = option (types.nullOr (
              types.enum [
                "QUIET"
                "FATAL"
                "ERROR"
                "INFO"
                "VERBOSE"
                "DEBUG"
                "DEBUG1"
                "DEBUG2"
                "DEBUG3"
              ]
            )) "INFO" "sshd's log level.";
            Macs = mkOption {
              type = types.nullOr (types.listOf types.str);
              default = recommended [
                "hmac-sha2-512-etm@openssh.com"
                "hmac-sha2-256-etm@openssh.com"
                "umac-128-etm@openssh.com"
              ];
              description = "Allowed MACs.";
            };
            PasswordAuthentication = option (types.nullOr types.bool) true "Whether password authentication is allowed.";
            PermitRootLogin = option (types.nullOr (
              types.enum [
                "yes"
                "without-password"
                "prohibit-password"
                "forced-commands-only"
                "no"
              ]
            )) "prohibit-password" "Whether and how root may log in.";
            PrintMotd = option (types.nullOr types.bool) false "Whether /etc/motd is printed at login.";
            StrictModes = option (types.nullOr types.bool) true "Whether modes and owners of files are checked.";
            UseDns = option (types.nullOr types.bool) false "Whether client host names are looked up.";
            UsePAM = option (types.nullOr types.bool) true "Whether PAM authentication is used.";
            X11Forwarding = option (types.nullOr types.bool) false "Whether X11 forwarding is allowed.";
          };
        };
      };
      sftpFlags = strList "Command-line flags of sftp-server.";
      sftpServerExecutable = mkOption {
        type = types.str;
        description = "The sftp server executable, or internal-sftp.";
      };
      startWhenNeeded = bool false "Whether sshd is socket-activated.";
    };

    # ---- nixos/modules/services/networking/firewall.nix ----
    networking.firewall = portOptions // {
      enable = bool true "Whether the firewall is enabled.";
      package = package "iptables" "The iptables or nftables package of the firewall.";
      logRefusedConnections = bool true "Whether refused connections are logged.";
      logRefusedPackets = bool false "Whether all refused packets are logged.";
      logRefusedUnicastsOnly = bool true "Whether only refused unicast packets are logged.";
      logReversePathDrops = bool false "Whether packets dropped by the reverse path filter are logged.";
      filterForward = bool false "Whether forwarded packets are filtered.";
      connectionTrackingModules = strList "Connection tracking helper modules loaded.";
      autoLoadConntrackHelpers = bool false "Whether conntrack helpers are loaded automatically.";
      trustedInterfaces = strList "Interfaces whose traffic is always accepted.";
      allowPing = bool true "Whether ICMP echo requests are answered.";
      pingLimit = option (types.nullOr (types.separatedString " ")) null "Rate limit of ping replies.";
      rejectPackets = bool false "Whether refused packets are rejected rather than dropped.";
      checkReversePath = option (types.either types.bool (
        types.enum [
          "strict"
          "loose"
        ]
      )) true "Reverse path filtering.";
      extraPackages = option (types.listOf types.package) [ ] "Packages available to the firewall's scripts.";
      interfaces = option (types.attrsOf (types.submodule { options = portOptions; })) { } "Ports open on one interface.";
      # nixos/modules/services/networking/firewall-iptables.nix
      extraCommands = option types.lines "" "Extra iptables commands.";
      extraStopCommands = option types.lines "" "Extra iptables commands run when the firewall stops.";
      # nixos/modules/services/networking/firewall-nftables.nix
      extraInputRules = option types.lines "" "Extra nftables input rules.";
      extraForwardRules = option types.lines "" "Extra nftables forward rules.";
      extraReversePathFilterRules = option types.lines "" "Extra nftables reverse path rules.";
    };

    # ---- nixos/modules/tasks/network-interfaces.nix ----
    networking.hostName = option (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos" "The machine's host name (no domain).";
    networking.domain = option (types.nullOr types.str) null "The machine's domain.";
    networking.fqdn = mkOption {
      type = types.str;
      default =
        if net.hostName != "" && net.domain != null then
          "${net.hostName}.${net.domain}"
        else
          throw "networking.fqdn is used, but networking.hostName and networking.domain do not determine it; set them or networking.fqdn";
      defaultText = lib.literalExpression ''"''${networking.hostName}.''${networking.domain}"'';
      description = "The fully qualified domain name.";
    };
    networking.fqdnOrHostName = mkOption {
      type = types.str;
      readOnly = true;
      default =
        if net.domain != null || options.networking.fqdn.highestPrio < (lib.mkOptionDefault { }).priority then
          net.fqdn
        else
          net.hostName;
      defaultText = lib.literalExpression "if domain or fqdn is set then networking.fqdn else networking.hostName";
      description = "networking.fqdn when a domain (or fqdn) is set, else networking.hostName.";
    };

    # ---- nixos/modules/system/etc/etc.nix ----
    environment.etc = option (types.attrsOf (types.submodule etcModule)) { } "Files linked or copied into /etc.";

    # ---- nixos/modules/config/system-path.nix ----
    environment.systemPackages = option (types.listOf types.package) [ ] "Packages in the system profile.";
    environment.defaultPackages = option (types.listOf types.package) [ ] "Packages installed unless removed.";
    environment.corePackages = option (types.listOf types.package) [ ] "Packages every system has.";
    environment.pathsToLink = strList "Directories linked into the system profile.";
    environment.extraOutputsToInstall = strList "Outputs installed besides the default ones.";
    environment.extraSetup = option types.lines "" "Shell commands run when the system profile is built.";
  };

  # What NixOS itself defines for these options.
  config = lib.mkMerge [
    # nix-daemon.nix, nix.nix and nix-remote-build.nix
    (lib.mkIf config.nix.enable {
      nix.nrBuildUsers = lib.mkDefault (
        if config.nix.settings.auto-allocate-uids or false then
          0
        else
          lib.max 32 (if config.nix.settings.max-jobs == "auto" then 0 else config.nix.settings.max-jobs)
      );
      nix.settings = {
        trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
        trusted-users = [ "root" ];
        substituters = lib.mkAfter [ "https://cache.nixos.org/" ];
        system-features = lib.mkDefault [
          "nixos-test"
          "benchmark"
          "big-parallel"
          "kvm"
        ];
        builders = lib.mkIf (!config.nix.distributedBuilds) null;
      };
      assertions = [
        {
          assertion = lib.all (m: m.system != null || m.systems != [ ]) config.nix.buildMachines;
          message = "nix.buildMachines: every machine needs `system` or `systems`";
        }
      ];
    })
    # ssh.nix
    {
      programs.ssh.setXAuthLocation = lib.mkDefault (
        config.programs.ssh.forwardX11 == true || config.services.openssh.settings.X11Forwarding == true
      );
      assertions = lib.mapAttrsToList (name: host: {
        assertion = (host.publicKey == null) != (host.publicKeyFile == null);
        message = "knownHost ${name} must contain either a publicKey or publicKeyFile";
      }) config.programs.ssh.knownHosts;
    }
    # sshd.nix
    (lib.mkIf config.services.openssh.enable {
      services.openssh.moduliFile = lib.mkDefault "${config.services.openssh.package}/etc/ssh/moduli";
      services.openssh.sftpServerExecutable = lib.mkDefault "${config.services.openssh.package}/libexec/sftp-server";
      networking.firewall.allowedTCPPorts = lib.optionals config.services.openssh.openFirewall config.services.openssh.ports;
    })
    # users-groups.nix
    {
      assertions = lib.concatLists (
        lib.mapAttrsToList (_: user: [
          {
            assertion = lib.xor (user.isSystemUser || (user.uid != null && user.uid < 1000)) user.isNormalUser;
            message = "Exactly one of users.users.${user.name}.isSystemUser and users.users.${user.name}.isNormalUser must be set.";
          }
          {
            assertion = user.group != "";
            message = "users.users.${user.name}.group is unset.";
          }
          {
            assertion =
              user.group == ""
              || lib.elem user.group (nixosGroups ++ lib.mapAttrsToList (_: group: group.name) cfgUsers.groups);
            message = "users.users.${user.name}.group = \"${user.group}\" is not a group in users.groups.";
          }
        ]) (lib.filterAttrs (_: user: user.enable) cfgUsers.users)
      );
    }
  ];
}
