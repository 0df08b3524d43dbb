{
  description = "procurator-ci: a Nix-native CI daemon that runs `nix flake check` for every git push";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      forAllSystems =
        f:
        lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: f nixpkgs.legacyPackages.${system});

      # Every nixos-tests/*.nix is a VM test (pkgs.testers.runNixOSTest);
      # shared pieces live in nixos-tests/lib/, which is not scanned.
      vmTests =
        pkgs:
        let
          files = lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (
            builtins.readDir ./nixos-tests
          );
        in
        lib.mapAttrs' (
          file: _:
          lib.nameValuePair (lib.removeSuffix ".nix" file) (
            pkgs.testers.runNixOSTest {
              imports = [ (./nixos-tests + "/${file}") ];
              defaults.imports = [ self.nixosModules.default ];
            }
          )
        ) files;
    in
    {
      packages = forAllSystems (pkgs: rec {
        procurator-ci = pkgs.callPackage ./nix/package.nix { };
        default = procurator-ci;
      });

      overlays.default = final: _prev: {
        procurator-ci = final.callPackage ./nix/package.nix { };
      };

      # The module, with the package built by the system's own nixpkgs, which
      # needs rustc 1.91 or newer (nixos-25.11 has it; an older one fails
      # evaluation with an assertion saying so). See nix/default-module.nix.
      nixosModules.default = ./nix/default-module.nix;

      checks = forAllSystems (
        pkgs: { package = self.packages.${pkgs.stdenv.hostPlatform.system}.procurator-ci; } // vmTests pkgs
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            sqlite
            nix
            git
          ];
        };
      });

      # nixfmt is the RFC-style formatter (nixfmt-rfc-style is its old name).
      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
