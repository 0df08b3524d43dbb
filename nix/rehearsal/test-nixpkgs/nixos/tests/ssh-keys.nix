# Stand-in for nixpkgs' nixos/tests/ssh-keys.nix, for scripts/check-vm-scripts
# only: the same attribute names (private keys are files made with
# pkgs.writeText, public keys are strings), with fake values that are no keys.
pkgs: {
  snakeOilPrivateKey = pkgs.writeText "privkey.snakeoil" "FAKE ECDSA PRIVATE KEY (rehearsal)\n";
  snakeOilPublicKey = "ecdsa-sha2-nistp256 AAAAFAKEECDSAPUBLICKEYFORREHEARSAL snakeoil";
  snakeOilEd25519PrivateKey = pkgs.writeText "privkey.snakeoil" "FAKE ED25519 PRIVATE KEY (rehearsal)\n";
  snakeOilEd25519PublicKey = "ssh-ed25519 AAAAFAKEED25519PUBLICKEYFORREHEARSAL snakeoil";
}
