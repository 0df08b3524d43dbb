# The options of nixpkgs' test framework (nixos/lib/testing/*.nix) that our
# VM tests use, typed: a test setting any other option fails offline, so
# extend the list when a test needs one. Shared by test-scripts.nix (the
# scripts) and eval-module.nix (the nodes).
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    name = mkOption { type = types.str; };
    nodes = mkOption {
      type = types.attrsOf types.deferredModule;
      default = { };
    };
    defaults = mkOption {
      type = types.deferredModule;
      default = { };
    };
    testScript = mkOption { type = types.either types.str (types.functionTo types.str); };
    meta = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    skipLint = mkOption {
      type = types.bool;
      default = false;
    };
    skipTypeCheck = mkOption {
      type = types.bool;
      default = false;
    };
    globalTimeout = mkOption {
      type = types.int;
      default = 60 * 60;
    };
    enableOCR = mkOption {
      type = types.bool;
      default = false;
    };
  };
}
