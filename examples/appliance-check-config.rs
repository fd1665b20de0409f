//! Temporary stand-in for `nordlys check-config PATH` until the CLI is wired to
//! `nordlys::appliance::config::check_config` (scripts/ci-appliance uses it when the
//! `nordlys` binary does not have the subcommand yet).
fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: appliance-check-config PATH");
        return std::process::ExitCode::from(2);
    };
    let (ok, report) = nordlys::appliance::config::check_config(std::path::Path::new(&path));
    print!("{report}");
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
