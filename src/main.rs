//! The `procurator-ci` executable; everything lives in the library.

fn main() -> std::process::ExitCode {
    procurator_ci::cli::main()
}
