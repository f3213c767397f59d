//! The `wsfault` binary: a thin shell over [`wsfault::cmd::main`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    wsfault::cmd::main()
}
