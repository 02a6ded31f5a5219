//! The `coinpilot` binary: parse arguments, run, map errors to exit codes.

fn main() -> std::process::ExitCode {
    coinpilot::cli::main()
}
