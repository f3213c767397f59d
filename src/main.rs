//! The `wsfault` binary: a thin shell over [`wsfault::cli::main`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    wsfault::cli::main()
}
